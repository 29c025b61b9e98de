"""Voice code: a few bits, sent now and then, that tell the receiver what the speaker sounds like.

The 25 Hz tokens are trained to carry *what* is said (phoneme CTC); they carry little of
*who* says it, so an unseen voice comes out as the training voices' average timbre. The
voice code closes that gap for 24 bits per stream instead of more bits per frame:

- statistic: the long-term average log-mel spectrum of the stream, each 10 ms frame
  weighted by its power (loud voiced frames dominate, silence counts for nothing), with
  the frame's mean level removed (gain-invariant). It is a running sum, so the edge can
  update it frame by frame and whole-file and streaming encoding agree exactly.
- projection: a fixed PCA basis fitted on training audio of many voices (stored in the
  bundle manifest, so edge and receiver agree), scaled to unit variance per component.
- quantizer: each component clipped to +-RANGE and rounded to 2**bits levels.

The edge computes it in NumPy from the features it already has (no model, no torch).
Two kinds, named by the bundle manifest's `voice.kind`:

- `pca` (default of older manifests): a PCA basis fitted on training voices; a decoder
  trained with `voice_dims > 0` reads the dequantized code as a global condition and
  renders the average voice when no code has arrived (code = zeros).
- `envelope`: the low DCT coefficients of the statistic (frames weighted by the square
  root of their power, so fricatives count too), fine enough to rebuild the sender's
  long-term spectral envelope; the receiver matches its decoded audio to it with a
  static EQ (`timbre.py`). No decoder training: it works with any decoder of the codec.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .bitstream import pack_bits, unpack_bits
from .errors import BitstreamError, BundleError
from .spec import N_MELS

VOICE_KINDS = ("pca", "envelope")
ENVELOPE_WEIGHTING = 0.5  # envelope codes: frames weigh sqrt(power), so fricatives count


@dataclass(frozen=True)
class VoiceSpec:
    """How a bundle turns log-mel statistics into a voice code, and back into decoder input."""

    mean: np.ndarray  # [N_MELS] average statistic of the training audio
    basis: np.ndarray  # [dims, N_MELS] orthonormal PCA directions
    scale: np.ndarray  # [dims] std of each component on the training audio
    bits: int = 3
    range: float = 2.0  # components are clipped to +-range standard deviations
    kind: str = "pca"  # "pca": decoder condition; "envelope": receiver EQ (module docstring)
    weighting: float = 1.0  # frames weigh power**weighting in the statistic

    @property
    def dims(self) -> int:
        return int(self.basis.shape[0])

    @property
    def levels(self) -> int:
        return 1 << self.bits

    @property
    def payload_bytes(self) -> int:
        return (self.dims * self.bits + 7) // 8

    def quantize(self, stat: np.ndarray) -> np.ndarray:
        """Statistic [N_MELS] -> level indices [dims] in 0..levels-1."""
        z = self.basis @ (np.asarray(stat, np.float64) - self.mean) / self.scale
        unit = (np.clip(z, -self.range, self.range) + self.range) / (2 * self.range)
        return np.rint(unit * (self.levels - 1)).astype(np.int64)

    def dequantize(self, idx: np.ndarray | None) -> np.ndarray:
        """Level indices -> decoder condition [dims] in [-1, 1]; None -> zeros (no code yet)."""
        if idx is None:
            return np.zeros(self.dims, np.float32)
        i = np.asarray(idx, np.float32)
        return (i / (self.levels - 1) * 2.0 - 1.0).astype(np.float32)

    def reconstruct(self, idx: np.ndarray) -> np.ndarray:
        """Level indices -> the statistic [N_MELS] they stand for (envelope codes)."""
        z = self.dequantize(idx).astype(np.float64) * self.range * self.scale
        return self.mean + self.basis.T @ z

    def to_bytes(self, idx: np.ndarray) -> bytes:
        return pack_bits(np.asarray(idx, np.int64), self.bits)

    def from_bytes(self, data: bytes) -> np.ndarray:
        """Packed code -> level indices; wrong length is a clear error."""
        if len(data) != self.payload_bytes:
            raise BitstreamError(
                f"voice code has {len(data)} bytes, this codec's is {self.payload_bytes}"
            )
        return unpack_bits(data, self.dims, self.bits)

    def to_manifest(self) -> dict[str, Any]:
        # pca manifests keep their old form: the codec id hashes this section
        extra: dict[str, Any] = {"statistic": "power-weighted mean log-mel, frame level removed"}
        if self.kind != "pca":
            extra = {"kind": self.kind, "weighting": self.weighting,
                     "statistic": f"mean log-mel, frames weighted by power**{self.weighting:g}, "
                                  "frame level removed"}
        return {
            **extra,
            "bits": self.bits,
            "range": self.range,
            "mean": [round(float(v), 6) for v in self.mean],
            "basis": [[round(float(v), 6) for v in row] for row in self.basis],
            "scale": [round(float(v), 6) for v in self.scale],
        }

    @classmethod
    def from_manifest(cls, raw: dict[str, Any]) -> VoiceSpec:
        try:
            spec = cls(
                mean=np.asarray(raw["mean"], np.float64),
                basis=np.asarray(raw["basis"], np.float64),
                scale=np.asarray(raw["scale"], np.float64),
                bits=int(raw["bits"]),
                range=float(raw["range"]),
                kind=str(raw.get("kind", "pca")),
                weighting=float(raw.get("weighting", 1.0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BundleError(f"manifest voice section is malformed: {exc}") from exc
        if (spec.mean.shape != (N_MELS,) or spec.basis.ndim != 2
                or spec.basis.shape[1] != N_MELS or spec.scale.shape != (spec.dims,)
                or not 1 <= spec.bits <= 8 or np.any(spec.scale <= 0)
                or spec.kind not in VOICE_KINDS or not 0.0 < spec.weighting <= 1.0):
            raise BundleError("manifest voice section has the wrong shapes or values")
        return spec


class VoiceStats:
    """Running weighted mean of level-free log-mel frames (exact under any chunking); each
    frame weighs power**weighting (1: loud vowels dominate; 0.5: quieter sounds count)."""

    def __init__(self, weighting: float = 1.0) -> None:
        self.weighting = weighting
        self.reset()

    def reset(self) -> None:
        self.weight = 0.0
        self.total = np.zeros(N_MELS, np.float64)
        self.ref: float | None = None  # level the weights are taken relative to

    def push(self, mel: np.ndarray) -> None:
        """Add log-mel frames [n, N_MELS]."""
        x = np.asarray(mel, np.float64).reshape(-1, N_MELS)
        if not len(x):
            return
        level = x.mean(axis=1)
        top = float(level.max())
        if self.ref is None:
            self.ref = top
        elif top > self.ref:  # rescale past sums to the new reference: no overflow, same mean
            shrink = np.exp(self.weighting * (self.ref - top))
            self.weight *= shrink
            self.total *= shrink
            self.ref = top
        w = np.exp(self.weighting * (level - self.ref))
        self.weight += float(w.sum())
        self.total += w @ (x - level[:, None])

    def mean(self) -> np.ndarray | None:
        """The statistic so far, or None before any audio."""
        if self.weight <= 0.0:
            return None
        return self.total / self.weight


def voice_statistic(mel: np.ndarray, weighting: float = 1.0) -> np.ndarray | None:
    """The statistic of a whole log-mel sequence [n, N_MELS] (None if empty)."""
    stats = VoiceStats(weighting)
    stats.push(mel)
    return stats.mean()


def fit_voice_spec(stats: np.ndarray, dims: int = 8, bits: int = 3,
                   range_: float = 2.0) -> VoiceSpec:
    """PCA of statistics [n, N_MELS] from many voices: the directions voices differ most in."""
    x = np.asarray(stats, np.float64)
    if x.ndim != 2 or x.shape[1] != N_MELS or len(x) <= dims:
        raise ValueError(f"need more than {dims} statistics of {N_MELS} bins, got {x.shape}")
    mean = x.mean(axis=0)
    _, sing, vt = np.linalg.svd(x - mean, full_matrices=False)
    scale = sing[:dims] / np.sqrt(len(x) - 1)
    return VoiceSpec(mean=mean, basis=vt[:dims], scale=np.maximum(scale, 1e-6), bits=bits,
                     range=range_)


def dct_basis(count: int) -> np.ndarray:
    """Orthonormal DCT-II rows 1..count over the mel bins (row 0, the mean, is always 0 in a
    level-free statistic): smooth shapes from spectral tilt to formant-scale detail."""
    n = np.arange(N_MELS)
    k = np.arange(1, count + 1)[:, None]
    return np.sqrt(2.0 / N_MELS) * np.cos(np.pi * k * (2 * n + 1) / (2 * N_MELS))


def fit_envelope_spec(stats: np.ndarray, coefficients: int = 16, bits: int = 4,
                      range_: float = 4.0,
                      weighting: float = ENVELOPE_WEIGHTING) -> VoiceSpec:
    """Envelope code from statistics [n, N_MELS] of training audio (taken with `weighting`):
    their mean and per-coefficient spread set the quantizer, the basis is the fixed DCT."""
    x = np.asarray(stats, np.float64)
    if x.ndim != 2 or x.shape[1] != N_MELS or len(x) < 2:
        raise ValueError(f"need at least 2 statistics of {N_MELS} bins, got {x.shape}")
    basis = dct_basis(coefficients)
    mean = x.mean(axis=0)
    scale = (x - mean) @ basis.T
    return VoiceSpec(mean=mean, basis=basis, scale=np.maximum(scale.std(axis=0), 1e-3),
                     bits=bits, range=range_, kind="envelope", weighting=weighting)
