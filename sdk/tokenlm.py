"""A causal token language model for lossless entropy coding: adaptive tables mixed with
a longer static context (`TokenLM`, format mix-adaptive/1), or with a small integer neural
net over the last frames (`NeuralTokenLM`, mix-neural/1, the shipped one; docs/bitstream.md).

Each FSQ digit j of frame t is predicted by an even mixture of two models:

- adaptive (A): P(digit | the previous frame's digit j, the digits of frame t already
  coded), starting from a prior fitted offline and learning the stream as it is coded:
  every coded digit adds `inc` to its count, and a context whose total passes `limit` is
  halved. Why: the v1 tables (sdk/entropy.py) code an unseen speaker at ~8.7 bit/frame,
  tables fitted on that very speaker reach ~8.1; what separates them is the speaker.
- static (B): the same digits plus the previous frame's whole base token, and (in the
  275 mode) the previous frame's whole token, backed off to shorter contexts where
  training saw a context fewer than `min_count` times. Why: speech tokens move together
  across digits, which the per-digit context cannot see.

Both are integer counts and the mixture is integer too (count_A x 2**12 + count_B x
total_A), so encoder and decoder compute identical tables on ARM and x86; no floating
point touches the coder.

The state restarts at every packet, so each packet still decodes on its own (a lost
packet costs nothing else); a .gac file is one packet, so it adapts over the whole file.
The prior lives in the bundle manifest's `entropy` section (format `FORMAT`), next to the
v1 tables (`legacy`) that version 1 packets and files were coded with.

Cost: two dict lookups, a few integer operations and one arithmetic-coder step per
digit; pure Python (bench/bench_bitrate.py measures it against the 1 % real-time budget).
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from math import log2, prod
from typing import Any

import numpy as np

from .arith import ArithmeticDecoder, ArithmeticEncoder
from .entropy import EntropyModel, _check_mode_prefix, _quantize, _symbols, table_shape
from .errors import BitstreamError, BundleError
from .spec import SILENT, TokenLayout
from .tokennet import ContextNet

FORMAT = "mix-adaptive/1"
PRIOR = 256  # an adaptive context's prior counts sum to this
INC = 24  # added to a digit's count each time it is coded (prior weight ~ 10 digits)
LIMIT = 1 << 13  # an adaptive context whose total passes this is halved
STATIC_TOTAL = 1 << 12  # a static context's counts sum to this
MIN_COUNT = 6  # static long contexts seen fewer times in training are not stored

Table = dict[int, tuple[int, ...]]


@dataclass(frozen=True, eq=False)
class TokenLM:
    """Adaptive x static context model over a token layout (module docstring)."""

    layout: TokenLayout
    prior: tuple[np.ndarray, ...]  # per digit j: [prev digit or START, earlier digits, L_j]
    # per digit j: (context + previous base token -> counts, + previous token -> counts)
    static: tuple[tuple[Table, Table], ...]
    inc: int = INC
    limit: int = LIMIT
    legacy: EntropyModel | None = None  # the v1 tables, for version 1 packets and files
    previous: tuple[Any, ...] = ()  # the models a refit replaced: old packets still read
    _rows: list[list[list[list[int]]]] = field(init=False, repr=False)
    _fallback: list[list[list[list[int]]]] = field(init=False, repr=False)
    _digest: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        levels = self.layout.all_levels
        _check_mode_prefix(self.layout)
        if len(self.prior) != len(levels) or len(self.static) != len(levels):
            raise BundleError(f"token model has {len(self.prior)}/{len(self.static)} tables, "
                              f"the token layout has {len(levels)} digits")
        for j, c in enumerate(self.prior):
            if c.shape != table_shape(levels, j):
                raise BundleError(f"token model table {j} has shape {c.shape}, the layout "
                                  f"needs {table_shape(levels, j)}")
            if c.min() < 1 or np.any(c.sum(-1) != PRIOR):
                raise BundleError(f"token model table {j}: counts must be >= 1 and sum to "
                                  f"{PRIOR}")
            for table in self.static[j]:
                for row in table.values():
                    if len(row) != levels[j] or min(row) < 1 or sum(row) != STATIC_TOTAL:
                        raise BundleError(f"token model static table {j}: a row is not "
                                          f"{levels[j]} counts >= 1 summing to {STATIC_TOTAL}")
        if not 1 <= self.inc <= 1024 or not PRIOR * 2 <= self.limit <= 1 << 15:
            raise BundleError(f"token model: inc {self.inc} / limit {self.limit} out of range")
        object.__setattr__(self, "_rows", [c.tolist() for c in self.prior])
        # where no long context is stored, B falls back to the prior (rescaled)
        object.__setattr__(self, "_fallback", [
            _quantize(c.astype(np.float64), STATIC_TOTAL).tolist() for c in self.prior])
        object.__setattr__(self, "_digest", self._compute_digest())  # tag: every packet

    # -- contexts ---------------------------------------------------------------------
    @property
    def radices(self) -> tuple[int, int]:
        """Values of the long contexts: previous base token or START, previous whole
        token or START (START too where the mode does not send it)."""
        return prod(self.layout.base_levels) + 1, prod(self.layout.all_levels) + 1

    def contexts(self, tokens: np.ndarray, mode: str
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per active frame and digit [A, D]: previous digit (or START), earlier digits,
        digit, and the two long-context keys of the static model."""
        levels = self.layout.mode(mode).levels
        tokens = np.asarray(tokens, np.int64)
        active = tokens != SILENT
        prev, inner, digits = _symbols(tokens, levels)
        rb, rt = self.radices
        before = np.r_[SILENT, tokens[:-1]][active]
        gap = (before == SILENT)[:, None]
        enh = prod(levels[len(self.layout.base_levels):])
        pbase = np.where(gap, rb - 1, (before // enh)[:, None])
        whole = len(levels) == len(self.layout.all_levels)
        ptok = np.where(gap | (not whole), rt - 1, before[:, None])
        short = inner * (np.asarray(levels, np.int64) + 1) + prev
        k2 = short * rb + pbase
        return prev, inner, digits, k2, k2 * rt + ptok

    def _static_row(self, j: int, p: int, i: int, k2: int, k3: int) -> list[int] | tuple:
        t2, t3 = self.static[j]
        row = t3.get(k3)
        if row is None:
            row = t2.get(k2)
        return row if row is not None else self._fallback[j][p][i]

    # -- identity and storage ---------------------------------------------------------
    @property
    def digest(self) -> str:
        return self._digest

    def _compute_digest(self) -> str:
        h = hashlib.sha256(f"{FORMAT}/{self.inc}/{self.limit}".encode())
        for c in self.prior:
            h.update(c.astype("<u2").tobytes())
        h.update(self._static_blob())
        return h.hexdigest()

    @property
    def tag(self) -> int:
        """One byte that names this model: mixed into every coded packet's check byte."""
        return int(self.digest[:2], 16)

    def _static_blob(self) -> bytes:
        parts = []
        for j, pair in enumerate(self.static):
            for table in pair:
                keys = sorted(table)
                rows = np.array([table[k] for k in keys], np.int64).reshape(
                    -1, self.layout.all_levels[j])
                gaps = np.diff(np.asarray([0, *keys], np.int64))  # sorted: small gaps
                if len(gaps) and gaps.max() >= 1 << 32:
                    raise BundleError("token model: a context key does not fit 32 bits")
                parts += [np.uint32(len(keys)).tobytes(), gaps.astype("<u4").tobytes(),
                          rows.astype("<u2").tobytes()]
        return b"".join(parts)

    def _manifest(self, fmt: str, **extra: Any) -> dict[str, Any]:
        """The section's fields every token model format shares, plus `extra`."""
        blob = b"".join(c.astype("<u2").tobytes() for c in self.prior)
        out = {"format": fmt, "levels": list(self.layout.all_levels), "prior_total": PRIOR,
               "static_total": STATIC_TOTAL, "inc": self.inc, "limit": self.limit,
               "prior": base64.b64encode(blob).decode("ascii"), **extra,
               "digest": self.digest[:16]}
        if self.legacy is not None:
            out["legacy"] = self.legacy.to_manifest()
        return out

    def to_manifest(self) -> dict[str, Any]:
        return self._manifest(FORMAT, static=base64.b64encode(
            zlib.compress(self._static_blob(), 9)).decode())

    @staticmethod
    def _check_section(raw: Any, fmt: str, layout: TokenLayout) -> None:
        if not isinstance(raw, dict) or raw.get("format") != fmt:
            raise BundleError(f"entropy section: format is not {fmt!r}")
        if (raw.get("prior_total"), raw.get("static_total")) != (PRIOR, STATIC_TOTAL) or \
                raw.get("levels") != list(layout.all_levels):
            raise BundleError(f"entropy section: made for levels {raw.get('levels')}, this "
                              f"codec has {list(layout.all_levels)} (or other totals)")

    @classmethod
    def from_manifest(cls, raw: Any, layout: TokenLayout) -> TokenLM:
        """Validate the manifest's `entropy` section; BundleError with the reason if bad."""
        cls._check_section(raw, FORMAT, layout)
        try:
            prior = _read_prior(base64.b64decode(raw["prior"], validate=True), layout)
            static_blob = zlib.decompress(base64.b64decode(raw["static"], validate=True))
            inc, limit = int(raw["inc"]), int(raw["limit"])
        except (KeyError, TypeError, ValueError, zlib.error) as exc:
            raise BundleError(f"entropy section: tables unreadable ({exc})") from exc
        levels = layout.all_levels
        legacy = raw.get("legacy")
        model = cls(layout, prior, _read_static(static_blob, levels), inc, limit,
                    EntropyModel.from_manifest(legacy, layout) if legacy is not None else None)
        if raw.get("digest") not in (None, model.digest[:16]):
            raise BundleError("entropy section: tables do not match their digest")
        return model

    # -- fitting ----------------------------------------------------------------------
    @classmethod
    def fit(cls, sequences: Iterable[np.ndarray], layout: TokenLayout, smoothing: float = 4.0,
            inc: int = INC, limit: int = LIMIT, min_count: int = MIN_COUNT,
            legacy: EntropyModel | None = None) -> TokenLM:
        """Tables from 275-mode token sequences (SILENT marks DTX frames). The prior is
        smoothed like the v1 tables; a long context towards the shorter one it extends
        (context + previous base token -> context -> the prior's context)."""
        seqs = [np.asarray(s, np.int64) for s in sequences]
        tables = EntropyModel.fit(seqs, layout, smoothing).counts
        prior = tuple(_quantize(c.astype(np.float64), PRIOR) for c in tables)
        empty = tuple(({}, {}) for _ in layout.all_levels)
        probe = cls(layout, prior, empty, inc, limit, legacy)
        rb, rt = probe.radices
        ctx = [probe.contexts(s, "275") for s in seqs]
        static = []
        for j, n_sym in enumerate(layout.all_levels):
            pj = tables[j].astype(np.float64)
            pj /= pj.sum(-1, keepdims=True)
            _, _, digit, k2, k3 = (np.concatenate([c[k][:, j] for c in ctx]) for k in range(5))

            def from_prior(keys: np.ndarray, pj: np.ndarray = pj, start: int = n_sym + 1
                           ) -> np.ndarray:
                short = keys // rb  # inner x (L_j + 1) + previous digit
                return pj[short % start, short // start]

            t2, p2 = _smoothed(k2, digit, n_sym, from_prior, smoothing)

            def from_k2(keys: np.ndarray, p2: _Lookup = p2) -> np.ndarray:
                return p2[keys // rt]

            t3, _ = _smoothed(k3, digit, n_sym, from_k2, smoothing)
            static.append(({k: _row(v) for k, (v, n) in t2.items() if n >= min_count},
                           {k: _row(v) for k, (v, n) in t3.items() if n >= min_count}))
        return cls(layout, prior, tuple(static), inc, limit, legacy)

    # -- coding -----------------------------------------------------------------------
    def _adaptive(self, state: dict[tuple[int, int, int], list[int]], j: int, p: int, i: int
                  ) -> list[int]:
        key = (j, p, i)
        row = state.get(key)
        if row is None:
            row = state[key] = list(self._rows[j][p][i])
        return row

    def _learn(self, row: list[int], d: int) -> None:
        row[d] += self.inc
        if sum(row) > self.limit:
            for k in range(len(row)):
                row[k] = (row[k] + 1) >> 1

    def _mixture(self, state: dict, j: int, p: int, inner: int, b: list[int] | tuple
                 ) -> list[int]:
        """Cumulative counts for digit j: the adaptive row mixed with the static one."""
        return self._cumulative(self._adaptive(state, j, p, inner), b)

    def _update(self, state: dict, j: int, p: int, inner: int, d: int) -> None:
        """The adaptive model learns the coded digit."""
        self._learn(self._adaptive(state, j, p, inner), d)

    @staticmethod
    def _cumulative(a: list[int], b: list[int] | tuple) -> list[int]:
        """Cumulative counts of the even mixture of a and b (both >= 1 everywhere)."""
        ta = sum(a)
        cum = [0]
        for x, y in zip(a, b, strict=True):
            cum.append(cum[-1] + x * STATIC_TOTAL + y * ta)
        return cum

    def _predictor(self, levels: tuple[int, ...], last: int, history: list[list[int]]):
        """The static side for the next frame: (digit j, previous digit, earlier digits as
        a number, earlier digits as a list) -> counts. `last` is the previous frame's
        token (-1 at a packet's start or after a gap), `history` the digits of the frames
        since then."""
        rb, rt = self.radices
        whole = len(levels) == len(self.layout.all_levels)
        pbase = rb - 1 if last < 0 else last // prod(levels[len(self.layout.base_levels):])
        ptok = rt - 1 if last < 0 or not whole else last

        def row(j: int, p: int, inner: int, earlier: list[int]) -> list[int] | tuple:
            k2 = (inner * (levels[j] + 1) + p) * rb + pbase
            return self._static_row(j, p, inner, k2, k2 * rt + ptok)

        return row

    def _walk(self, active: np.ndarray, mode: str, step) -> np.ndarray:
        """Run the model over one packet's frames; `step(t, j, cum)` codes or decodes digit
        j of frame t from the cumulative counts and returns it. Returns the token ids
        (SILENT where `active` is False)."""
        levels = self.layout.mode(mode).levels
        active = np.asarray(active, bool)
        out = np.full(len(active), SILENT, np.int64)
        state: dict[tuple[int, int, int], list[int]] = {}
        startp = list(levels)
        prev, last = startp, -1
        history: list[list[int]] = []
        for t in np.flatnonzero(active).tolist():
            if t == 0 or not active[t - 1]:
                prev, last, history = startp, -1, []
            static = self._predictor(levels, last, history)
            digits: list[int] = []
            inner = 0
            for j, n in enumerate(levels):
                p = prev[j]
                d = step(t, j, self._mixture(state, j, p, inner, static(j, p, inner, digits)))
                self._update(state, j, p, inner, d)
                digits.append(d)
                inner = inner * n + d
            out[t] = last = inner
            prev = digits
            history.append(digits)
        return out

    def _digits(self, tokens: np.ndarray, mode: str) -> tuple[np.ndarray, list[list[int]]]:
        tokens = np.asarray(tokens, np.int64)
        _, _, digits = _symbols(tokens, self.layout.mode(mode).levels)
        frame = np.cumsum(tokens != SILENT) - 1  # active frame t -> row of `digits`
        return tokens != SILENT, digits[frame].tolist() if len(digits) else []

    def encode_bits(self, tokens: np.ndarray, mode: str) -> list[int]:
        """The self-ending code of one packet's active frames, as bits."""
        enc = ArithmeticEncoder()
        active, digits = self._digits(tokens, mode)

        def step(t: int, j: int, cum: list[int]) -> int:
            d = digits[t][j]
            enc.encode(cum[d], cum[d + 1], cum[-1])
            return d

        self._walk(active, mode, step)
        return enc.finish_bits()

    def decode_bits(self, bits: list[int], start: int, active: np.ndarray, mode: str
                    ) -> tuple[np.ndarray, int]:
        """Token ids of one packet's frames (SILENT where `active` is False) from the code
        at bit `start`, and the bit just past the code."""
        dec = ArithmeticDecoder(bits, start)
        out = self._walk(active, mode, lambda t, j, cum: dec.decode(cum))
        return out, dec.end

    def code_bits(self, tokens: np.ndarray, mode: str) -> float:
        """Ideal code length (bits) of one packet's active frames: what the coder reaches
        within a few bits."""
        active, digits = self._digits(tokens, mode)
        total = [0.0]

        def step(t: int, j: int, cum: list[int]) -> int:
            d = digits[t][j]
            total[0] += log2(cum[-1] / (cum[d + 1] - cum[d]))
            return d

        self._walk(active, mode, step)
        return total[0]

    # v1 byte-form API: version 1 packets were coded with the legacy tables
    def encode(self, tokens: np.ndarray, mode: str) -> bytes:
        raise BitstreamError("a token LM codes version 2 packets only (encode_bits)")

    def decode(self, data: bytes, active: np.ndarray, mode: str) -> np.ndarray:
        if self.legacy is None:
            raise BitstreamError("version 1 coded packet, and this bundle keeps no v1 tables")
        return self.legacy.decode(data, active, mode)


def _smoothed(keys: np.ndarray, digits: np.ndarray, n_sym: int, parent, smoothing: float
              ) -> tuple[dict[int, tuple[np.ndarray, int]], dict[int, np.ndarray]]:
    """Per distinct key: (probabilities smoothed towards parent(key), training count)."""
    if not len(keys):
        return {}, {}
    uniq, inv = np.unique(keys, return_inverse=True)
    counts = np.zeros((len(uniq), n_sym))
    np.add.at(counts, (inv, digits), 1)
    base = parent(uniq)
    p = (counts + smoothing * base) / (counts.sum(1, keepdims=True) + smoothing)
    out = {int(k): (p[n], int(counts[n].sum())) for n, k in enumerate(uniq.tolist())}
    return out, _Lookup(uniq, p)


class _Lookup:
    """Array-backed `key -> probabilities` for the children's smoothing (fit only)."""

    def __init__(self, keys: np.ndarray, p: np.ndarray) -> None:
        self.keys, self.p = keys, p

    def __getitem__(self, keys: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.p[pos]  # every child key's parent was seen in training


def _row(p: np.ndarray) -> tuple[int, ...]:
    return tuple(_quantize(p[None], STATIC_TOTAL)[0].tolist())


def _read_static(blob: bytes, levels: tuple[int, ...]) -> tuple[tuple[Table, Table], ...]:
    out, pos = [], 0
    try:
        for n_sym in levels:
            pair = []
            for _ in range(2):
                n = int(np.frombuffer(blob, "<u4", 1, pos)[0])
                pos += 4
                keys = np.cumsum(np.frombuffer(blob, "<u4", n, pos).astype(np.int64)).tolist()
                pos += 4 * n
                rows = np.frombuffer(blob, "<u2", n * n_sym, pos).reshape(n, n_sym)
                pos += 2 * n * n_sym
                pair.append({k: tuple(r) for k, r in zip(keys, rows.tolist(), strict=True)})
            out.append(tuple(pair))
    except ValueError as exc:
        raise BundleError(f"entropy section: static tables truncated ({exc})") from exc
    if pos != len(blob):
        raise BundleError("entropy section: static tables have trailing bytes")
    return tuple(out)


NEURAL_FORMAT = "mix-neural/1"
FAST_PRIOR = 8  # the fast model: P(digit | earlier digits of the frame), from flat counts
FAST_INC = 32  # so it follows the speaker within a few seconds
FAST_LIMIT = 1 << 12


@dataclass(frozen=True, eq=False)
class NeuralTokenLM(TokenLM):
    """The adaptive tables (A) and a fast adaptive model over the frame's earlier digits
    alone, mixed with a small integer neural net over the last frames (sdk/tokennet.py)
    in place of the static context tables; `mix` = their three weights. Why: the tables see one
    previous frame; the net sees K, and generalises across speakers where a long context
    table is sparse (issue 23: 5 % fewer bits than the tables on unseen voices)."""

    mix: tuple[int, int, int] = (1, 0, 3)  # weights of the adaptive, fast and net models
    net: ContextNet | None = None

    def __post_init__(self) -> None:
        if self.net is None or self.net.levels != self.layout.all_levels:
            raise BundleError("neural token model: its net was made for levels "
                              f"{None if self.net is None else list(self.net.levels)}, the "
                              f"layout has {list(self.layout.all_levels)}")
        if len(self.mix) != 3 or not all(0 <= w <= 64 for w in self.mix) or not self.mix[2]:
            raise BundleError(f"neural token model: mixture weights {self.mix} out of range")
        super().__post_init__()

    def _fast(self, state: dict, j: int, inner: int) -> list[int]:
        key = (-1, j, inner)  # the fast model's rows live beside A's in the packet state
        row = state.get(key)
        if row is None:
            row = state[key] = [FAST_PRIOR] * self.layout.all_levels[j]
        return row

    def _mixture(self, state: dict, j: int, p: int, inner: int, b: list[int] | tuple
                 ) -> list[int]:
        """Three models, each first scaled to STATIC_TOTAL (so the coder's total stays
        small), then mixed with the weights `mix` (adaptive, fast, net)."""
        a = self._adaptive(state, j, p, inner)
        f = self._fast(state, j, inner)
        ta, tf = sum(a), sum(f)
        wa, wf, wb = self.mix
        cum = [0]
        for x, y, z in zip(a, f, b, strict=True):
            cum.append(cum[-1] + wa * max(1, x * STATIC_TOTAL // ta)
                       + wf * max(1, y * STATIC_TOTAL // tf) + wb * z)
        return cum

    def _update(self, state: dict, j: int, p: int, inner: int, d: int) -> None:
        self._learn(self._adaptive(state, j, p, inner), d)
        row = self._fast(state, j, inner)
        row[d] += FAST_INC
        if sum(row) > FAST_LIMIT:
            for k in range(len(row)):
                row[k] = (row[k] + 1) >> 1

    def _compute_digest(self) -> str:
        h = hashlib.sha256(f"{NEURAL_FORMAT}/{self.inc}/{self.limit}/{self.mix}/"
                           f"{FAST_PRIOR}/{FAST_INC}/{FAST_LIMIT}".encode())
        for c in self.prior:
            h.update(c.astype("<u2").tobytes())
        h.update(self.net.digest_bytes())
        return h.hexdigest()

    def _predictor(self, levels: tuple[int, ...], last: int, history: list[list[int]]):
        net = self.net
        full = len(self.layout.all_levels)
        # the 175 mode sends the base digits only: the rest of a frame reads as "start"
        recent = history[-net.history:]  # all the net reads: no per-frame copy of the rest
        padded = [d + list(net.levels[len(d):]) for d in recent] if len(levels) < full \
            else recent
        h = net.frame_state(padded)

        def row(j: int, p: int, inner: int, earlier: list[int]) -> list[int]:
            return net.digit_counts(h, j, inner, STATIC_TOTAL)

        return row

    def to_manifest(self) -> dict[str, Any]:
        return self._manifest(NEURAL_FORMAT, mix=list(self.mix), net=self.net.to_manifest())

    @classmethod
    def from_manifest(cls, raw: Any, layout: TokenLayout) -> NeuralTokenLM:
        cls._check_section(raw, NEURAL_FORMAT, layout)
        try:
            prior = _read_prior(base64.b64decode(raw["prior"], validate=True), layout)
            inc, limit = int(raw["inc"]), int(raw["limit"])
            mix = tuple(int(w) for w in raw["mix"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"entropy section: tables unreadable ({exc})") from exc
        legacy = raw.get("legacy")
        model = cls(layout, prior, tuple(({}, {}) for _ in layout.all_levels), inc, limit,
                    EntropyModel.from_manifest(legacy, layout) if legacy is not None else None,
                    mix=mix, net=ContextNet.from_manifest(raw.get("net"), layout.all_levels))
        if raw.get("digest") not in (None, model.digest[:16]):
            raise BundleError("entropy section: token model does not match its digest")
        return model


def _read_prior(blob: bytes, layout: TokenLayout) -> tuple[np.ndarray, ...]:
    levels = layout.all_levels
    counts = np.frombuffer(blob, "<u2")
    shapes = [table_shape(levels, j) for j in range(len(levels))]
    sizes = [prod(s) for s in shapes]
    if len(counts) != sum(sizes):
        raise BundleError(f"entropy section: {len(counts)} counts, the layout needs "
                          f"{sum(sizes)}")
    ends = np.cumsum(sizes)
    return tuple(counts[e - n:e].astype(np.int64).reshape(s)
                 for e, n, s in zip(ends, sizes, shapes, strict=True))


def load_entropy(raw: Any, layout: TokenLayout) -> EntropyModel | TokenLM:
    """The manifest's `entropy` section as the model it names (v1 tables, token LM with
    context tables, or with the neural context model)."""
    if isinstance(raw, dict) and raw.get("format") in (NEURAL_FORMAT, FORMAT):
        cls = NeuralTokenLM if raw["format"] == NEURAL_FORMAT else TokenLM
        model = cls.from_manifest(raw, layout)
        older = raw.get("previous", [])
        if not isinstance(older, list):
            raise BundleError("entropy section: `previous` is not a list")
        object.__setattr__(model, "previous", tuple(load_entropy(r, layout) for r in older))
        return model
    return EntropyModel.from_manifest(raw, layout)
