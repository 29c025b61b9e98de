"""Receiver benchmarks: decode real-time factor vs concurrent streams, end-to-end latency.

    python bench/bench_cloud.py [--streams 1,8,64] [--gpu-streams 1,64,...,2048]
                                [--decoders small,large] [--seconds 10] [--threads 1]

1. RTF: N live streams each deliver a 1 s packet per round; the decoder service decodes
   every stream's settled window in one batched pass per round (what the receiver does).
   RTF = decode compute time / seconds of audio produced (lower is better; < 1 = faster
   than real time for all N streams together).
2. Latency: a paced publisher (1 s batching, real time) -> real mosquitto -> receiver ->
   WAV. Latency of a frame = when its audio was written to the WAV minus when the frame
   entered the agent (the end of its 40 ms of audio).

Prints a markdown table and writes bench/results/cloud.md (+ cloud_rtf.png with matplotlib).
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from gacflow.audio import read_audio  # noqa: E402
from gacflow.bitstream import decode_packet  # noqa: E402
from gacflow.bundle import Bundle  # noqa: E402
from gacflow.cloud.decoder_service import DecoderService  # noqa: E402
from gacflow.cloud.loadgen import packetize  # noqa: E402
from gacflow.cloud.streams import StreamTable  # noqa: E402
from gacflow.model import Codec  # noqa: E402
from gacflow.spec import FRAME_RATE  # noqa: E402

SAMPLE = ROOT / "sdk" / "samples" / "speech_ru.wav"


def bench_rtf(codec: Codec, ids: np.ndarray, n_streams: int, seconds: float,
              voice: bytes | None = None) -> dict:
    """N concurrent streams of `seconds` audio, 1 s packets, batched decoding per round
    (with the voice code in the first packet: the receiver's timbre EQ is in the cost)."""
    frames = int(seconds * FRAME_RATE)
    ids = np.resize(ids, frames)
    pk = [decode_packet(b) for b in packetize(ids, "275", codec.layout, FRAME_RATE,
                                                voice=voice)]
    table = StreamTable(codec.layout, voice=codec.voice)
    svc = DecoderService(codec, max_batch=max(64, n_streams))
    worst = 0.0
    for k, p in enumerate(pk):
        for sid in range(n_streams):
            table.route(f"dev{sid}", p, float(k))
        t0 = time.perf_counter()
        ended = table.tick(float(k))
        jobs = [j for s in table.sessions.values() for j in svc.plan(s)]
        jobs += [j for s in ended for j in svc.plan(s, final=True)]
        svc.run(jobs)
        if codec.device.startswith("cuda"):
            torch.cuda.synchronize()
        worst = max(worst, time.perf_counter() - t0)
    return {"streams": n_streams, "device": codec.device, "audio_s": svc.stats.seconds_audio,
            "compute_s": svc.stats.seconds_compute, "rtf": svc.stats.rtf,
            "worst_round_s": worst,
            "batches": svc.stats.batches}


def bench_latency(codec: Codec, ids: np.ndarray, seconds: float) -> dict:
    """Real mosquitto, paced publisher at 1 s batching, in-process receiver."""
    from broker import Mosquitto

    from gacflow.cloud.config import parse_broker
    from gacflow.cloud.loadgen import Publisher
    from gacflow.cloud.receiver import Receiver
    from gacflow.cloud.streams import StreamPolicy
    from gacflow.cloud.subscriber import Subscriber

    frames = int(seconds * FRAME_RATE)
    ids = ids[:frames]
    out = Path(tempfile.mkdtemp(prefix="gacflow-bench-"))
    broker = Mosquitto().start()
    rx = Receiver(codec, out, out / "a.sqlite", StreamPolicy(idle_timeout=3.0))
    written: list[tuple[int, float]] = []  # (frames emitted so far, wall time)
    orig = rx.wavs.write

    def timed_write(s, audio):
        orig(s, audio)
        written.append((s.emitted, time.time()))

    rx.wavs.write = timed_write
    sub = Subscriber(parse_broker(broker.url), "bench-rx")
    sub.start()
    sub.wait_connected(10)
    stop = threading.Event()
    th = threading.Thread(target=rx.run, args=(sub, stop))
    th.start()
    pub = Publisher(broker.url, "lat", codec.codec_id)
    packets = packetize(ids, "275", codec.layout, FRAME_RATE)
    t0 = time.time()  # frame i enters the agent during [t0 + i/25, t0 + (i+1)/25)
    for k, p in enumerate(packets):
        last = min(frames, (k + 1) * FRAME_RATE)
        time.sleep(max(0.0, t0 + last / FRAME_RATE - time.time()))
        pub.publish(p)
    deadline = time.time() + 30
    while not rx.finished and time.time() < deadline:
        time.sleep(0.05)
    stop.set()
    th.join()
    sub.stop()
    pub.close()
    rx.close()
    broker.close()
    shutil.rmtree(out, ignore_errors=True)
    lat, prev = [], 0
    for upto, t in written:
        for i in range(prev, upto):
            lat.append(t - (t0 + (i + 1) / FRAME_RATE))
        prev = upto
    lat = np.array(lat)
    return {"frames": len(lat), "mean": lat.mean(), "p50": np.percentile(lat, 50),
            "p95": np.percentile(lat, 95), "max": lat.max()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", default="1,8,64",
                    help="concurrent streams on the CPU ('' : GPU rows only)")
    ap.add_argument("--gpu-streams", default="1,64,256,512,1024,2048",
                    help="concurrent streams on a CUDA device, when there is one")
    ap.add_argument("--decoders", default=None, help="decoder sizes (default: all in bundle)")
    ap.add_argument("--seconds", type=float, default=10.0, help="audio per stream")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--latency-seconds", type=float, default=12.0,
                    help="audio for the latency run through mosquitto (0: skip it)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cloud.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    wav = read_audio(SAMPLE)
    model = Bundle.load().model_config
    sizes = args.decoders.split(",") if args.decoders else list(model["decoders"])
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    codecs = {(size, dev): Codec.from_bundle(device=dev, decoder=size)
              for size in sizes for dev in devices}
    base = codecs[(sizes[0], "cpu")]  # every size reads the same tokens
    tokens = base.encode(wav)
    ids, voice = tokens.ids, tokens.voice
    rows = []
    for (size, dev), codec in codecs.items():
        bench_rtf(codec, ids, 1, 3.0, voice)  # warm-up
        counts = args.streams if dev == "cpu" else args.gpu_streams
        for n in (int(x) for x in counts.split(",") if x):
            r = bench_rtf(codec, ids, n, args.seconds, voice)
            r["decoder"] = size
            rows.append(r)
            print(f"{size} {dev} {n} streams: RTF {r['rtf']:.4f}", file=sys.stderr)
    lats = {size: bench_latency(codecs[(size, "cpu")], ids, args.latency_seconds)
            for size in sizes} if args.latency_seconds > 0 else {}
    contexts = {size: DecoderService(codecs[(size, "cpu")]).context for size in sizes}

    cpu_name = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none available"
    ctx = ", ".join(f"{k} {v}" for k, v in contexts.items())
    lines = [
        "# Cloud receiver benchmark",
        "",
        f"Codec {base.codec_id}; CPU {cpu_name} with {args.threads} torch "
        f"thread(s) (machine shared with other jobs); CUDA: {gpu}. "
        f"{args.seconds:.0f} s of speech per stream, 1 s packets, windows of "
        f"1 s + 2 x context frames ({ctx}), every stream's window batched in one forward pass.",
        "",
        "| decoder | device | streams | audio (s) | decode compute (s) | RTF per stream "
        "| load (RTF x streams) | worst round (s) | batches |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['decoder']} | {r['device']} | {r['streams']} | {r['audio_s']:.0f} | "
                     f"{r['compute_s']:.2f} | {r['rtf']:.4f} | {r['rtf'] * r['streams']:.2f} | "
                     f"{r['worst_round_s']:.3f} | "
                     f"{r['batches']} |")
    lines += [
        "",
        "RTF per stream = decode compute / audio produced. Load = compute per second of wall",
        "time with all streams live: below 1 the receiver keeps up on this many threads (a",
        "round must also finish within its 1 s of audio: `worst round`). Each window carries",
        "the context on both sides of 25 new frames, so live decoding costs ~2x a",
        "whole-file decode; batching helps GPUs, on a CPU it is compute-bound either way.",
        "Goal: CPU single-stream RTF <= 0.5.",
        "",
        "End-to-end latency, real mosquitto, 1 s batching "
        "(frame fully captured -> its audio in the WAV):",
        "",
        "| decoder | frames | mean (s) | p50 (s) | p95 (s) | max (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for size, lat in lats.items():
        lines.append(f"| {size} | {lat['frames']} | {lat['mean']:.2f} | {lat['p50']:.2f} | "
                     f"{lat['p95']:.2f} | {lat['max']:.2f} |")
    if not lats:
        lines.append("| (not measured in this run: `--latency-seconds 0`) | | | | | |")
    lines += [
        "",
        "Latency is dominated by batching (a frame waits for the rest of its 1 s packet) and",
        "by the decoder's right context (that many frames of later audio must arrive, i.e.",
        "the next packet); decode itself takes milliseconds.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        for size in sizes:
            for dev in devices:
                rs = [r for r in rows if r["device"] == dev and r["decoder"] == size]
                ax.plot([r["streams"] for r in rs], [r["rtf"] for r in rs], "o-",
                        label=f"{size} ({dev})")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel("RTF per stream")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.legend()
        ax.set_title("gacflow-cloud batched decode")
        fig.tight_layout()
        fig.savefig(out.with_name("cloud_rtf.png"), dpi=120)
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
