"""Data-only Debian packages, fetched with `apt-get download` and unpacked into a cache.

Nothing is installed system-wide and no dependencies are pulled: these packages only
carry audio (game voices, stamp descriptions).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from gacflow.errors import ConfigError


def unpacked(package: str, cache: Path) -> Path:
    """Folder holding the package's files (downloaded and unpacked once)."""
    root = Path(cache) / package
    if (root / ".unpacked").is_file():
        return root
    debs = Path(cache) / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        if not shutil.which("apt-get"):
            raise ConfigError(f"{package}: put its .deb in {debs} (no apt-get here)")
        run = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True,
                             text=True)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if run.returncode != 0 or not found:
            why = (run.stderr.strip().splitlines() or ["no .deb"])[-1]
            raise ConfigError(f"apt-get download {package} failed: {why}")
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(root)], check=True)
    (root / ".unpacked").touch()
    return root
