"""Offline codec speed on this machine's CPU: torch encode and decode of a 30 s clip.

Prints a markdown table and writes bench/results/codec.md. Run:
    OMP_WAIT_POLICY=PASSIVE python bench/bench_codec.py [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import numpy as np
import torch

from gacflow.audio import read_audio
from gacflow.bundle import Bundle
from gacflow.cli.offline_demo import sample_path
from gacflow.model import Codec

OUT = Path(__file__).parent / "results" / "codec.md"


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    wav = np.tile(read_audio(sample_path()), 2)[: 30 * 16000]
    bundle = Bundle.load()
    rows = []
    for name in bundle.model_config["decoders"]:
        codec = Codec.from_bundle(decoder=name)
        tokens = codec.encode(wav, "275")
        t_enc = best_of(lambda c=codec: c.encode(wav, "275"), args.repeats)
        t_dec = best_of(lambda c=codec, t=tokens: c.decode(t), args.repeats)
        params = sum(p.numel() for p in codec.decoder.parameters()) / 1e6
        rows.append((name, params, t_enc, t_dec))
    lines = [
        f"Codec speed, 30 s clip, CPU ({platform.processor() or platform.machine()}, "
        f"torch threads={args.threads}, best of {args.repeats}); codec {bundle.codec_id}",
        "",
        "| decoder | decoder params (M) | torch encode (s) | encode RTF | decode (s) "
        "| decode RTF |",
        "|---|---|---|---|---|---|",
    ]
    for name, params, te, td in rows:
        lines.append(
            f"| {name} | {params:.2f} | {te:.2f} | {te / 30:.3f} | {td:.2f} | {td / 30:.3f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)


if __name__ == "__main__":
    main()
