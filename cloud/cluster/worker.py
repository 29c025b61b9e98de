"""A fleet worker: the receiver (`Receiver`) fed from RabbitMQ partitions.

    python -m gacflow.cloud.cluster worker --amqp URL[,URL...] --out DIR [--worker-id ID]

Same receiver as `gacflow-cloud` (stream assembly, dedup, decoding, WAVs, archive,
/metrics, the console); only the intake differs (`AmqpSubscriber`). `--no-decode`
archives and acknowledges without decoding (an ingest-only worker: decode later with
`gacflow-cloud redecode`, or measure the intake alone).
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

from gacflow.errors import ConfigError

from . import topology

log = logging.getLogger("gacflow.cloud.cluster")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--amqp", required=True,
                    help="comma-separated AMQP URLs of the broker nodes "
                         "(amqp://user:pass@host:port/%%2F)")
    ap.add_argument("--out", required=True, help="this worker's output folder")
    ap.add_argument("--worker-id", default=None, help="unique per live worker "
                    "(default: host-pid)")
    ap.add_argument("--partitions", type=int, default=topology.DEFAULT_PARTITIONS,
                    help="partition queues (the same for every worker; >= the most workers)")
    ap.add_argument("--prefetch", type=int, default=2000, help="unacknowledged messages "
                    "in flight to this worker")
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--decoder", default=None, help="decoder size in the bundle")
    ap.add_argument("--device", default="auto", help="torch device")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--decode", action=argparse.BooleanOptionalAction, default=True,
                    help="decode to WAV (default); --no-decode only archives")
    ap.add_argument("--metrics-port", type=int, default=None,
                    help="serve /metrics, /health and the console on this port")
    ap.add_argument("--metrics-host", default="127.0.0.1")
    ap.add_argument("--idle-timeout", type=float, default=30.0)
    ap.add_argument("--reorder-timeout", type=float, default=1.0)
    ap.add_argument("--log-level", default="info")


class NoDecode:
    """A decoder service that plans nothing: sessions are archived, never decoded."""

    def __init__(self, codec) -> None:
        from gacflow.cloud.decoder_service import DecodeStats

        self.codec = codec
        self.stats = DecodeStats()

    def plan(self, s, final: bool = False) -> list:
        return []

    def run(self, jobs: list) -> list:
        return jobs


def run_worker(args: argparse.Namespace) -> int:
    from gacflow.cloud.cli import load_codec, setup_logging
    from gacflow.cloud.config import check_port
    from gacflow.cloud.metrics import Metrics
    from gacflow.cloud.receiver import Receiver
    from gacflow.cloud.streams import StreamPolicy

    from .amqp_subscriber import AmqpSubscriber

    setup_logging(args.log_level)
    urls = [u.strip() for u in args.amqp.split(",") if u.strip()]
    if not urls or any(not u.startswith(("amqp://", "amqps://")) for u in urls):
        raise ConfigError(f"--amqp: expected amqp://HOST:PORT URLs, got {args.amqp!r}")
    if not 1 <= args.partitions <= topology.MAX_PARTITIONS:
        raise ConfigError(f"--partitions must be 1..{topology.MAX_PARTITIONS}")
    if args.metrics_port is not None:
        check_port(args.metrics_host, args.metrics_port)
    worker_id = args.worker_id or f"{socket.gethostname()}-{os.getpid()}"
    codec = load_codec(args.bundle, args.decoder, args.device, args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = Metrics()
    policy = StreamPolicy(reorder_timeout=args.reorder_timeout, idle_timeout=args.idle_timeout)
    rx = Receiver(codec, out, out / "archive.sqlite", policy, metrics,
                  decoder=None if args.decode else NoDecode(codec))
    rx.recover()
    sub = AmqpSubscriber(urls, worker_id, args.partitions, args.prefetch)
    server = None
    if args.metrics_port is not None:
        from gacflow.cloud.console import serve_with_console

        server = serve_with_console(rx, args.metrics_port, args.metrics_host, args.bundle,
                                    args.decoder)
        log.info("metrics and console on http://%s:%d/", args.metrics_host,
                 server.server_address[1])
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("worker %s: codec %s on %s, %d partitions, writing to %s", worker_id,
             codec.codec_id, codec.device, args.partitions, out)
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 <pid>: every thread's stack to the log
    sub.start()
    last = time.monotonic()
    try:
        while not stop.is_set():
            rx.step(sub)
            metrics.set("partitions_owned", len(sub.owned))
            if time.monotonic() - last >= 30:
                last = time.monotonic()
                log.info("worker %s: %d delivered (%d redelivered), inbox %d, %d partitions",
                         worker_id, sub.counts["delivered"], sub.counts["redelivered"],
                         sub.inbox.qsize(), len(sub.owned))
    finally:
        sub.stop()
        rx.close()
        if server:
            server.shutdown()
    return 0
