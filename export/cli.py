"""`gacflow-export`: placeholder until its issue lands."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gacflow-export", description="gacflow export (not yet available)")
    ap.parse_args(argv)
    print("gacflow-export: not yet available in this version", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
