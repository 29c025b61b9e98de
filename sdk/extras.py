"""Optional dependencies: is an extra installed, and the one-line error when it is not.

An edge install (`gacflow[edge]`) has no torch; every CLI checks here before the heavy
import, so a missing extra reads as one stderr line naming what to install, never as a
`ModuleNotFoundError` traceback.
"""

from __future__ import annotations

import importlib.util

from .errors import GacflowError


class MissingExtraError(GacflowError):
    """A command needs an optional dependency this install lacks."""


def installed(module: str) -> bool:
    """True when `module` is importable, judged without importing it (cheap for torch)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package, or a blocked import
        return False


def require(module: str, extra: str, what: str, hint: str = "") -> None:
    """Raise `MissingExtraError` unless `module` is installed; `what` names the command."""
    if installed(module):
        return
    root = module.split(".")[0]
    alt = f"; {hint}" if hint else ""
    raise MissingExtraError(f"{what} needs {root}: pip install 'gacflow[{extra}]' "
                            f"(from a checkout: pip install '.[{extra}]'){alt}")
