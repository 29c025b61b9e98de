"""Edge agent benchmark: encoder speed, memory, install size, payload and on-the-wire bit/s.

    python bench/bench_edge.py                 # everything (about 3 minutes + the install)
    python bench/bench_edge.py --skip-install  # no fresh venv
    python bench/bench_edge.py --pace 4        # quicker, less realistic wire figures

What it does:
1. Runs `gacflow-edge` on 60 s of speech with pauses, pinned to one core (taskset -c 0),
   at full speed, three times (best and median reported: the machine may be shared):
   encoder real-time factor (encode time / audio time, from --stats-json), the whole
   agent's CPU time per audio second, and the agent's peak RSS (wait4).
2. Runs six agents at once in real time (batching 0.2, 1 and 5 s; 60 s and 120 s files;
   DTX on), each through a counting TCP proxy in front of a real mosquitto: payload
   bit/s (packet bytes), what the payload would be without DTX, MQTT bytes on the socket, and the
   uplink on the wire = MQTT bytes + 52 bytes of IPv4/TCP headers (20 + 20 + 12 of
   timestamps option) for every segment the client sent, pure ACKs included (segment and
   byte counts from the kernel: TCP_INFO of the proxy's client-side socket).
3. Creates a fresh venv, `pip install /work/main[edge]`, and measures site-packages.

Goals: RTF <= 0.01, RSS <= 100 MB, install <= 250 MB, wire uplink <= 450 bit/s at 5 s.
Prints a markdown table and writes bench/results/edge.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from broker import Mosquitto  # noqa: E402

from gacflow.audio import read_audio, write_wav  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "edge.md"
TCP_HEADER_BYTES = 52  # IPv4 20 + TCP 20 + timestamps option 12
SAMPLE = ROOT / "sdk" / "samples" / "speech_ru.wav"


# --- a counting TCP proxy ---
def tcp_counters(sock: socket.socket) -> tuple[int, int]:
    """(bytes received, segments received) of a connected socket, from Linux TCP_INFO."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 232)
    bytes_received = struct.unpack_from("Q", info, 128)[0]
    segs_in = struct.unpack_from("I", info, 140)[0]
    return bytes_received, segs_in


class CountingProxy:
    """Forwards one port to the broker and counts the client's uplink on the wire."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up_bytes = 0  # MQTT bytes client -> broker
        self.up_segments = 0  # TCP segments client -> broker, pure ACKs included
        self.down_bytes = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self._lock:
                self._conns.append(client)
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False),
                             daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if not up:
                    self.down_bytes += len(data)
        except OSError:
            pass
        finally:
            if up:
                self._account(src)
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _account(self, client: socket.socket) -> None:
        with self._lock:
            if client in self._conns:
                self._conns.remove(client)
                b, s = tcp_counters(client)
                self.up_bytes += b
                self.up_segments += s

    def totals(self) -> tuple[int, int]:
        """Uplink (MQTT bytes, segments) so far, closed and open connections."""
        with self._lock:
            b, s = self.up_bytes, self.up_segments
            for c in self._conns:
                cb, cs = tcp_counters(c)
                b, s = b + cb, s + cs
        return b, s


# --- runs ---
def make_audio(path: Path, seconds: int = 60) -> None:
    """Speech with 2 s pauses (the bundled sample), so DTX has something to do."""
    speech = read_audio(SAMPLE)
    pause = np.zeros(32000, np.float32)
    parts, n = [], 0
    while n < seconds * 16000:
        for piece in (speech[: 8 * 16000], pause, speech[8 * 16000 :], pause):
            parts.append(piece)
            n += len(piece)
    write_wav(path, np.concatenate(parts)[: seconds * 16000])


BUNDLE: list[str] = []  # ["--bundle", PATH] when --bundle is given


def agent_cmd(work: Path, name: str, port: int, wav: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "gacflow.edge.cli", "--broker", f"mqtt://127.0.0.1:{port}",
        "--device-id", f"bench-{name}", "--input", str(wav), "--queue", str(work / f"{name}.db"),
        "--stats-json", str(work / f"{name}.json"), "--status-interval", "5",
        "--drain-timeout", "30", *BUNDLE, *extra,
    ]


def run_pinned(work: Path, port: int, wav: Path, backend: str) -> dict:
    """Full-speed run on core 0: RTF, wall time per audio second, peak RSS."""
    cmd = agent_cmd(work, f"rtf-{backend}", port, wav, "--backend", backend)
    if shutil.which("taskset"):
        cmd = ["taskset", "-c", "0"] + cmd
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"agent failed: {err.strip()}")
    stats = json.loads((work / f"rtf-{backend}.json").read_text())
    cpu = usage.ru_utime + usage.ru_stime
    return {"backend": backend, "rtf": stats["encoder_rtf"], "vad_rtf": stats["vad_rtf"],
            "vad": stats["vad"], "wall": wall, "cpu": cpu,
            "audio": stats["audio_seconds"], "rss_mb": usage.ru_maxrss / 1024,
            "pinned": shutil.which("taskset") is not None}


def best_of(work: Path, port: int, wav: Path, backend: str, repeats: int) -> dict:
    """The fastest of a few runs (the machine is shared), with the median RTF alongside."""
    runs = [run_pinned(work, port, wav, backend) for _ in range(repeats)]
    best = min(runs, key=lambda r: r["rtf"])
    best["rtf_median"] = float(np.median([r["rtf"] for r in runs]))
    best["repeats"] = repeats
    best["rss_mb"] = max(r["rss_mb"] for r in runs)
    return best


def run_batching(work: Path, port: int, wavs: dict[int, Path], intervals: list[float],
                 pace: float) -> list[dict]:
    """Every interval with a short and a long file, all at once, each agent behind its own
    counting proxy. Long minus short cancels the per-session bytes (TCP handshake,
    CONNECT, birth and offline messages, end-of-stream packet, DISCONNECT): steady state."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    runs = []
    for sec in intervals:
        for length, wav in wavs.items():
            proxy = CountingProxy(port)
            name = f"batch-{sec:g}-{length}"
            cmd = agent_cmd(work, name, proxy.port, wav, "--batch-seconds", str(sec),
                            "--pace", str(pace))
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    env=env)
            runs.append((sec, length, name, proxy, proc))
    measured: dict[tuple[float, int], dict] = {}
    for sec, length, name, proxy, proc in runs:
        _, err = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"agent {name} failed: {err.decode().strip()}")
        time.sleep(0.3)
        up_bytes, up_segs = proxy.totals()
        stats = json.loads((work / f"{name}.json").read_text())
        measured[(sec, length)] = {"stats": stats, "up": up_bytes, "segs": up_segs,
                                   "down": proxy.down_bytes}
    short, long_ = sorted(wavs)
    out = []
    for sec in intervals:
        a, b = measured[(sec, short)], measured[(sec, long_)]
        stats, secs = b["stats"], b["stats"]["frames"] / 25
        span = long_ - short
        wire = lambda m: m["up"] + TCP_HEADER_BYTES * m["segs"]  # noqa: E731
        out.append({
            "batch": sec, "packets": stats["packets"], "seconds": secs,
            "payload": stats["bitrate"], "payload_no_dtx": stats["bitrate_no_dtx"],
            "speech": stats["active_frames"] / max(1, stats["frames"]),
            "mqtt_up": b["up"] * 8 / secs, "wire_up": wire(b) * 8 / secs,
            "mqtt_steady": (b["up"] - a["up"]) * 8 / span,
            "wire_steady": (wire(b) - wire(a)) * 8 / span,
            "segments": b["segs"], "down": b["down"] * 8 / secs,
        })
    return out


def install_size(work: Path) -> dict:
    """Fresh venv + pip install ROOT[edge]; size of site-packages (and without pip)."""
    venv = work / "venv-edge"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = venv / "bin" / "pip"
    t0 = time.perf_counter()
    subprocess.run([str(pip), "install", "-q", f"{ROOT}[edge]"], check=True)
    took = time.perf_counter() - t0
    site = next((venv / "lib").glob("python*/site-packages"))
    sizes: dict[str, int] = {}
    for p in site.rglob("*"):
        if p.is_file() and not p.is_symlink():
            top = p.relative_to(site).parts[0]
            sizes[top] = sizes.get(top, 0) + p.stat().st_size
    total = sum(sizes.values())
    tooling = sum(v for k, v in sizes.items() if k.split("-")[0] in ("pip", "setuptools"))
    has_torch = any(k.startswith("torch") for k in sizes)
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:6]
    return {"total_mb": total / 2**20, "without_pip_mb": (total - tooling) / 2**20,
            "torch": has_torch, "seconds": took,
            "largest": ", ".join(f"{k} {v / 2**20:.0f} MB" for k, v in top)}


# --- report ---
def bundle_line(path: str | None) -> str:
    from gacflow.bundle import Bundle

    b = Bundle.load(path)
    size = b.manifest["files"].get("encoder.int8.onnx", {}).get("bytes", 0)
    where = "shipped default bundle" if path is None else f"bundle {path}"
    return f"Model: {where}, codec {b.codec_id}, encoder.int8.onnx {size / 1024:.0f} KiB."


def report(rtf: list[dict], batches: list[dict], install: dict | None, pace: float,
           model: str = "") -> str:
    ok = lambda good: "yes" if good else "**no**"  # noqa: E731
    lines = [
        "# Edge agent benchmark (bench/bench_edge.py)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or ''} "
        f"Python {platform.python_version()}; input: speech with 2 s pauses (the bundled "
        "sample; 60 s for speed, 60 and 120 s for bit rates), mode 275, DTX on "
        "(silero-vad if installed).",
        "",
        model,
        "",
        "| measure | value | goal | met |",
        "|---|---|---|---|",
    ]
    for r in rtf:
        core = "one core (taskset -c 0)" if r["pinned"] else "unpinned"
        lines.append(f"| encoder RTF, {r['backend']}, {core}, best of {r['repeats']} "
                     f"(median {r['rtf_median']:.4f}) | {r['rtf']:.4f} | <= 0.01 | "
                     f"{ok(r['rtf'] <= 0.01)} |")
        lines.append(f"| VAD ({r['vad']}) RTF, same run | {r['vad_rtf']:.4f} | | |")
        lines.append(f"| whole agent CPU time / audio time (VAD, features, MQTT, start-up "
                     f"included), {r['backend']} | {r['cpu'] / r['audio']:.4f} | | |")
        lines.append(f"| peak RSS of the agent process, {r['backend']} | {r['rss_mb']:.0f} MB | "
                     f"<= 100 MB | {ok(r['rss_mb'] <= 100)} |")
    if install:
        lines.append(f"| installed size of gacflow[edge] (fresh venv site-packages) | "
                     f"{install['total_mb']:.0f} MB ({install['without_pip_mb']:.0f} MB without "
                     f"pip/setuptools; torch: {'yes' if install['torch'] else 'no'}) | "
                     f"<= 250 MB | {ok(install['total_mb'] <= 250)} |")
    for b in batches:
        if b["batch"] == 5:
            lines.append(f"| wire uplink at 5 s batching, steady state | "
                         f"{b['wire_steady']:.0f} bit/s | <= 450 bit/s | "
                         f"{ok(b['wire_steady'] <= 450)} |")
            lines.append(f"| wire uplink at 5 s batching, whole 120 s session | "
                         f"{b['wire_up']:.0f} bit/s | | |")
    lines += [
        "",
        f"Bit rates per batching interval (agents paced at {pace:g}x real time, through a "
        "counting proxy in front of mosquitto; MQTT 5, QoS 1):",
        "",
        "| batching | packets (120 s) | frames sent (not DTX) | payload bit/s (DTX) | "
        "payload bit/s (no DTX) | MQTT uplink bit/s, steady | wire uplink bit/s, steady | "
        "MQTT uplink bit/s, 120 s session | wire uplink bit/s, 120 s session | "
        "downlink MQTT bit/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for b in batches:
        lines.append(
            f"| {b['batch']:g} s | {b['packets']} | {b['speech']:.0%} | {b['payload']:.0f} | "
            f"{b['payload_no_dtx']:.0f} | {b['mqtt_steady']:.0f} | {b['wire_steady']:.0f} | "
            f"{b['mqtt_up']:.0f} | {b['wire_up']:.0f} | {b['down']:.0f} |")
    lines += [
        "",
        "Payload = packet bytes (11-byte header, DTX bitmap, entropy-coded tokens) per second "
        "of audio; \"no DTX\" is what plain bit-packing of every frame would take. MQTT "
        "uplink = every byte the agent wrote to the socket (CONNECT, birth "
        "message, PUBLISH headers with the topic, PINGREQ, DISCONNECT). Wire = MQTT + 52 bytes "
        "of IPv4/TCP headers per segment (kernel TCP_INFO counts), not counting link-layer "
        "framing (Wi-Fi/Ethernet) or TLS (mqtts adds about 22-29 bytes per record). Steady "
        "state = (bytes of a 120 s session - bytes of a 60 s session) / 60 s: the per-session "
        "costs (TCP handshake, CONNECT, retained birth message, end-of-stream packet, offline "
        "message, DISCONNECT) cancel out. Under MQTT 5 the topic is replaced by a topic alias "
        "after the first packet of a connection.",
    ]
    if install:
        lines += ["", f"Install: {install['seconds']:.0f} s; largest: {install['largest']}."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-install", action="store_true", help="skip the fresh-venv install")
    ap.add_argument("--pace", type=float, default=1.0, help="speed of the bit-rate runs")
    ap.add_argument("--backends", default="onnx", help="comma list: onnx,tflite")
    ap.add_argument("--bundle", help="bundle folder (default: the shipped one)")
    ap.add_argument("--repeats", type=int, default=3, help="pinned speed runs per backend")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if args.bundle:
        BUNDLE.extend(["--bundle", args.bundle])
    work = Path(tempfile.mkdtemp(prefix="gacflow-bench-edge-"))
    broker = Mosquitto().start()
    try:
        wavs = {n: work / f"speech{n}.wav" for n in (60, 120)}
        for n, path in wavs.items():
            make_audio(path, n)
        rtf = [best_of(work, broker.port, wavs[60], b, args.repeats)
               for b in args.backends.split(",")]
        print(f"RTF/RSS done: {rtf}", file=sys.stderr)
        batches = run_batching(work, broker.port, wavs, [0.2, 1.0, 5.0], args.pace)
        install = None if args.skip_install else install_size(work)
    finally:
        broker.close()
        shutil.rmtree(work, ignore_errors=True)
    text = report(rtf, batches, install, args.pace, bundle_line(args.bundle))
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
