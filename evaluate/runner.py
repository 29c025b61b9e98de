"""Run every system on every clip and score the outputs: one record per (clip, system)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gacflow.errors import GacflowError
from gacflow.spec import SAMPLE_RATE

from .data import Clip
from .metrics import Metric
from .systems import System

MAX_LAG = SAMPLE_RATE * 60 // 1000  # Codec 2 1200 has 40 ms frames; more delay is a fault


@dataclass
class Record:
    """One system on one clip: size, bitrate, metric values (None = n/a, NaN = failed)."""

    clip: str
    system: str
    seconds: float
    bytes: int
    nominal_bps: float
    lag_ms: float
    run_seconds: float
    scores: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None

    @property
    def bps(self) -> float:
        return self.bytes * 8 / self.seconds if self.seconds else 0.0


def _band_envelopes(wav: np.ndarray, hop: int) -> np.ndarray:
    """Log magnitude STFT [frames, bins] with a short hop: phase-free, so vocoders align too."""
    win = 512
    wav = np.pad(wav.astype(np.float32), (win // 2, win // 2))
    n = 1 + (len(wav) - win) // hop
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
    spec = np.abs(np.fft.rfft(wav[idx] * np.hanning(win).astype(np.float32), axis=1))
    env = np.log(spec[:, 4:160] + 1e-4)  # ~100 Hz - 5 kHz, where every anchor has energy
    return env - env.mean(axis=0)


def estimate_lag(ref: np.ndarray, deg: np.ndarray, max_lag: int = MAX_LAG) -> int:
    """Delay of `deg` behind `ref` in samples, from band-envelope cross-correlation.

    Generative decoders and parametric codecs (Codec 2) do not keep the waveform's phase,
    so waveform cross-correlation is unreliable; spectral envelopes line up regardless.
    Resolution is one hop (2 ms), well inside a STOI frame (25.6 ms).
    """
    hop = SAMPLE_RATE // 500
    a, b = _band_envelopes(ref, hop), _band_envelopes(deg, hop)
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    span = max_lag // hop
    best, best_lag = -np.inf, 0
    for k in range(-span, span + 1):
        x, y = (a[: n - k], b[k:]) if k >= 0 else (a[-k:], b[: n + k])
        c = float(np.sum(x * y)) / max(len(x), 1)
        if c > best:
            best, best_lag = c, k
    return best_lag * hop


def align(ref: np.ndarray, deg: np.ndarray) -> tuple[np.ndarray, int]:
    """Undo a small constant delay so intrusive metrics compare matching frames."""
    lag = estimate_lag(ref, deg)
    if lag > 0:
        deg = np.concatenate([deg[lag:], np.zeros(lag, np.float32)])
    elif lag < 0:
        deg = np.concatenate([np.zeros(-lag, np.float32), deg[:lag]])
    return deg, lag


def evaluate(
    clips: list[Clip],
    systems: list[System],
    metrics: list[Metric],
    progress: Callable[[str], None] | None = None,
) -> list[Record]:
    """Every system on every clip; a system failing on one clip is recorded, not fatal."""
    live = [m for m in metrics if m.available()]
    records = []
    for clip in clips:
        ref = clip.wav.astype(np.float32)
        for system in systems:
            t0 = time.perf_counter()
            try:
                coded = system.run(ref)
            except GacflowError as exc:
                records.append(Record(clip.name, system.name, clip.seconds, 0,
                                      system.nominal_bps, 0.0, 0.0, error=str(exc)))
                if progress:
                    progress(system.name)
                continue
            run_s = time.perf_counter() - t0
            deg, lag = align(ref, coded.wav)
            rec = Record(clip.name, system.name, clip.seconds, coded.bytes, system.nominal_bps,
                         lag * 1000 / SAMPLE_RATE, run_s)
            for m in live:
                try:
                    rec.scores[m.key] = m.score(ref, deg, clip)
                except Exception:  # one odd clip must not end a long evaluation
                    rec.scores[m.key] = math.nan
            records.append(rec)
            if progress:
                progress(system.name)
    return records
