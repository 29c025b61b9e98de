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
