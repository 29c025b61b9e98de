"""`gacflow demo`: broker + receiver + edge agent on one machine, speech in, speech out.

Starts a local mosquitto, else an embedded MQTT 3.1.1 broker (or uses --broker), runs the receiver
in this process and the edge agent (`python -m gacflow.edge.cli`, the real INT8 agent)
as a subprocess fed with a speech file, and reports what went over the wire and how
intelligible the result is. If the edge agent cannot run here (e.g. no INT8 encoder in
the bundle), the demo says so and publishes with the torch reference encoder instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import gacflow
from gacflow import topics
from gacflow.audio import read_audio
from gacflow.spec import FRAME_RATE, SAMPLE_RATE

PCM_BPS = SAMPLE_RATE * 16  # 256 kbit/s: 16-bit PCM at 16 kHz
TCPIP_HEADER = 40  # IPv4 + TCP headers without options, per segment


def default_sample() -> Path:
    return Path(gacflow.__file__).parent / "samples" / "speech_ru.wav"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="gacflow demo", description=__doc__.splitlines()[0])
    ap.add_argument("--input", default=None, help="speech file (default: the bundled sample)")
    ap.add_argument("--out", default="gacflow-demo", help="output folder (default gacflow-demo)")
    ap.add_argument("--mode", default="275", choices=["275", "175"], help="operating point")
    ap.add_argument("--batch-seconds", type=float, default=5.0,
                    help="seconds per packet (default 5: headers stay under the 275 budget)")
    ap.add_argument("--bundle", default=None, help="model bundle (default: shipped)")
    ap.add_argument("--decoder", default=None, help="decoder size in the bundle")
    ap.add_argument("--backend", default="auto", help="edge encoder backend: auto, onnx, tflite")
    ap.add_argument("--broker", default=None,
                    help="mqtt://HOST:PORT of a broker to use, or a local one to start: "
                         "mosquitto, embedded (default: mosquitto if installed, else embedded)")
    ap.add_argument("--realtime", action="store_true", help="feed the agent at real-time pace")
    ap.add_argument("--dtx", action=argparse.BooleanOptionalAction, default=True,
                    help="discontinuous transmission in silences (default on)")
    ap.add_argument("--device-id", default="demo", help="the agent's device id")
    return ap


def mqtt_bytes(topic: str, payload: int, v5: bool = True) -> int:
    """Bytes of one QoS 1 PUBLISH plus its PUBACK on the MQTT layer."""
    body = 2 + len(topic) + 2 + int(v5) + payload
    remaining_len = 1 if body < 128 else 2 if body < 16384 else 3
    return 1 + remaining_len + body + 4


class Quiet(logging.Filter):
    """Keep the receiver's info lines off the terminal while the progress bar runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def run_demo(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    src = Path(args.input) if args.input else default_sample()
    wav = read_audio(src)
    duration = len(wav) / SAMPLE_RATE
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    logging.getLogger().handlers[0].addFilter(Quiet())

    from .broker import BROKER_KINDS, start_local_broker
    from .cli import load_codec
    from .config import parse_broker
    from .receiver import Receiver
    from .streams import StreamPolicy
    from .subscriber import Subscriber

    broker = None
    if args.broker and args.broker not in BROKER_KINDS:
        url = args.broker
    else:
        broker = start_local_broker(args.broker or "auto")
        url = broker.url
        print(f"broker      {broker.kind} at {url}")
    args.mqtt_version = broker.mqtt_version if broker else "5"
    stop = threading.Event()
    edge = sub = thread = None
    report = None
    try:
        codec = load_codec(args.bundle, args.decoder, "auto")
        print(f"receiver    codec {codec.codec_id}, decoder on {codec.device}")
        run_dir = out / time.strftime("run-%Y%m%dT%H%M%S")
        rx = Receiver(codec, out, run_dir / "archive.sqlite",
                      StreamPolicy(reorder_timeout=1.0, idle_timeout=5.0))
        sub = Subscriber(parse_broker(url), f"gacflow-demo-rx-{int(time.time())}",
                         session_expiry=300, mqtt_version=args.mqtt_version)
        sub.start()
        if not sub.wait_connected(15):
            from gacflow.errors import ConfigError

            raise ConfigError(f"could not connect to the broker at {url}")
        thread = threading.Thread(target=rx.run, args=(sub, stop), daemon=True)
        thread.start()

        edge, how = start_edge(args, url, src, run_dir, codec, wav)
        print(f"edge agent  {how}")
        if not hasattr(edge, "poll"):
            args.dtx = False  # the reference publisher sends every frame
        report = watch(rx, edge, args.device_id, duration, thread)
    finally:
        stop.set()
        if edge is not None and hasattr(edge, "poll") and edge.poll() is None:
            edge.terminate()
        if thread is not None:
            thread.join(30)
        if sub is not None:
            sub.stop()
        if broker:
            broker.stop()
    if report is None:
        print("gacflow demo: no audio came back; see the logs in " + str(out), file=sys.stderr)
        return 1
    session, path = report
    show_results(rx, session, path, wav, duration, args)
    rx.close()
    return 0


def start_edge(args, url, src, run_dir: Path, codec, wav):
    """The real agent as a subprocess; the torch reference publisher if it cannot run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "gacflow.edge.cli", "--broker", url,
           "--device-id", args.device_id, "--input", str(src),
           "--batch-seconds", str(args.batch_seconds), "--mode", args.mode,
           "--backend", args.backend, "--queue", str(run_dir / "edge-queue.db"),
           "--stats-json", str(run_dir / "edge-stats.json"),
           "--dtx" if args.dtx else "--no-dtx"]
    if args.bundle:
        cmd += ["--bundle", args.bundle]
    if args.mqtt_version != "5":
        cmd += ["--mqtt-version", args.mqtt_version]
    if args.realtime:
        cmd += ["--realtime"]
    log = run_dir / "edge.log"
    proc = subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    deadline = time.time() + 20
    while proc.poll() is None and time.time() < deadline:
        if (run_dir / "edge-stats.json").exists() or log.stat().st_size:
            return proc, f"gacflow-edge (pid {proc.pid}, log {log})"
        time.sleep(0.1)
    if proc.poll() is None or proc.returncode == 0:
        return proc, f"gacflow-edge (pid {proc.pid}, log {log})"
    why = (proc.stderr.read().strip().splitlines() or ["no message"])[-1]
    print(f"note        the edge agent could not run ({why}); publishing with the torch "
          "reference encoder instead")
    from .loadgen import Publisher, packetize

    tokens = codec.encode(wav, args.mode)
    pub = Publisher(url, args.device_id, codec.codec_id, args.mode)
    frames = max(1, round(args.batch_seconds * FRAME_RATE))
    packets = packetize(tokens.ids, args.mode, codec.layout, frames, entropy=codec.entropy)
    t = threading.Thread(target=lambda: (pub.send(packets, frames if args.realtime else 0),
                                         pub.close()), daemon=True)
    t.start()
    return t, "torch reference publisher (in-process)"


def watch(rx, edge, device: str, duration: float, thread: threading.Thread):
    """Progress bar over decoded audio seconds until the device's session is done."""
    try:
        from tqdm import tqdm
    except ImportError:  # no progress bar without tqdm; the result is the same
        tqdm = _NoBar
    bar = tqdm(total=round(duration, 1), unit="s", desc="decoded", leave=True,
               bar_format="{desc} {n:.1f}/{total:.1f} s audio |{bar}| {elapsed}")
    deadline = time.time() + 3 * duration + 120
    try:
        while time.time() < deadline and thread.is_alive():
            done = [(s, p) for s, p in rx.finished if s.device == device]
            live = [s for s in list(rx.table.sessions.values()) if s.device == device]
            secs = sum(s.emitted for s, _ in done) + sum(s.emitted for s in live)
            bar.n = max(bar.n, min(bar.total, round(secs / FRAME_RATE, 1)))
            bar.refresh()
            if done:
                return done[-1]
            if edge is not None and hasattr(edge, "poll") and edge.poll() not in (None, 0) \
                    and not live:
                tail = edge.stderr.read().strip().splitlines()
                print(f"gacflow demo: edge agent failed: {tail[-1] if tail else '?'}",
                      file=sys.stderr)
                return None
            time.sleep(0.2)
    finally:
        bar.close()
    return None


class _NoBar:
    def __init__(self, total: float, **_) -> None:
        self.total, self.n = total, 0.0

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        print(f"decoded {self.n:.1f}/{self.total:.1f} s audio")


def show_results(rx, session, path: Path, wav, duration: float, args) -> None:
    topic = topics.topic(args.device_id, "tokens")
    rows = list(rx.archive.db.execute(
        "SELECT length(payload) FROM packets WHERE device=? AND session=?",
        (args.device_id, session.name)))
    payload = sum(n for (n,) in rows)
    mqtt = sum(mqtt_bytes(topic, n, args.mqtt_version == "5") for (n,) in rows)
    tcp = mqtt + 2 * TCPIP_HEADER * len(rows)
    p_bps, w_bps, t_bps = (8 * x / duration for x in (payload, mqtt, tcp))
    from gacflow.audio import read_audio as _read

    decoded = _read(path)
    lines = {
        "decoded WAV": str(path),
        "audio": f"{duration:.1f} s in, {len(decoded) / SAMPLE_RATE:.1f} s out, "
                 f"{len(rows)} packets, {session.gaps} gaps",
        "payload": f"{p_bps:.0f} bit/s ({payload} bytes, mode {args.mode}, "
                   f"{'DTX on' if args.dtx else 'DTX off'})",
        "wire (MQTT)": f"{w_bps:.0f} bit/s (PUBLISH + PUBACK framing, topic {topic!r})",
        "wire (TCP/IP)": f"{t_bps:.0f} bit/s (+{2 * TCPIP_HEADER} B of IPv4/TCP headers a packet)",
        "compression": f"{PCM_BPS / p_bps:.0f}x vs 16-bit PCM (256 kbit/s) on payload, "
                       f"{PCM_BPS / t_bps:.0f}x on the wire" if p_bps else "n/a",
        "STOI": stoi_text(wav, decoded),
        "decode RTF": f"{rx.decoder.stats.rtf:.3f} on {rx.codec.device}",
    }
    stats = Path(args.out)
    edge_stats = sorted(stats.glob("run-*/edge-stats.json"))
    if edge_stats:
        try:
            s = json.loads(edge_stats[-1].read_text())
            lines["edge"] = (f"{s.get('backend', '?')} encoder, RTF {s.get('encoder_rtf', '?')}, "
                             f"{s.get('bitrate', '?')} bit/s payload by its own count")
        except (OSError, ValueError):
            pass
    print()
    for k, v in lines.items():
        print(f"{k:<14}{v}")


def stoi_text(ref, deg) -> str:
    try:
        from pystoi import stoi
    except ImportError:
        return "n/a (pip install pystoi to measure intelligibility)"
    n = min(len(ref), len(deg))
    return f"{stoi(ref[:n], deg[:n], SAMPLE_RATE):.3f} against the input (1.0 = identical)"


def main() -> int:
    from gacflow.cli.common import run_guarded

    return run_guarded("gacflow demo", lambda: run_demo(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
