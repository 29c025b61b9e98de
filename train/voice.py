"""Voice codes in training: fit the bundle's PCA basis on a corpus, and condition batches;
fit a bundle's envelope code (receiver EQ, no training) on the same statistics.

The basis is fitted once per corpus (`gacflow-train voice-fit`), on whole-file statistics
(what a receiver sees after a few seconds of a stream), and then fixed: the edge computes
the code with it in NumPy, so it must not move while decoders learn to read it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from gacflow.errors import ConfigError
from gacflow.features import log_mel
from gacflow.voice import (
    ENVELOPE_WEIGHTING,
    VoiceSpec,
    fit_envelope_spec,
    fit_voice_spec,
    voice_statistic,
)

MIN_FILE_SECONDS = 0.5


def corpus_statistics(corpus: Path, split: str = "train",
                      weighting: float = 1.0) -> tuple[np.ndarray, list[str]]:
    """One voice statistic per file of a corpus shard (files shorter than 0.5 s skipped)."""
    from tqdm import tqdm

    from gacflow.eval.data import ClipFilter, corpus_clips

    clips = corpus_clips(corpus, split, None, ClipFilter(MIN_FILE_SECONDS, min_speech=0.0))
    stats, speakers = [], []
    for clip in tqdm(clips, desc=f"voice statistics {corpus.name}", unit="file"):
        stat = voice_statistic(log_mel(clip.wav), weighting)
        if stat is not None:
            stats.append(stat)
            speakers.append(clip.name.split("/")[0])
    return np.stack(stats), speakers


def fit(corpus: Path, out: Path, dims: int = 8, bits: int = 3) -> VoiceSpec:
    """Fit and save the basis (JSON, the manifest's `voice` section) for a corpus."""
    stats, speakers = corpus_statistics(corpus)
    spec = fit_voice_spec(stats, dims, bits)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(spec.to_manifest(), indent=1))
    print(f"{out}: {dims} components x {bits} bits from {len(stats)} files, "
          f"{len(set(speakers))} speakers")
    return spec


def fit_envelope(bundle: Path, corpus: Path, coefficients: int = 16, bits: int = 4) -> str:
    """Give `bundle` an envelope voice code fitted on `corpus`'s training files: the edge
    starts sending it and receivers equalise to it (gacflow/timbre.py). New codec id."""
    from gacflow.export.bundle_writer import set_voice

    stats, speakers = corpus_statistics(corpus, weighting=ENVELOPE_WEIGHTING)
    spec = fit_envelope_spec(stats, coefficients, bits)
    codec_id = set_voice(bundle, spec.to_manifest())
    print(f"{bundle}: envelope code of {coefficients} coefficients x {bits} bits "
          f"({spec.payload_bytes} bytes) from {len(stats)} files, {len(set(speakers))} "
          f"speakers; codec id {codec_id}")
    return codec_id


def load_spec(path: str | Path) -> VoiceSpec:
    try:
        return VoiceSpec.from_manifest(json.loads(Path(path).read_text()))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"voice basis {path}: {exc}") from exc


def batch_voice(wav: torch.Tensor, spec: VoiceSpec, drop: float,
                rng: np.random.Generator) -> torch.Tensor:
    """Quantized voice condition [B, dims] of each crop, as a receiver would get it; a share
    `drop` of crops get zeros, so the decoder also renders streams whose code is not in yet."""
    rows = []
    for row in wav.detach().cpu().numpy():
        stat = voice_statistic(log_mel(row), spec.weighting)
        code = None if stat is None or rng.random() < drop else spec.quantize(stat)
        rows.append(spec.dequantize(code))
    return torch.from_numpy(np.stack(rows)).to(wav.device)
