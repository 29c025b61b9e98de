"""Batched streaming decoding: pending frames of many streams go through one forward pass.

The decoder is non-causal (small: +-10 token frames, deeper sizes more). A live
stream is decoded in windows that carry `context` frames of real tokens on each side;
only the settled middle is emitted, so the audio of a frame is final as soon as
`context` frames after it have arrived, and the concatenated output equals a decode of
the whole stream (to float rounding; tests/test_cloud_decoder.py checks it). The
window's own edges are exactly where the whole-stream decode has its edges too (stream
start, stream end), or are at least `context` frames away from anything emitted.

That last property makes batching free: windows of different lengths are zero-padded
on the right to one length and stacked, because padding only touches frames that are
not emitted. Windows that end at the stream's end are the exception (the pad would sit
where the whole-stream decode sees its edge), so they are batched only with windows of
the same length.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from gacflow.model.codec import apply_dtx, equalize
from gacflow.spec import FRAME_RATE, FRAME_SAMPLES
from gacflow.timbre import TimbreMatcher, flat_taps

from .streams import Session

CONTEXT_MARGIN = 2  # frames of context beyond the decoder's receptive field
MIN_STEP = FRAME_RATE  # emit live audio in steps of at least 1 s
MAX_WINDOW = 20 * FRAME_RATE  # longer spans are split, bounding memory per window


@dataclass
class Job:
    """Emit frames [a, b) of `session`, decoding window [wa, wb)."""

    session: Session
    a: int
    b: int
    wa: int
    wb: int
    at_end: bool
    audio: np.ndarray | None = field(default=None, repr=False)


@dataclass
class DecodeStats:
    batches: int = 0
    seconds_audio: float = 0.0
    seconds_compute: float = 0.0
    last_latency: float = 0.0

    @property
    def rtf(self) -> float:
        return self.seconds_compute / self.seconds_audio if self.seconds_audio else 0.0


class DecoderService:
    """Plans windows for sessions and runs them batched on the codec's decoder."""

    def __init__(self, codec, context: int | None = None, min_step: int = MIN_STEP,
                 max_window: int = MAX_WINDOW, max_batch: int = 64) -> None:
        self.codec = codec
        if context is None:
            context = codec.decoder.cfg.receptive_frames + CONTEXT_MARGIN
        self.context = context
        self.min_step = min_step
        self.max_window = max_window
        self.max_batch = max_batch
        self.stats = DecodeStats()

    # -- planning -------------------------------------------------------------------
    def plan(self, s: Session, final: bool = False) -> list[Job]:
        """Windows that emit what `s` has settled (everything, once `final`)."""
        jobs = []
        step_max = self.max_window - 2 * self.context
        while True:
            e = s.emitted
            settled = s.committed if final else s.committed - self.context
            n = settled - e
            if n <= 0 or (not final and n < self.min_step):
                break
            b = e + min(n, step_max)
            wb = s.committed if final and b == s.committed else min(s.committed, b + self.context)
            at_end = final and wb == s.committed
            jobs.append(Job(s, e, b, max(0, e - self.context), wb, at_end))
            s.emitted = b
        return jobs

    # -- running --------------------------------------------------------------------
    def run(self, jobs: list[Job]) -> list[Job]:
        """Decode all jobs (batched); fills `job.audio` with the emitted samples."""
        loose = [j for j in jobs if not j.at_end]
        by_len: dict[int, list[Job]] = {}
        for j in jobs:
            if j.at_end:
                by_len.setdefault(j.wb - j.wa, []).append(j)
        groups = [loose] + list(by_len.values())
        for g in groups:
            g = sorted(g, key=lambda j: j.wb - j.wa)
            for i in range(0, len(g), self.max_batch):
                self._forward(g[i : i + self.max_batch])
        return jobs

    def _timbre_taps(self, batch: list[Job]) -> np.ndarray | None:
        """Per-window EQ towards each stream's envelope code (sdk timbre.py), [B, TAPS];
        None when the codec has no such code or no stream in the batch has sent one."""
        if not self.codec.matches_timbre:
            return None
        rows = []
        for j in batch:
            if j.session.timbre is None:
                j.session.timbre = TimbreMatcher(self.codec.voice)
            rows.append(j.session.timbre.taps(j.session.voice))
        if all(r is None for r in rows):
            return None
        flat = flat_taps()
        return np.stack([flat if r is None else r for r in rows])

    @torch.inference_mode()
    def _forward(self, batch: list[Job]) -> None:
        if not batch:
            return
        t0 = time.perf_counter()
        T = max(j.wb - j.wa for j in batch)
        codes = np.zeros((len(batch), T, 5), np.float32)
        enh = np.zeros((len(batch), T), np.float32)
        for i, j in enumerate(batch):
            c, e, _ = j.session.decoder_input(j.wa, j.wb)
            codes[i, : len(c)] = c
            enh[i, : len(e)] = e
        dev = self.codec.device
        voice = self.codec.voice_condition([j.session.voice for j in batch])
        raw = self.codec.decoder(torch.from_numpy(codes).to(dev), torch.from_numpy(enh).to(dev),
                                 voice)
        taps = self._timbre_taps(batch)
        before_eq = raw.float().cpu().numpy()
        # the EQ runs on whole windows, so their context frames cover the filter's reach
        wav = before_eq if taps is None else equalize(raw, taps).float().cpu().numpy()
        for i, j in enumerate(batch):
            _, _, audible = j.session.decoder_input(j.wa, j.wb)
            lo, hi = (j.a - j.wa) * FRAME_SAMPLES, (j.b - j.wa) * FRAME_SAMPLES
            if j.session.timbre is not None:  # what this span adds to the stream's statistic
                j.session.timbre.observe(before_eq[i, lo:hi])
            w = apply_dtx(wav[i, : (j.wb - j.wa) * FRAME_SAMPLES], audible)
            j.audio = np.clip(w[lo:hi], -1.0, 1.0).astype(np.float32)
        dt = time.perf_counter() - t0
        self.stats.batches += 1
        self.stats.seconds_compute += dt
        self.stats.seconds_audio += sum(j.b - j.a for j in batch) / FRAME_RATE
        self.stats.last_latency = dt
