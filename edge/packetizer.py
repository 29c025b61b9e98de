"""Group token frames into packets: one packet per batching interval, an eos packet at the end.

Sequence numbers start at 0 in every stream and increase by one per packet; first_frame
counts frames from the start of the stream, so a receiver can place every packet on
the stream's timeline (silent DTX frames are in the packet as SILENT, not skipped).

The voice code (sdk/voice.py) rides along in a few packets only: first in the packet
that completes 2 s of audio (or the end-of-stream packet of a shorter stream: an estimate
over less is rough, and a 3 s stream then pays for one code, not two), then whenever the
running estimate has changed, at gaps that double from 2 s up to 16 s (it settles within
seconds), and unchanged every 30 s so a receiver that lost it or joined late recovers.
A 30 s stream carries 4 codes: with the shipped 8-byte envelope code (65 bits in a v2
packet) that is about 9 bit/s. Until the first code arrives the receiver renders without
timbre matching (docs/bitstream.md).

`hold_frames=1` (what the agent uses) releases a full packet only once the next frame
exists, so the end of the input joins the last packet instead of costing an eos packet
of its own (~45 bits: 15 bit/s on a 3 s stream) for 40 ms more latency.

`RateControl` holds a stream to `--max-bitrate` on average: each packet goes out in the
275 mode while the stream (this packet included) stays within its budget, else in
the 175 mode (its base digits: the receiver decodes a stream that mixes both).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gacflow.bitstream import Packet, encode_packet
from gacflow.errors import ConfigError
from gacflow.spec import FRAME_RATE, Mode, TokenLayout

VOICE_FIRST_AT = 2 * FRAME_RATE  # audio (frames) the first code waits for
VOICE_FIRST_GAP = 2 * FRAME_RATE  # frames before a changed code may be sent again
VOICE_MAX_GAP = 16 * FRAME_RATE
VOICE_REFRESH = 30 * FRAME_RATE  # an unchanged code is repeated this often


def frames_per_packet(batch_seconds: float) -> int:
    """0.2-10 s of 40 ms frames (5-250 frames)."""
    if not 0.2 <= batch_seconds <= 10.0:
        raise ConfigError(f"batch-seconds must be between 0.2 and 10, got {batch_seconds:g}")
    return max(1, round(batch_seconds * FRAME_RATE))


class Packetizer:
    """Accumulates released frames of one stream and cuts them into packets."""

    def __init__(self, stream_id: int, mode: Mode, batch_seconds: float,
                 voice: Callable[[], bytes | None] | None = None, hold_frames: int = 0) -> None:
        self.stream_id = stream_id & 0xFF
        self.voice = voice  # current packed voice code of the stream, if the codec has one
        self._voice_sent: bytes | None = None
        self._voice_at = 0  # first frame of the packet that last carried it
        self._voice_gap = VOICE_FIRST_GAP
        self.mode = mode
        self.size = frames_per_packet(batch_seconds)
        self.seq = 0
        self.next_frame = 0  # first frame index of the pending packet
        self._pending: list[int] = []
        self.hold = max(0, hold_frames)  # frames past a full packet before it is released
        self.ended = False

    def push(self, tokens: np.ndarray) -> list[Packet]:
        """Add frames; return the packets they complete."""
        if self.ended:
            raise RuntimeError("stream already ended")
        self._pending.extend(int(t) for t in tokens)
        out = []
        while len(self._pending) >= self.size + self.hold:
            out.append(self._cut(self.size, eos=False))
        return out

    def finish(self) -> Packet:
        """The last packet, flagged end-of-stream (possibly with zero frames; with
        `hold_frames`, the last full packet plus what followed it)."""
        packet = self._cut(len(self._pending), eos=True)
        self.ended = True
        return packet

    def _cut(self, n: int, eos: bool) -> Packet:
        tokens = np.array(self._pending[:n], dtype=np.int64)
        del self._pending[:n]
        packet = Packet(stream_id=self.stream_id, seq=self.seq & 0xFFFF,
                        first_frame=self.next_frame & 0xFFFFFF, tokens=tokens,
                        width=self.mode.bits, mode=self.mode.name, eos=eos,
                        voice=self._voice_due(n, eos))
        self.seq += 1
        self.next_frame += n
        return packet

    def _voice_due(self, n: int, eos: bool) -> bytes | None:
        """The voice code if this packet should carry it (see the module docstring)."""
        code = self.voice() if self.voice is not None else None
        if code is None:
            return None
        if self._voice_sent is None and not eos and self.next_frame + n < VOICE_FIRST_AT:
            return None
        since = self.next_frame - self._voice_at
        if self._voice_sent is not None:
            changed = code != self._voice_sent and since >= self._voice_gap
            if not changed and since < VOICE_REFRESH:
                return None
            if changed:
                self._voice_gap = min(2 * self._voice_gap, VOICE_MAX_GAP)
        self._voice_sent, self._voice_at = code, self.next_frame
        return code


BURST_SECONDS = 0.0  # budget a stream may run ahead by before packets drop to 175


class RateControl:
    """Encode each packet in the 275 mode while the stream is within `max_bitrate` on
    average, else in the 175 mode. Packets must carry 275-mode tokens."""

    def __init__(self, max_bitrate: float, layout: TokenLayout, entropy=None) -> None:
        self.max_bitrate = max_bitrate
        self.layout = layout
        self.entropy = entropy
        self.bits = 0  # sent so far
        self.frames = 0  # covered so far
        self.low_packets = 0  # sent in the 175 mode

    def encode(self, p: Packet) -> tuple[bytes, Packet]:
        """The packet's bytes in the mode the budget allows, and the packet as sent."""
        data = encode_packet(p, self.entropy)
        frames = self.frames + p.frame_count
        budget = self.max_bitrate * (frames / FRAME_RATE + BURST_SECONDS)
        if self.bits + 8 * len(data) > budget and p.mode == "275":
            low = self.layout.mode("175")
            p = Packet(p.stream_id, p.seq, p.first_frame, self.layout.base_tokens(p.tokens),
                       width=low.bits, mode=low.name, eos=p.eos, voice=p.voice)
            data = encode_packet(p, self.entropy)
            self.low_packets += 1
        self.bits += 8 * len(data)
        self.frames = frames
        return data, p
