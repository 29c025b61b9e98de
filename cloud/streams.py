"""Stream assembly: one `Session` per (device, stream id), a jitter buffer keyed by frame index.

Packets are placed by their `first_frame` index, so reordering costs nothing and a
duplicate (a QoS 1 redelivery, a replay after a receiver restart) lands on frames that
are already filled and is ignored. Frames before `committed` are final: received, DTX,
or declared lost. A hole in front of `committed` waits up to `reorder_timeout` seconds
(after a later packet has shown up) for its packet, then is declared a gap.

Gap policy (concealment), decided here and documented in docs/cloud.md:

* a hole between two packets with consecutive sequence numbers is not loss: the agent
  skipped frames on purpose (long DTX), so it is rendered as silence;
* short losses (<= `conceal_frames`, 120 ms by default) are concealed by interpolating the
  FSQ codes of the neighbouring frames: the generative decoder turns that into plausible
  speech, with no click;
* longer losses are rendered like DTX: silence with 10 ms fades, never a repeated buzz.

Frames are stored as decoder input (codes, enhancement flag, activity), so a stream may
mix the 275 and 175 modes packet by packet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from gacflow.bitstream import SILENT, Packet
from gacflow.errors import BitstreamError
from gacflow.model.codec import tokens_to_decoder_input
from gacflow.spec import FRAME_RATE, TokenLayout
from gacflow.timbre import TimbreMatcher
from gacflow.voice import VoiceSpec

# frame states
MISSING, ACTIVE, QUIET, LOST = 0, 1, 2, 3


@dataclass
class StreamPolicy:
    reorder_timeout: float = 1.0  # s a hole may wait for its late packet
    idle_timeout: float = 30.0  # s without packets before a session ends
    conceal_frames: int = 3  # losses up to this many frames are interpolated
    max_jump_frames: int = 60 * FRAME_RATE  # a packet further ahead than this is refused
    max_lead_frames: int = 60 * FRAME_RATE  # a stream joined later than this starts there


@dataclass
class Placed:
    """What happened to one packet: 'new', 'duplicate' or 'late' (already committed)."""

    outcome: str
    frames: int = 0


@dataclass
class Session:
    """The frames of one stream as they arrive, and how far they are final and decoded."""

    device: str
    stream_id: int
    name: str
    started: float
    layout: TokenLayout
    policy: StreamPolicy
    base: int = 0  # stream frame index of array index 0
    codes: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), np.float32))
    enh: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    state: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int8))
    end: int = 0  # one past the highest frame received (array index)
    final_length: int | None = None  # known once the eos packet arrived
    committed: int = 0
    emitted: int = 0  # frames whose audio went to the sinks
    last_arrival: float = 0.0
    arrived_at: dict[int, float] = field(default_factory=dict)  # array index -> arrival
    seq_at_start: dict[int, int] = field(default_factory=dict)  # array index -> seq
    seq_at_end: dict[int, int] = field(default_factory=dict)  # one past a packet -> its seq
    packets: int = 0
    duplicates: int = 0
    late: int = 0
    gaps: int = 0
    lost_frames: int = 0
    reported: tuple[int, int] = (0, 0)  # (gaps, lost frames) already in the metrics
    ended: bool = False
    voice: bytes | None = None  # the stream's latest voice code (packed), once one arrived
    voice_frame: int = -1  # first frame of the packet it came in
    timbre: TimbreMatcher | None = None  # the receiver's EQ state, for envelope codes

    # -- placement ------------------------------------------------------------------
    def place(self, p: Packet, now: float) -> Placed:
        """Put a decoded packet's frames in place; raises BitstreamError if implausible."""
        self.last_arrival = now
        if self.packets == 0 and self.end == 0:
            self.base = 0 if p.first_frame <= self.policy.max_lead_frames else p.first_frame
        start = p.first_frame - self.base
        if start < 0:
            self.late += 1
            return Placed("late")
        n = p.frame_count
        if start > self.end + self.policy.max_jump_frames:
            raise BitstreamError(
                f"frame index {p.first_frame} jumps more than "
                f"{self.policy.max_jump_frames} frames ahead of stream {p.stream_id}"
            )
        if self.final_length is not None and start + n > self.final_length:
            raise BitstreamError("packet extends past the stream's end-of-stream packet")
        if p.eos:
            self.final_length = start + n
        codes, enh, active = tokens_to_decoder_input(p.tokens, p.mode, self.layout)
        self._grow(start + n)
        seg = self.state[start : start + n]
        fresh = seg == MISSING
        if n and not fresh.any():  # frames before `committed` are never MISSING
            self.duplicates += 1
            return Placed("duplicate")
        if p.voice is not None and start >= self.voice_frame:
            self.voice, self.voice_frame = p.voice, start
        self.codes[start : start + n][fresh] = codes[fresh]
        self.enh[start : start + n][fresh] = enh[fresh]
        seg[fresh] = np.where(active[fresh], ACTIVE, QUIET)
        self.seq_at_start[start] = p.seq
        self.arrived_at.setdefault(start, now)
        self.seq_at_end[start + n] = p.seq
        self.end = max(self.end, start + n)
        self.packets += 1
        return Placed("new", int(fresh.sum()))

    def _grow(self, size: int) -> None:
        if size <= len(self.state):
            return
        cap = max(size, 2 * len(self.state), 256)
        self.codes = np.concatenate([self.codes, np.zeros((cap - len(self.codes), 5), np.float32)])
        self.enh = np.concatenate([self.enh, np.zeros(cap - len(self.enh), np.float32)])
        self.state = np.concatenate([self.state, np.zeros(cap - len(self.state), np.int8)])

    # -- the jitter buffer's clock ----------------------------------------------------
    def advance(self, now: float, flush: bool = False) -> None:
        """Move `committed` over received frames; declare holes lost once they waited enough."""
        limit = self.end
        while self.committed < limit:
            filled = self.state[self.committed : limit] != MISSING
            run = int(np.argmin(filled)) if not filled.all() else len(filled)
            if run:
                self.committed += run
                continue
            if not flush and now - self._hole_shown(limit) < self.policy.reorder_timeout:
                return
            self._declare_hole(limit)
        if self.final_length is not None and self.committed >= self.final_length:
            self.ended = True

    def _hole_end(self, limit: int) -> int:
        rest = self.state[self.committed : limit] != MISSING
        return self.committed + (int(np.argmax(rest)) if rest.any() else len(rest))

    def _hole_shown(self, limit: int) -> float:
        """When the hole at `committed` became visible: the arrival of the packet after it."""
        return self.arrived_at.get(self._hole_end(limit), self.last_arrival)

    def _declare_hole(self, limit: int) -> None:
        a = self.committed
        b = self._hole_end(limit)
        before, after = self.seq_at_end.get(a), self.seq_at_start.get(b)
        planned = before is not None and after is not None and (before + 1) & 0xFFFF == after
        if planned:
            self.state[a:b] = QUIET
        else:
            self.gaps += 1
            self.lost_frames += b - a
            self._conceal(a, b)
        self.committed = b

    def _conceal(self, a: int, b: int) -> None:
        left_ok = a > 0 and self.state[a - 1] == ACTIVE
        right_ok = b < self.end and self.state[b] == ACTIVE
        if b - a <= self.policy.conceal_frames and left_ok and right_ok:
            w = (np.arange(1, b - a + 1, dtype=np.float32) / (b - a + 1))[:, None]
            self.codes[a:b] = (1 - w) * self.codes[a - 1] + w * self.codes[b]
            self.enh[a:b] = np.minimum(self.enh[a - 1], self.enh[b])
            self.state[a:b] = LOST
        else:
            self.codes[a:b] = 0.0
            self.state[a:b] = QUIET  # rendered as silence with fades

    def finish(self, now: float) -> None:
        """End of session (eos or idle): every remaining hole becomes a gap."""
        self.advance(now, flush=True)
        self.ended = True

    # -- what the decoder reads ---------------------------------------------------------
    def decoder_input(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(codes [T, 5], enh [T], audible [T]) for committed frames a..b."""
        st = self.state[a:b]
        return self.codes[a:b], self.enh[a:b], (st == ACTIVE) | (st == LOST)

    @property
    def frames(self) -> int:
        return self.committed

    def idle(self, now: float) -> bool:
        return now - self.last_arrival >= self.policy.idle_timeout


def check_tokens(p: Packet, layout: TokenLayout, voice: VoiceSpec | None = None) -> None:
    """Refuse tokens outside the mode's codebook (a forged width could carry them), and a
    voice code that is not this codec's size."""
    size = layout.mode(p.mode).codebook_size
    t = p.tokens[p.tokens != SILENT]
    if t.size and (t.min() < 0 or t.max() >= size):
        raise BitstreamError(f"token out of range for mode {p.mode} (codebook {size})")
    if p.voice is not None and voice is not None:
        voice.from_bytes(p.voice)


class StreamTable:
    """All live sessions, keyed by (device, stream id); finished ones are handed out once."""

    def __init__(self, layout: TokenLayout, policy: StreamPolicy | None = None,
                 voice: VoiceSpec | None = None) -> None:
        self.layout = layout
        self.voice = voice
        self.policy = policy or StreamPolicy()
        self.sessions: dict[tuple[str, int], Session] = {}
        # ended sessions stay known a while, so a late QoS 1 redelivery of one of their
        # packets is a duplicate, not the start of a one-packet session (agents move to
        # a new stream id per session, so an id comes back only after 255 others)
        self.recent: dict[tuple[str, int], Session] = {}
        self.recent_ttl = max(60.0, 2 * self.policy.idle_timeout)

    def session_for(self, device: str, p: Packet, now: float, name: str | None = None) -> Session:
        key = (device, p.stream_id)
        s = self.sessions.get(key)
        if s is None:
            s = Session(device, p.stream_id, name or session_name(p.stream_id, now), now,
                        self.layout, self.policy)
            self.sessions[key] = s
        return s

    def route(self, device: str, p: Packet, now: float) -> tuple[Session, Placed]:
        check_tokens(p, self.layout, self.voice)
        old = self.recent.get((device, p.stream_id))
        if old is not None and now - old.last_arrival < self.recent_ttl:
            old.duplicates += 1
            return old, Placed("duplicate")
        s = self.session_for(device, p, now)
        try:
            return s, s.place(p, now)
        except BitstreamError:
            if s.packets == 0:  # do not keep a session that a refused packet opened
                del self.sessions[(device, p.stream_id)]
            raise

    def tick(self, now: float) -> list[Session]:
        """Advance every session; return (and forget) those that ended."""
        done = []
        for key, s in list(self.sessions.items()):
            s.advance(now)
            if not s.ended and s.idle(now):
                s.finish(now)
            if s.ended:
                done.append(s)
                del self.sessions[key]
                self.recent[key] = s
        for key, s in list(self.recent.items()):
            if now - s.last_arrival >= self.recent_ttl:
                del self.recent[key]
        return done

    def finish_all(self, now: float) -> list[Session]:
        for s in self.sessions.values():
            s.finish(now)
        done = list(self.sessions.values())
        self.sessions.clear()
        return done


def session_name(stream_id: int, started: float) -> str:
    """Sortable, unique per device in practice: UTC start time plus stream id."""
    import time

    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(started))
    ms = int((started % 1) * 1000)
    return f"{stamp}.{ms:03d}Z-s{stream_id:03d}"
