"""Atomic file writes: a reader or a power cut never sees half a file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import GacflowError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it over `path` once the block succeeds.

    Any failure to write becomes one GacflowError naming the user's path.
    """
    target = Path(path)
    tmp = target.with_name(f".{target.name}.part")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, target)
    except GacflowError:
        raise
    except Exception as exc:  # OSError, libsndfile errors, ...
        reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
        raise GacflowError(f"cannot write {target}: {reason}") from exc
    finally:
        if tmp.exists():
            tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def set_aside(path: str | os.PathLike) -> Path:
    """Rename a corrupt file found at start (and an SQLite WAL/SHM beside it) to
    `<name>.corrupt-<UTC time>`, so the service starts fresh and the file is kept for
    inspection instead of being fatal or overwritten. Returns the new name."""
    import time

    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    for suffix in ("", "-wal", "-shm"):
        src = path.with_name(path.name + suffix)
        if src.exists():
            os.replace(src, aside.with_name(aside.name + suffix))
    return aside
