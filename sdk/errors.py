"""One exception family for everything that reads outside data.

CLIs and long-running services catch `GacflowError` and print its message as a
single line; anything else escaping is a bug, not a user error.
"""

from __future__ import annotations


class GacflowError(Exception):
    """Base class: bad input or configuration, with a message fit for one stderr line."""


class AudioError(GacflowError):
    """An audio file could not be read, or holds no usable audio."""


class BitstreamError(GacflowError):
    """A packet or .gac container is malformed, truncated or of an unknown version."""


class BundleError(GacflowError):
    """A model bundle is missing, incomplete, tampered with or of another codec."""


class CodecMismatchError(BundleError):
    """Tokens were produced by a codec this side does not hold."""


class ConfigError(GacflowError):
    """A configuration value (flag, file, environment variable) is invalid."""
