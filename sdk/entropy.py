"""Entropy coding of token frames with a context model that the bundle carries.

Why: consecutive 40 ms frames are far from independent -- each FSQ digit keeps its
previous value about 40 % of the time, where chance is 25 % -- so fixed-width packing
wastes bits. Each digit j of frame t is coded against P(digit | the same digit of frame
t-1, digits 0..j-1 of frame t): base digits first, so a 175-mode frame is coded with the
same tables as the first digits of a 275-mode frame. The previous digit is START for the
first frame of a packet and after a DTX gap, so every packet decodes on its own.

The tables are integer counts (summing to `TOTAL` per context), fitted offline on
training tokens (`gacflow-train entropy-fit`) and stored in the manifest's `entropy`
section: the single thing edge and receiver must share. Coded packets name the tables by
a one-byte `tag`, so a receiver holding other tables refuses them instead of misreading.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np

from .arith import ArithmeticDecoder, ArithmeticEncoder
from .errors import BundleError
from .fsq import tokens_to_indices
from .spec import SILENT, TokenLayout

FORMAT = "prev-digit/1"
TOTAL = 1 << 12


def table_shape(levels: tuple[int, ...], j: int) -> tuple[int, int, int]:
    """[previous digit or START, earlier digits of the frame (mixed radix), digit]."""
    return (levels[j] + 1, prod(levels[:j]), levels[j])


def _symbols(tokens: np.ndarray, levels: tuple[int, ...]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What is coded for each active frame (SILENT = not sent) and digit j, each [A, D]:
    the previous frame's digit (START = L_j for a packet's first frame and after a gap),
    the mixed-radix value of the frame's earlier digits, and the digit itself."""
    tokens = np.asarray(tokens, np.int64)
    active = tokens != SILENT
    idx = tokens_to_indices(np.where(active, tokens, 0), levels)
    start = np.asarray(levels, np.int64)
    prev = np.empty_like(idx)
    prev[:1] = start
    prev[1:] = np.where(active[:-1, None], idx[:-1], start)
    inner = np.zeros_like(idx)
    for j in range(1, idx.shape[1]):
        inner[:, j] = inner[:, j - 1] * levels[j - 1] + idx[:, j - 1]
    return prev[active], inner[active], idx[active]


def _quantize(p: np.ndarray, total: int) -> np.ndarray:
    """Probabilities [..., L] -> integer counts >= 1 summing to `total` (largest remainders)."""
    n = p.shape[-1]
    raw = p / p.sum(-1, keepdims=True) * (total - n)
    base = np.floor(raw).astype(np.int64)
    short = (total - n) - base.sum(-1, keepdims=True)
    ranks = np.argsort(np.argsort(-(raw - base), axis=-1, kind="stable"), axis=-1)
    return base + (ranks < short) + 1


@dataclass(frozen=True, eq=False)
class EntropyModel:
    """Integer context tables for a token layout; codes and decodes the active frames."""

    layout: TokenLayout
    counts: tuple[np.ndarray, ...]
    _cum: list[list[list[list[int]]]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        levels = self.layout.all_levels
        _check_mode_prefix(self.layout)
        if len(self.counts) != len(levels):
            raise BundleError(f"entropy model has {len(self.counts)} tables, the token "
                              f"layout has {len(levels)} digits")
        for j, c in enumerate(self.counts):
            if c.shape != table_shape(levels, j):
                raise BundleError(f"entropy table {j} has shape {c.shape}, the layout needs "
                                  f"{table_shape(levels, j)}")
            if c.min() < 1 or np.any(c.sum(-1) != TOTAL):
                raise BundleError(f"entropy table {j}: counts must be >= 1 and sum to {TOTAL}")
        cum = [np.concatenate([np.zeros(c.shape[:-1] + (1,), np.int64), np.cumsum(c, -1)], -1)
               for c in self.counts]
        object.__setattr__(self, "_cum", [c.tolist() for c in cum])

    # -- identity and storage ---------------------------------------------------------
    @property
    def digest(self) -> str:
        h = hashlib.sha256(FORMAT.encode())
        for c in self.counts:
            h.update(c.astype("<u2").tobytes())
        return h.hexdigest()

    @property
    def tag(self) -> int:
        """One byte that names these tables in every coded packet."""
        return int(self.digest[:2], 16)

    def to_manifest(self) -> dict[str, Any]:
        blob = b"".join(c.astype("<u2").tobytes() for c in self.counts)
        return {"format": FORMAT, "levels": list(self.layout.all_levels), "total": TOTAL,
                "counts": base64.b64encode(blob).decode("ascii"), "digest": self.digest[:16]}

    @classmethod
    def from_manifest(cls, raw: Any, layout: TokenLayout) -> EntropyModel:
        """Validate the manifest's `entropy` section; BundleError with the reason if bad."""
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise BundleError(f"entropy section: format is not {FORMAT!r}")
        if raw.get("total") != TOTAL or raw.get("levels") != list(layout.all_levels):
            raise BundleError(f"entropy section: made for levels {raw.get('levels')} and total "
                              f"{raw.get('total')}, this codec has {list(layout.all_levels)} "
                              f"and {TOTAL}")
        try:
            blob = np.frombuffer(base64.b64decode(raw["counts"], validate=True), "<u2")
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"entropy section: counts are not base64 ({exc})") from exc
        shapes = [table_shape(layout.all_levels, j) for j in range(len(layout.all_levels))]
        sizes = [prod(s) for s in shapes]
        if len(blob) != sum(sizes):
            raise BundleError(f"entropy section: {len(blob)} counts, the layout needs "
                              f"{sum(sizes)}")
        ends = np.cumsum(sizes)
        counts = tuple(blob[e - n:e].astype(np.int64).reshape(s)
                       for e, n, s in zip(ends, sizes, shapes, strict=True))
        model = cls(layout, counts)
        if raw.get("digest") not in (None, model.digest[:16]):
            raise BundleError("entropy section: counts do not match their digest")
        return model

    # -- fitting ----------------------------------------------------------------------
    @classmethod
    def fit(cls, sequences: Iterable[np.ndarray], layout: TokenLayout,
            smoothing: float = 4.0) -> EntropyModel:
        """Tables from 275-mode token sequences (SILENT marks DTX frames). Each context's
        counts are smoothed towards P(digit | earlier digits), itself towards the digit's
        overall frequency, so contexts unseen in training still get sensible odds."""
        levels = layout.all_levels
        raw = [np.zeros(table_shape(levels, j)) for j in range(len(levels))]
        for seq in sequences:
            prev, inner, digits = _symbols(seq, levels)
            for j in range(len(levels)):
                np.add.at(raw[j], (prev[:, j], inner[:, j], digits[:, j]), 1)
        counts = []
        for c in raw:
            marginal = (c.sum((0, 1)) + 1) / (c.sum() + c.shape[-1])
            by_inner = c.sum(0)
            p_inner = (by_inner + smoothing * marginal) / (
                by_inner.sum(-1, keepdims=True) + smoothing)
            p = (c + smoothing * p_inner[None]) / (c.sum(-1, keepdims=True) + smoothing)
            counts.append(_quantize(p, TOTAL))
        return cls(layout, tuple(counts))

    # -- coding -----------------------------------------------------------------------
    def encode(self, tokens: np.ndarray, mode: str) -> bytes:
        """Code the active frames (SILENT = not sent) of one packet (v1 byte form)."""
        if not np.any(np.asarray(tokens) != SILENT):
            return b""
        enc = ArithmeticEncoder()
        self._encode_into(enc, tokens, mode)
        return enc.finish()

    def encode_bits(self, tokens: np.ndarray, mode: str) -> list[int]:
        """The self-ending code of the active frames, as bits (v2 packets)."""
        enc = ArithmeticEncoder()
        self._encode_into(enc, tokens, mode)
        return enc.finish_bits()

    def _encode_into(self, enc: ArithmeticEncoder, tokens: np.ndarray, mode: str) -> None:
        prev, inner, digits = _symbols(tokens, self.layout.mode(mode).levels)
        for p_row, i_row, d_row in zip(prev.tolist(), inner.tolist(), digits.tolist(),
                                        strict=True):
            for j, (p, i, d) in enumerate(zip(p_row, i_row, d_row, strict=True)):
                cum = self._cum[j][p][i]
                enc.encode(cum[d], cum[d + 1], TOTAL)

    def decode(self, data: bytes, active: np.ndarray, mode: str) -> np.ndarray:
        """Token ids of one packet's frames (SILENT where `active` is False)."""
        return self._decode_from(ArithmeticDecoder(data), active, mode)

    def decode_bits(self, bits: list[int], start: int, active: np.ndarray, mode: str
                    ) -> tuple[np.ndarray, int]:
        """Decode a v2 packet's code starting at bit `start`; also return its end bit."""
        dec = ArithmeticDecoder(bits, start)
        return self._decode_from(dec, active, mode), dec.end

    def _decode_from(self, dec: ArithmeticDecoder, active: np.ndarray, mode: str
                     ) -> np.ndarray:
        levels = self.layout.mode(mode).levels
        active = np.asarray(active, bool)
        out = np.full(len(active), SILENT, np.int64)
        start = list(levels)
        prev: list[int] = start
        for t in np.flatnonzero(active).tolist():
            if t == 0 or not active[t - 1]:
                prev = start
            digits, inner = [], 0
            for j, n in enumerate(levels):
                d = dec.decode(self._cum[j][prev[j]][inner])
                digits.append(d)
                inner = inner * n + d
            out[t] = inner
            prev = digits
        return out

    def code_bits(self, tokens: np.ndarray, mode: str) -> float:
        """Ideal code length (bits) of the active frames: what `encode` approaches."""
        prev, inner, d = _symbols(tokens, self.layout.mode(mode).levels)
        bits = 0.0
        for j in range(d.shape[1]):
            c = self.counts[j][prev[:, j], inner[:, j], d[:, j]]
            bits += float(np.sum(np.log2(TOTAL / c)))
        return bits


def _check_mode_prefix(layout: TokenLayout) -> None:
    for m in layout.modes.values():
        if layout.all_levels[: len(m.levels)] != m.levels:
            raise BundleError(f"mode {m.name}: its levels are not a prefix of the layout's")
