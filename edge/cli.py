"""`gacflow-edge`: stream speech tokens from a microphone, a pipe or a file to an MQTT broker.

    gacflow-edge --broker mqtt://broker.local --device-id kitchen --input mic
    arecord -q -f S16_LE -r 16000 -c 1 -t raw | gacflow-edge --input - --broker ...
    gacflow-edge --input talk.wav --realtime --broker mqtts://host --ca-file ca.pem

Exit codes: 0 every packet delivered (or stopped by SIGTERM/SIGINT), 2 a user or
configuration error, 3 the broker did not take every packet within --drain-timeout
(they stay queued on disk for the next run). Errors print one line on stderr; logs go
to stdout.
"""

from __future__ import annotations

import argparse
import sys

from gacflow import __version__
from gacflow.errors import GacflowError

from . import config

EXIT_USER_ERROR = 2
EXIT_NOT_DELIVERED = 3


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one stderr line, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: {message} (see --help)\n")


def parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="gacflow-edge",
        description="gacflow edge agent: audio -> INT8 encoder -> tokens -> MQTT. Every "
        "setting is also read from a TOML file (--config) and from GACFLOW_EDGE_<NAME> "
        "environment variables; flags win over the environment, which wins over the file.",
    )
    ap.add_argument("--config", metavar="TOML", help="settings file (keys: the flag names)")
    ap.add_argument("--list-devices", action="store_true", help="list microphones and exit")
    ap.add_argument("--version", action="version", version=f"gacflow-edge {__version__}")
    config.add_arguments(ap)
    return ap


def _list_devices() -> int:
    from .sources import list_devices

    devices = list_devices()
    if not devices:
        print("no capture devices found")
    for index, name, channels, rate in devices:
        print(f"{index}\t{name}\t(inputs: {channels}, default rate: {rate} Hz)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.list_devices:
            return _list_devices()
        cfg = config.build(args, config_path=args.config)
        from .agent import DeliveryTimeout, EdgeAgent
        from .observe import setup_logging

        setup_logging(cfg.log_format, cfg.log_level)
        agent = EdgeAgent(cfg)
        try:
            return agent.run()
        except DeliveryTimeout as exc:
            print(f"gacflow-edge: {exc}", file=sys.stderr)
            return EXIT_NOT_DELIVERED
    except GacflowError as exc:
        print(f"gacflow-edge: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
