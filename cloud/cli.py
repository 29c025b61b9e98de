"""`gacflow-cloud`: the receiver service, and `gacflow-cloud redecode` for archived streams.

    gacflow-cloud --broker mqtt://HOST:PORT --out DIR [--partition I/N] [--metrics-port 9108]
    gacflow-cloud redecode --archive DB --out DIR [--bundle B --decoder NAME]
    gacflow-cloud provision DEVICE | revoke DEVICE | list   (the fleet: cloud/provision.py)
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import signal
import socket
import sys
import threading
from pathlib import Path

from gacflow.cli.common import run_guarded
from gacflow.errors import ConfigError
from gacflow.extras import require

from . import config
from .config import CloudConfig
from .partition import Partition

PROG = "gacflow-cloud"
log = logging.getLogger("gacflow.cloud")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=PROG,
        description="Receive gacflow token streams over MQTT and decode them to WAV. "
                    "Every option can also be set as GACFLOW_CLOUD_<NAME> or in --config TOML.",
    )
    config.add_arguments(ap)
    return ap


def build_redecode_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=f"{PROG} redecode",
                                 description="Decode archived streams again (e.g. larger decoder).")
    ap.add_argument("--archive", required=True, help="token archive (SQLite) of a receiver")
    ap.add_argument("--out", required=True, help="output folder: OUT/<device>/<session>.wav")
    ap.add_argument("--bundle", default=None, help="model bundle folder (default: shipped)")
    ap.add_argument("--decoder", default=None, help="decoder size in the bundle")
    ap.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda")
    ap.add_argument("--device-filter", default=None, help="only this device's sessions")
    return ap


def setup_logging(level: str) -> None:
    lv = getattr(logging, level.upper(), None)
    if not isinstance(lv, int):
        raise ConfigError(f"log_level must be debug, info, warning or error, got {level!r}")
    logging.basicConfig(level=lv, format="%(asctime)s %(name)s %(levelname)s: %(message)s",
                        stream=sys.stderr)


def torch_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    return name


def load_codec(bundle: str | None, decoder: str | None, device: str, threads: int = 0):
    import torch

    from gacflow.model import Codec

    if threads:
        torch.set_num_threads(threads)
    return Codec.from_bundle(bundle, decoder=decoder, device=torch_device(device))


def default_client_id(out: str, group: str | None = None,
                      partition: Partition | None = None) -> str:
    """Stable across restarts (the persistent session hangs on it), distinct per out folder,
    group and partition (two workers sharing a client id would take over each other)."""
    tag = hashlib.sha1(str(Path(out).resolve()).encode()).hexdigest()[:8]
    host = "".join(c for c in socket.gethostname() if c.isalnum() or c in "-_")[:32]
    part = f"p{partition.index}of{partition.count}-" if partition else ""
    return f"gacflow-cloud-{host}-{group + '-' if group else ''}{part}{tag}"


def serve(cfg: CloudConfig) -> int:
    setup_logging(cfg.log_level)
    url = config.preflight(cfg)  # user errors before the slow imports and any file written
    partition = cfg.partition_spec
    require("torch", "cloud", "the receiver (torch decoder)")
    require("paho.mqtt", "cloud", "the receiver (MQTT)")

    from .console import serve_with_console
    from .metrics import Metrics
    from .quota import QuotaPolicy
    from .receiver import Receiver
    from .streams import StreamPolicy
    from .subscriber import Subscriber

    codec = load_codec(cfg.bundle, cfg.decoder, cfg.device, cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = Metrics()
    policy = StreamPolicy(reorder_timeout=cfg.reorder_timeout, idle_timeout=cfg.idle_timeout)
    quota = QuotaPolicy(cfg.max_packet_bytes, cfg.quota_packets_per_s, cfg.quota_burst,
                        cfg.max_sessions_per_device)
    rx = Receiver(codec, out, cfg.archive or out / "archive.sqlite", policy, metrics,
                  partition=partition, quota=quota)
    rx.recover()
    server = None
    if cfg.metrics_port is not None:
        try:
            server = serve_with_console(rx, cfg.metrics_port, cfg.metrics_host, cfg.bundle,
                                        cfg.decoder)
        except OSError as exc:  # taken since preflight
            raise ConfigError(config.port_error(cfg.metrics_host, cfg.metrics_port, exc)) from exc
        log.info("metrics on http://%s:%d/metrics, console on /console", cfg.metrics_host,
                 server.server_address[1])
    client_id = cfg.client_id or default_client_id(cfg.out, cfg.group, partition)
    sub = Subscriber(url, client_id, group=cfg.group, username=cfg.username,
                     password=cfg.password, ca_file=cfg.ca_file, cert_file=cfg.cert_file,
                     key_file=cfg.key_file, mqtt_version=cfg.mqtt_version,
                     session_expiry=cfg.session_expiry)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("codec %s on %s; writing to %s%s", codec.codec_id, codec.device, out,
             f"; partition {partition} (client id {client_id})" if partition else "")
    if not url.tls:  # loopback is allowed (and said); elsewhere only by allow_plaintext
        loop = config.is_loopback(url.host)
        log.log(logging.INFO if loop else logging.WARNING, "plaintext MQTT (no TLS) to %s:%d%s",
                url.host, url.port, ": loopback only, nothing leaves this host; devices must "
                "use mqtts://" if loop else ", allowed by allow_plaintext")
    sub.start()
    try:
        rx.run(sub, stop)
    finally:
        sub.stop()
        rx.close()
        if server:
            server.shutdown()
    return 0


def redecode(argv: list[str]) -> int:
    """Replay every archived session through the stream assembler and decode it whole."""
    import time

    args = build_redecode_parser().parse_args(argv)
    if not Path(args.archive).is_file():
        raise ConfigError(f"archive {args.archive} not found")

    require("torch", "cloud", "redecode (torch decoder)")
    from gacflow.bitstream import decode_packet
    from gacflow.errors import BitstreamError

    from .decoder_service import DecoderService
    from .sinks import Archive, WavSink
    from .streams import StreamTable

    setup_logging("info")
    codec = load_codec(args.bundle, args.decoder, args.device)
    archive = Archive(args.archive)
    sessions = archive.sessions()
    table = StreamTable(codec.layout, voice=codec.voice)
    svc = DecoderService(codec)
    wavs = WavSink(args.out)
    done = 0
    try:
        from tqdm import tqdm
    except ImportError:  # progress bar is a nicety
        def tqdm(x, **_):
            return x
    for device, name, _sid, codec_id, started in tqdm(sessions, desc="redecode", unit="session"):
        if args.device_filter and device != args.device_filter:
            continue
        if codec_id and codec_id != codec.codec_id:
            log.warning("%s/%s: codec %s, this bundle is %s; skipped", device, name, codec_id,
                        codec.codec_id)
            continue
        s = None
        for arrival, payload in archive.packets(device, name):
            try:
                p = decode_packet(payload, codec.entropy)
                s = table.session_for(device, p, started, name=name)
                s.place(p, arrival)
            except BitstreamError:
                continue
        if s is None:
            continue
        s.finish(time.time())
        for j in svc.run(svc.plan(s, final=True)):
            wavs.write(s, j.audio)
        path = wavs.close(s)
        del table.sessions[(device, s.stream_id)]
        done += 1
        print(f"{path}: {s.frames / 25:.1f} s, {s.gaps} gaps")
    archive.close()
    print(f"{done} session(s) decoded with codec {codec.codec_id} on {codec.device}; "
          f"real-time factor {svc.stats.rtf:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["redecode"]:
        return run_guarded(f"{PROG} redecode", lambda: redecode(argv[1:]))
    if argv[:1] and argv[0] in ("provision", "revoke", "list"):
        from . import provision

        return run_guarded(f"{PROG} {argv[0]}", lambda: provision.main(argv[0], argv[1:]))
    args = build_parser().parse_args(argv)
    return run_guarded(PROG, lambda: serve(config.resolve(args)))


if __name__ == "__main__":
    sys.exit(main())
