"""Command-line front ends: thin layers over the public API."""
