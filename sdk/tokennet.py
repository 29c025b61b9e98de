"""A small neural context model of the next token, in integer arithmetic.

Why integers: the edge codes with it and the receiver decodes with it, on different CPUs;
one count that differs by one between them desynchronises the arithmetic coder for the
rest of the packet. Every step here is int64 NumPy arithmetic (exact and independent of
summation order), with power-of-two scales and floor shifts, and the softmax reads a
fixed table whose digest is checked when the module loads.

The net (trained by train/lm_fit.py with torch, stored int8 in the bundle manifest):

    h   = relu(W1 . sum_k E[k, digit of frame t-1-k] + b1)      # the last K frames
    a_j = h + sum_{i<j} I[i, digit i of frame t]                 # digits already coded
    p_j = softmax(W3_j . relu(W2_j . a_j + b2_j) + b3_j)         # digit j of frame t

A history slot before the packet's first frame, or on a DTX gap, holds the digit's
"start" value (its level count). Cost: since W2 is linear, h . W2 is one product per frame
and the earlier digits' part a precomputed table, so a digit costs a few small NumPy
calls.
"""

from __future__ import annotations

import base64
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import BundleError

FRAC = 8  # activations are fixed point with FRAC fractional bits
EXP_STEPS = 4096  # softmax table: exp(-x / 2**FRAC) for x in [0, EXP_STEPS)
EXP_ONE = 1 << 16
_EXP = np.array([round(EXP_ONE * math.exp(-x / (1 << FRAC))) for x in range(EXP_STEPS)],
                np.int64)
_EXP_DIGEST = "d4fed58ec38b4f52"  # first 16 hex of sha256 of the table (little-endian int64)
if hashlib.sha256(_EXP.astype("<i8").tobytes()).hexdigest()[:16] != _EXP_DIGEST:
    raise ImportError("gacflow.tokennet: this platform's exp() gives another softmax table; "
                      "the token model would not decode what other machines code")

LAYERS = ("emb", "w1", "b1", "inner", "w2", "b2", "w3", "b3")
BIASES = (("b1", "w1"), ("b2", "w2"), ("b3", "w3"))  # a bias is kept at its layer's scale


_EXP_LIST = _EXP.tolist()


def _shapes(levels: tuple[int, ...], history: int, hidden: int
            ) -> dict[str, tuple[int, ...]]:
    """Each layer's shape for a layout, a history length and a width (heads stacked)."""
    n, m, h = len(levels), max(levels), hidden
    return {"emb": (history * sum(x + 1 for x in levels), h), "w1": (h, h), "b1": (h,),
            "inner": (sum(levels), h), "w2": (n, h, h), "b2": (n, h), "w3": (n, h, m),
            "b3": (n, m)}


def counts_from_logits(logits: list[int], total: int) -> list[int]:
    """Integer logits (FRAC fractional bits) -> counts >= 1 summing to `total`: exact
    (Python integers; a digit has a handful of levels, so no NumPy call pays off)."""
    top = max(logits)
    q = [_EXP_LIST[min(top - x, EXP_STEPS - 1)] for x in logits]
    n, qs = len(q), sum(q)
    c = [1 + v * (total - n) // qs for v in q]
    c[q.index(max(q))] += total - sum(c)
    return c


@dataclass(frozen=True, eq=False)
class ContextNet:
    """Integer weights: `q[name]` int arrays, `shift[name]` their power-of-two scales
    (value = q / 2**shift); heads are stacked over digits in w2/b2/w3/b3."""

    levels: tuple[int, ...]
    history: int
    hidden: int
    q: dict[str, np.ndarray]
    shift: dict[str, int]
    _offsets: np.ndarray = field(init=False, repr=False)
    _inner_w2: list[np.ndarray] = field(init=False, repr=False)
    _w2: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        lv, k, h = self.levels, self.history, self.hidden
        for name, shape in _shapes(lv, k, h).items():
            a = self.q.get(name)
            if a is None or a.shape != shape:
                raise BundleError(f"token net: {name} has shape "
                                  f"{None if a is None else a.shape}, expected {shape}")
            if not 0 <= self.shift.get(name, -1) <= 40:
                raise BundleError(f"token net: {name} scale out of range")
        for b, w in BIASES:
            if self.shift[b] != FRAC + self.shift[w]:
                raise BundleError(f"token net: {b} is not at the scale of {w}")
        # row of E for (history slot k, digit j, value v): offsets[k, j] + v
        per_frame = np.cumsum([0, *[n + 1 for n in lv]])[:-1]
        offsets = np.arange(k)[:, None] * sum(n + 1 for n in lv) + per_frame[None, :]
        object.__setattr__(self, "_offsets", offsets.astype(np.int64))
        # W2 is linear, so (h + inner) . W2 = h . W2 + inner . W2, exactly in integers: the
        # second term, for every combination of a frame's earlier digits, is a table
        inner_at = np.cumsum([0, *lv])[:-1]
        tables = []
        for j in range(len(lv)):
            combos = np.zeros((1, h), np.int64)
            for i in range(j):  # earlier digits as a number, most significant first
                rows = self.q["inner"][inner_at[i]:inner_at[i] + lv[i]]
                combos = (combos[:, None, :] + rows[None, :, :]).reshape(-1, h)
            tables.append(self._shift_to(combos, self.shift["inner"], FRAC) @ self.q["w2"][j])
        object.__setattr__(self, "_inner_w2", tables)
        object.__setattr__(self, "_w2", np.concatenate(list(self.q["w2"]), 1))  # [H, D*H]

    # -- inference ---------------------------------------------------------------------
    def _shift_to(self, x: np.ndarray, have: int, want: int) -> np.ndarray:
        return x >> (have - want) if have >= want else x << (want - have)

    def frame_state(self, history: list[list[int]]) -> np.ndarray:
        """Per digit j, h . W2_j + b2_j for the next frame ([D, H]), from the digits of the
        frames before it (most recent last; fewer than K: start values)."""
        k = self.history
        vals = np.array(self.levels, np.int64)[None, :].repeat(k, 0)
        for slot, digits in enumerate(reversed(history[-k:])):
            vals[slot] = digits
        e = self.q["emb"][(self._offsets + vals).ravel()].sum(0)
        x = self._shift_to(e, self.shift["emb"], FRAC)
        y = x @ self.q["w1"] + self.q["b1"]  # scale FRAC + shift w1
        h = np.maximum(self._shift_to(y, FRAC + self.shift["w1"], FRAC), 0)
        return (h @ self._w2).reshape(len(self.levels), -1) + self.q["b2"]

    def digit_counts(self, state: np.ndarray, j: int, inner: int, total: int) -> list[int]:
        """Counts (sum `total`) of digit j of the frame, given its earlier digits (as one
        number, most significant first)."""
        z = state[j] + self._inner_w2[j][inner]
        z = np.maximum(self._shift_to(z, FRAC + self.shift["w2"], FRAC), 0)
        n = self.levels[j]
        logits = z @ self.q["w3"][j][:, :n] + self.q["b3"][j][:n]
        return counts_from_logits(
            self._shift_to(logits, FRAC + self.shift["w3"], FRAC).tolist(), total)

    # -- storage -----------------------------------------------------------------------
    def digest_bytes(self) -> bytes:
        parts = [f"{self.levels}/{self.history}/{self.hidden}".encode()]
        for name in LAYERS:
            parts += [bytes([self.shift[name]]), self.q[name].astype("<i4").tobytes()]
        return b"".join(parts)

    def to_manifest(self) -> dict[str, Any]:
        out: dict[str, Any] = {"history": self.history, "hidden": self.hidden, "layers": {}}
        for name in LAYERS:
            a = self.q[name]
            dtype = "<i1" if name.startswith(("w", "emb", "inner")) else "<i4"
            out["layers"][name] = {"shift": self.shift[name], "dtype": dtype,
                                   "data": base64.b64encode(a.astype(dtype).tobytes()).decode()}
        return out

    @classmethod
    def from_manifest(cls, raw: Any, levels: tuple[int, ...]) -> ContextNet:
        try:
            k, h = int(raw["history"]), int(raw["hidden"])
            if not (1 <= k <= 32 and 1 <= h <= 1024):
                raise ValueError(f"history {k} / hidden {h} out of range")
            q, shift = {}, {}
            for name in LAYERS:
                layer = raw["layers"][name]
                if layer["dtype"] not in ("<i1", "<i4"):
                    raise ValueError(f"{name}: dtype {layer['dtype']!r}")
                q[name] = np.frombuffer(base64.b64decode(layer["data"], validate=True),
                                        layer["dtype"]).astype(np.int64)
                shift[name] = int(layer["shift"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"token net unreadable ({exc})") from exc
        for name, shape in _shapes(tuple(levels), k, h).items():
            if q[name].size != math.prod(shape):
                raise BundleError(f"token net: {name} has {q[name].size} values, expected "
                                  f"{math.prod(shape)}")
            q[name] = q[name].reshape(shape)
        return cls(tuple(levels), k, h, q, shift)

    @classmethod
    def from_float(cls, levels: tuple[int, ...], history: int,
                   weights: dict[str, np.ndarray]) -> ContextNet:
        """Quantize trained float weights (the same layout as `q`): int8 weight tensors,
        each with the largest power-of-two scale that fits; biases int32 at the scale of
        the products they are added to."""
        q, shift = {}, {}
        for name in ("emb", "inner", "w1", "w2", "w3"):
            w = np.asarray(weights[name], np.float64)
            peak = float(np.abs(w).max()) or 1.0
            s = int(np.clip(math.floor(math.log2(127 / peak)), 0, 24))
            q[name], shift[name] = np.clip(np.round(w * 2 ** s), -127, 127).astype(np.int64), s
        for name, of in BIASES:
            s = FRAC + shift[of]
            q[name] = np.round(np.asarray(weights[name], np.float64) * 2 ** s).astype(np.int64)
            shift[name] = s
        return cls(tuple(levels), history, int(q["w1"].shape[0]), q, shift)
