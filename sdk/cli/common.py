"""What every gacflow CLI shares: one-line errors, exit codes, torch thread settings."""

from __future__ import annotations

import sys
from collections.abc import Callable

from ..errors import GacflowError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def run_guarded(prog: str, fn: Callable[[], int]) -> int:
    """Run a command; user errors become one stderr line and exit code 2, never a traceback."""
    try:
        return fn()
    except GacflowError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0
    except OSError as exc:  # disk full, permissions, ... on the user's side of the fence
        print(f"{prog}: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return EXIT_USER_ERROR
