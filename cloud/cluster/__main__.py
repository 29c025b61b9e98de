"""`python -m gacflow.cloud.cluster up|worker`: a local fleet deployment, or one worker.

    python -m gacflow.cloud.cluster up --workers 2 --out fleet-out [--nodes 3]
    python -m gacflow.cloud.cluster worker --amqp URL[,URL...] --out DIR
"""

from __future__ import annotations

import argparse
import sys

from gacflow.cli.common import run_guarded

from .worker import add_arguments, run_worker

PROG = "python -m gacflow.cloud.cluster"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker", help="one receiver worker consuming its partitions")
    add_arguments(w)
    up = sub.add_parser("up", help="a broker cluster on loopback ports plus N workers, "
                                   "until Ctrl-C")
    up.add_argument("--nodes", type=int, default=3, help="broker nodes (default 3)")
    up.add_argument("--workers", type=int, default=2, help="receiver workers (default 2)")
    up.add_argument("--out", default="fleet-out", help="OUT/worker-<i>/ per worker")
    up.add_argument("--mqtt-port", type=int, default=1883,
                    help="the devices' MQTT address (a balancer over the nodes; 0: free)")
    up.add_argument("--metrics-port", type=int, default=None,
                    help="worker i serves metrics and the console on this port + i")
    up.add_argument("--no-decode", action="store_true", help="workers only archive")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.cmd == "worker":
        return run_guarded(f"{PROG} worker", lambda: run_worker(args))
    from .local import run_up

    return run_guarded(f"{PROG} up", lambda: run_up(args))


if __name__ == "__main__":
    sys.exit(main())
