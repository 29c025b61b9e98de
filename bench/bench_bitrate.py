"""Bitrate of the token stream: plain packing vs entropy coding, per mode and packet size.

For each data set the shipped encoder makes 275-mode tokens (175 = their top 6 bits);
they are cut into packets of 1 s, 5 s or the whole file, as the edge agent and `.gac`
files do, and packed plain and with the bundle's entropy tables. Reports token payload
bits per frame (headers excluded) and bit/s with the 11-byte packet headers, plus the
coder's speed; writes bench/results/bitrate.md and bench/results/bitrate.png. Run:
    OMP_WAIT_POLICY=PASSIVE python bench/bench_bitrate.py [--data corpus:valid DIR ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from gacflow.bitstream import HEADER_BYTES
from gacflow.bundle import Bundle
from gacflow.cloud.loadgen import packetize
from gacflow.eval.data import ClipFilter, load_clips
from gacflow.model import Codec
from gacflow.spec import FRAME_RATE
from gacflow.train.entropy_fit import clip_tokens

OUT = Path(__file__).parent / "results"
DEFAULT_DATA = ["corpus:valid", "data/synth-en-kokoro", "data/synth-en-festival"]
PACKETS = {"1 s": FRAME_RATE, "5 s": 5 * FRAME_RATE, "file": None}


def measure(data: str, codec: Codec, entropy, max_files: int | None) -> list[dict]:
    tokens = clip_tokens(codec, data, ClipFilter(min_seconds=1.0), max_files)
    frames = sum(len(t) for t in tokens)
    rows = []
    for mode in ("275", "175"):
        seqs = [t if mode == "275" else codec.layout.base_tokens(t) for t in tokens]
        for label, n in PACKETS.items():
            for coder, model in (("plain", None), ("coded", entropy)):
                packets = [b for t in seqs
                           for b in packetize(t, mode, codec.layout, n or len(t), entropy=model)]
                total = sum(len(b) for b in packets)
                payload = total - len(packets) * HEADER_BYTES
                rows.append({"data": data, "clips": len(tokens), "seconds": frames / FRAME_RATE,
                             "mode": mode, "packet": label, "coder": coder,
                             "bits_per_frame": payload * 8 / frames,
                             "payload_bps": payload * 8 / frames * FRAME_RATE,
                             "total_bps": total * 8 / frames * FRAME_RATE})
    return rows


def coder_speed(codec: Codec, entropy, clip: np.ndarray) -> tuple[float, float]:
    """Microseconds per frame to code and to decode (275 mode, one 5 s packet at a time)."""
    from gacflow.bitstream import decode_packet

    ids = codec.encode(clip, "275").ids
    t = time.perf_counter()
    blobs = packetize(ids, "275", codec.layout, 5 * FRAME_RATE, entropy=entropy)
    enc = time.perf_counter() - t
    t = time.perf_counter()
    for b in blobs:
        decode_packet(b, entropy)
    dec = time.perf_counter() - t
    return enc / len(ids) * 1e6, dec / len(ids) * 1e6


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    sets = sorted({r["data"] for r in rows})
    labels = list(PACKETS)
    for mode, marker in (("275", "o"), ("175", "s")):
        for coder, style in (("plain", "--"), ("coded", "-")):
            for data in sets:
                ys = [next(r["total_bps"] for r in rows if r["data"] == data and
                           r["mode"] == mode and r["coder"] == coder and r["packet"] == p)
                      for p in labels]
                ax.plot(labels, ys, style, marker=marker,
                        label=f"{mode} {coder}, {Path(data).name or data}")
    ax.axhline(275, color="grey", lw=0.8)
    ax.axhline(175, color="grey", lw=0.8)
    ax.set_xlabel("packet length")
    ax.set_ylabel("bit/s, packet headers included")
    ax.set_title("gacflow token stream: plain packing vs entropy coding")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", nargs="+", default=DEFAULT_DATA)
    ap.add_argument("--max-files", type=int, default=None)
    ap.add_argument("--bundle", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    bundle = Bundle.load(args.bundle)
    if bundle.entropy is None:
        raise SystemExit(f"bundle {bundle.root} has no entropy tables "
                         "(gacflow-train entropy-fit)")
    codec = Codec.from_bundle(bundle.root)
    rows = [r for d in args.data if Path(d).exists() or d.startswith("corpus:")
            for r in measure(d, codec, bundle.entropy, args.max_files)]
    first = load_clips(args.data[0], 1, ClipFilter(min_seconds=1.0))[0].wav
    enc_us, dec_us = coder_speed(codec, bundle.entropy, np.tile(first, 4))
    fitted = ", ".join(bundle.manifest["entropy"].get("fitted_on", ["?"]))
    lines = [
        f"Token bitrate, codec {bundle.codec_id}, entropy tables "
        f"{bundle.entropy.tag:02x} (fitted on {fitted}); "
        "no DTX (every frame sent). Payload = token bits only; total = with the 11-byte "
        "packet headers.",
        "",
        "| data | seconds | mode | packet | plain bit/frame | coded bit/frame | saving | "
        "plain bit/s (total) | coded bit/s (total) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["coder"] != "plain":
            continue
        c = next(x for x in rows if x["coder"] == "coded" and all(
            x[k] == r[k] for k in ("data", "mode", "packet")))
        lines.append(
            f"| {r['data']} ({r['clips']} clips) | {r['seconds']:.0f} | {r['mode']} | "
            f"{r['packet']} | {r['bits_per_frame']:.2f} | {c['bits_per_frame']:.2f} | "
            f"{1 - c['bits_per_frame'] / r['bits_per_frame']:.1%} | "
            f"{r['payload_bps']:.0f} ({r['total_bps']:.0f}) | "
            f"{c['payload_bps']:.0f} ({c['total_bps']:.0f}) |")
    lines += ["", f"Arithmetic coder, pure Python, one core: {enc_us:.0f} us per frame to "
              f"code, {dec_us:.0f} us to decode (a frame is 40 ms: "
              f"{enc_us / 400:.2f} % of real time on this CPU)."]
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / "bitrate.md").write_text(text)
    plot(rows, OUT / "bitrate.png")
    print(f"wrote {OUT / 'bitrate.md'} and {OUT / 'bitrate.png'}")


if __name__ == "__main__":
    main()
