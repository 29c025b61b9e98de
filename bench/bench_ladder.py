"""Receiver-compute ladder: quality of each decoder size against its compute, on one eval.

For every decoder of a bundle it counts parameters and forward FLOPs per second of audio
(torch's FlopCounterMode on 10 s of 275-mode tokens), then reads the quality of the same
decoders and of the anchors from a `gacflow eval` output folder (clips.json), and draws
DistillMOS, speaker similarity and WER against decoder GFLOP per second of audio, with the
anchors as horizontal lines (they have no receiver-side model to count).

    python bench/bench_ladder.py --eval EVAL_OUT [MORE ...] [--bundle B] [--out OUT]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

SECONDS = 10.0
PANELS = (("dmos", "DistillMOS", False), ("spksim", "speaker similarity", False),
          ("wer", "WER (pocketsphinx)", True))


def decoder_costs(bundle: str | None) -> dict[str, dict]:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from gacflow.bundle import Bundle
    from gacflow.model import Codec
    from gacflow.model.codec import tokens_to_decoder_input

    b = Bundle.load(bundle)
    out = {}
    for name in sorted(b.model_config["decoders"]):
        codec = Codec.from_bundle(bundle, decoder=name)
        frames = int(SECONDS * 25)
        rng = np.random.default_rng(0)
        ids = rng.integers(0, 1 << 10, frames).astype(np.int64)
        codes, enh, _ = tokens_to_decoder_input(ids, "275", codec.layout)
        with torch.inference_mode(), FlopCounterMode(display=False) as count:
            codec.decoder(torch.from_numpy(codes)[None], torch.from_numpy(enh)[None],
                          codec.voice_condition([None]))
        params = sum(p.numel() for p in codec.decoder.parameters())
        out[name] = {"params": params, "gflop_per_s": count.get_total_flops() / SECONDS / 1e9}
    return out


def quality(eval_dirs: list[Path]) -> dict[str, dict[str, float]]:
    """Mean scores per system; a system found in several eval folders is read from the
    first (so a candidate's folders go first and an older run can supply the anchors)."""
    by: dict[str, dict[str, list[float]]] = {}
    owner: dict[str, Path] = {}
    rows = []
    for d in eval_dirs:
        for r in json.loads((d / "clips.json").read_text()):
            if owner.setdefault(r["system"], d) == d:
                rows.append(r)
    for r in rows:
        if r.get("error"):
            continue
        for k, v in r["scores"].items():
            if v is not None and not math.isnan(v):
                by.setdefault(r["system"], {}).setdefault(k, []).append(v)
    return {s: {k: float(np.mean(v)) for k, v in m.items()} for s, m in by.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--eval", required=True, type=Path, nargs="+",
                    help="gacflow eval --out folder(s) on the same clips")
    ap.add_argument("--out", default="bench/results/ladder", help="writes OUT.md and OUT.png")
    args = ap.parse_args(argv)
    costs = decoder_costs(args.bundle)
    q = quality(args.eval)
    lines = ["| decoder | params | GFLOP per s of audio | mode | DistillMOS | speaker sim | WER |",
             "|---|---:|---:|---|---:|---:|---:|"]
    for name, c in costs.items():
        for mode in ("275", "175"):
            m = q.get(f"gacflow-{mode} ({name})", {})
            cells = [f"{m[k]:.3f}" if k in m else "n/a" for k, _, _ in PANELS]
            lines.append(f"| {name} | {c['params'] / 1e6:.1f} M | {c['gflop_per_s']:.2f} | "
                         f"{mode} | " + " | ".join(cells) + " |")
    anchors = {s: m for s, m in q.items() if s.startswith(("codec2", "opus"))}
    for s, m in sorted(anchors.items()):
        cells = [f"{m[k]:.3f}" if k in m else "n/a" for k, _, _ in PANELS]
        lines.append(f"| {s} (anchor) | - | - | - | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sources = ", ".join(f"`{d}`" for d in args.eval)
    out.with_suffix(".md").write_text(f"Eval: {sources}\n\n{table}\n")
    print(table)
    _plot(costs, q, anchors, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.md')}, {out.with_suffix('.png')}")
    return 0


def _plot(costs: dict, q: dict, anchors: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(PANELS), figsize=(13, 4))
    names = sorted(costs, key=lambda n: costs[n]["gflop_per_s"])
    for ax, (key, label, lower_better) in zip(axes, PANELS, strict=True):
        for mode, marker in (("275", "o"), ("175", "^")):
            xs = [costs[n]["gflop_per_s"] for n in names]
            ys = [q.get(f"gacflow-{mode} ({n})", {}).get(key, math.nan) for n in names]
            ax.plot(xs, ys, marker=marker, color="darkred", label=f"gacflow {mode}")
            for x, y, n in zip(xs, ys, names, strict=True):
                if not math.isnan(y):
                    ax.annotate(n, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        for i, (s, m) in enumerate(sorted(anchors.items())):
            if key in m:
                ax.axhline(m[key], color=f"C{i}", linestyle="--", linewidth=1, label=s)
        if not any(key in m for m in q.values()):
            ax.text(0.5, 0.5, f"{label}: n/a on these clips", transform=ax.transAxes,
                    ha="center", fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_xlabel("decoder GFLOP per second of audio")
        ax.set_ylabel(label + (" (lower is better)" if lower_better else ""))
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
