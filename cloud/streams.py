"""Stream assembly: one `Session` per (device, stream id, stream nonce), a jitter buffer keyed
by frame index.

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

Stream identity: the one-byte stream id restarts at 0 when a device gets a new queue, so
a stream is keyed by (device, stream id, the nonce of the device's birth message) (see
docs/cloud.md). Each session remembers a digest of every packet it placed, keyed by
(seq, first frame): a replay has the same content there and is a duplicate (also when an
older stream of the device, with another nonce, placed it); a packet with other content
under the same identity is not a replay and is refused (outcome 'refused', never counted
as a duplicate), except from a device without a nonce (an older agent), where it starts a
new stream once the old one has ended.

Frames are stored as decoder input (codes, enhancement flag, activity), so a stream may
mix the 275 and 175 modes packet by packet.
"""

from __future__ import annotations

import zlib
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
    # a session's frames are held in memory: a hostile device could otherwise jump ahead
    # 60 s per packet up to the 24-bit frame index (~0.3 GB per session); 12 h is ~26 MB
    max_session_frames: int = 12 * 3600 * FRAME_RATE


@dataclass
class Placed:
    """What happened to one packet: 'new', 'duplicate', 'late' (already committed) or
    'refused' (same stream identity, other content: not a replay)."""

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
    payload_bytes: int = 0  # of the packets placed: the stream's achieved rate
    packets_175: int = 0  # placed packets sent in the 175 mode (rate control)
    duplicates: int = 0
    late: int = 0
    gaps: int = 0
    lost_frames: int = 0
    reported: tuple[int, int] = (0, 0)  # (gaps, lost frames) already in the metrics
    ended: bool = False
    voice: bytes | None = None  # the stream's latest voice code (packed), once one arrived
    voice_frame: int = -1  # first frame of the packet it came in
    timbre: TimbreMatcher | None = None  # the receiver's EQ state, for envelope codes
    nonce: str | None = None  # the stream nonce of the birth message, if the device sent one
    digests: dict[tuple[int, int], int] = field(default_factory=dict)  # (seq, first) -> digest
    refused: int = 0

    def replay_of(self, p: Packet) -> bool | None:
        """True: this session placed the very same packet; False: it placed another packet
        at that (seq, first frame), so `p` belongs to another stream; None: never seen."""
        seen = self.digests.get((p.seq, p.first_frame))
        return None if seen is None else seen == packet_digest(p)

    # -- placement ------------------------------------------------------------------
    def place(self, p: Packet, now: float) -> Placed:
        """Put a decoded packet's frames in place; raises BitstreamError if implausible."""
        self.last_arrival = now
        replay = self.replay_of(p)
        if replay is not None:
            if replay:
                self.duplicates += 1
                return Placed("duplicate")
            return Placed("refused")  # counted by StreamTable.route
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
        if start + n > self.policy.max_session_frames:
            raise BitstreamError(f"packet goes past {self.policy.max_session_frames} frames, "
                                 "the longest session this receiver holds")
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
        self.digests[(p.seq, p.first_frame)] = packet_digest(p)
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


def packet_digest(p: Packet) -> int:
    """CRC-32 of what a packet says (not how it was coded): equal for a replay of it."""
    tokens = np.asarray(p.tokens, dtype=np.int64)
    head = f"{p.seq}/{p.first_frame}/{p.mode}/{p.width}/{int(p.eos)}".encode()
    return zlib.crc32(head + tokens.tobytes() + b"v" + (p.voice or b""))


StreamKey = tuple[str, int] | tuple[str, int, str]


def stream_key(device: str, stream_id: int, nonce: str | None = None) -> StreamKey:
    """(device, stream id), plus the device's stream nonce when its birth message had one."""
    return (device, stream_id) if nonce is None else (device, stream_id, nonce)


class StreamTable:
    """All live sessions, keyed by `stream_key`; finished ones are handed out once."""

    def __init__(self, layout: TokenLayout, policy: StreamPolicy | None = None,
                 voice: VoiceSpec | None = None) -> None:
        self.layout = layout
        self.voice = voice
        self.policy = policy or StreamPolicy()
        self.sessions: dict[StreamKey, Session] = {}
        # ended sessions stay known a while, so a late QoS 1 redelivery of one of their
        # packets is a duplicate, not the start of a one-packet session (agents move to
        # a new stream id per session, so an id comes back only after 255 others, or in a
        # new queue, which has a new stream nonce)
        self.recent: dict[StreamKey, Session] = {}
        self.recent_ttl = max(60.0, 2 * self.policy.idle_timeout)

    def session_for(self, device: str, p: Packet, now: float, name: str | None = None,
                    nonce: str | None = None) -> Session:
        key = stream_key(device, p.stream_id, nonce)
        s = self.sessions.get(key)
        if s is None and nonce is not None:
            # a live session of unknown nonce (resumed from the archive, or opened before
            # the birth message came) is this stream: the first nonce that routes to it owns it
            s = self.sessions.pop(stream_key(device, p.stream_id), None)
            if s is not None:
                s.nonce = nonce
                self.sessions[key] = s
        if s is None:
            s = Session(device, p.stream_id, name or session_name(p.stream_id, now), now,
                        self.layout, self.policy, nonce=nonce)
            self.sessions[key] = s
        return s

    def route(self, device: str, p: Packet, now: float,
              nonce: str | None = None) -> tuple[Session, Placed]:
        """Place a packet of `device` (whose birth message gave `nonce`) in its session."""
        check_tokens(p, self.layout, self.voice)
        key = stream_key(device, p.stream_id, nonce)
        old = self.recent.get(key) if key not in self.sessions else None
        if old is not None and now - old.last_arrival < self.recent_ttl:
            replay = old.replay_of(p)
            if replay is None:  # a packet the ended session never got
                old.late += 1
                return old, Placed("late")
            if replay:
                old.duplicates += 1
                return old, Placed("duplicate")
            if nonce is not None:  # the nonce says same stream, the content says not
                return self._refuse(old, device, p, now)
            # no nonce (an older agent): other content proves a new stream, not a replay
        s = self.session_for(device, p, now, nonce=nonce)
        try:
            placed = s.place(p, now)
        except BitstreamError:
            if s.packets == 0:  # do not keep a session that a refused packet opened
                del self.sessions[key]
            raise
        return self._refuse(s, device, p, now) if placed.outcome == "refused" else (s, placed)

    def _refuse(self, s: Session, device: str, p: Packet,
                now: float) -> tuple[Session, Placed]:
        """A packet that conflicts with `s`: a duplicate if an older stream of the device
        with that stream id (another nonce) placed exactly it, else refused."""
        for key, old in self.recent.items():
            if key[:2] == (device, p.stream_id) and old is not s \
                    and now - old.last_arrival < self.recent_ttl and old.replay_of(p):
                old.duplicates += 1
                return old, Placed("duplicate")
        s.refused += 1
        return s, Placed("refused")

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
