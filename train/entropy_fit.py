"""Fit a bundle's entropy tables on the tokens of training audio and store them in it.

The tables only change how tokens are packed, not what they mean: the codec id, the
encoder exports and every decoder stay valid, and packets name their tables by a tag.
Fit on training data only; `--held-out` reports the rate on audio the tables never saw.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from gacflow.bundle import MANIFEST, Bundle, manifest_extras, write_manifest
from gacflow.entropy import EntropyModel
from gacflow.eval.data import ClipFilter, load_clips
from gacflow.model import Codec


def clip_tokens(codec: Codec, spec: str, keep: ClipFilter | None = None,
                max_files: int | None = None) -> list[np.ndarray]:
    """275-mode token ids of the clips of `spec` (default: every file, silence included,
    as streams without DTX send it)."""
    from tqdm import tqdm

    keep = keep or ClipFilter(min_seconds=0.2, min_speech=0.0)
    return [codec.encode(c.wav, "275").ids
            for c in tqdm(load_clips(spec, max_files, keep), desc=f"tokens of {spec}",
                          unit="file")]


def bits_per_frame(model: EntropyModel, sequences: list[np.ndarray]) -> dict[str, float]:
    """Ideal coded bits per frame of each mode (the base digits alone for 175)."""
    frames = sum(len(s) for s in sequences)
    base = model.layout.base_tokens
    return {
        "275": sum(model.code_bits(s, "275") for s in sequences) / frames,
        "175": sum(model.code_bits(base(s), "175") for s in sequences) / frames,
    }


def fit_entropy(bundle_dir: Path, data: list[str], held_out: list[str],
                smoothing: float = 4.0) -> dict[str, Any]:
    """Fit, report bits per frame (fitting and held-out data), write the manifest section."""
    bundle = Bundle.load(bundle_dir)
    codec = Codec.from_bundle(bundle.root)
    sequences = [s for spec in data for s in clip_tokens(codec, spec)]
    model = EntropyModel.fit(sequences, bundle.layout, smoothing)
    report: dict[str, Any] = {"fit_frames": sum(len(s) for s in sequences),
                              "fit": bits_per_frame(model, sequences)}
    for spec in held_out:
        report[spec] = bits_per_frame(model, clip_tokens(codec, spec))
    manifest = json.loads((bundle.root / MANIFEST).read_text())
    extra = manifest_extras(manifest)
    extra["entropy"] = {**model.to_manifest(), "fitted_on": data}
    write_manifest(bundle.root, manifest["codec"]["name"], bundle.codec_id, bundle.layout,
                   manifest["model"], extra)
    report["tag"] = f"{model.tag:02x}"
    return report


def print_report(report: dict[str, Any]) -> None:
    print(f"entropy tables {report['tag']} fitted on {report['fit_frames']} frames")
    print("| data | 275 mode bit/frame (bit/s) | 175 mode bit/frame (bit/s) |")
    print("|---|---|---|")
    for name, r in report.items():
        if isinstance(r, dict):
            print(f"| {name} | {r['275']:.2f} ({r['275'] * 25:.0f}) "
                  f"| {r['175']:.2f} ({r['175'] * 25:.0f}) |")
