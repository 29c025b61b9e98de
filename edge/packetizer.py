"""Group token frames into packets: one packet per batching interval, an eos packet at the end.

Sequence numbers start at 0 in every stream and increase by one per packet; first_frame
counts frames from the start of the stream, so a receiver can place every packet on
the stream's timeline (silent DTX frames are in the packet as SILENT, not skipped).

The voice code (sdk/voice.py) rides along in a few packets only: the first one, then
whenever the running estimate has changed, at gaps that double from 1 s up to 16 s (it
settles within seconds), and unchanged every 30 s so a receiver that lost it or joined
late recovers. A 30 s stream carries about 5 codes: with the shipped 8-byte envelope code
(9 bytes on the wire) that is about 12 bit/s.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gacflow.bitstream import Packet
from gacflow.errors import ConfigError
from gacflow.spec import FRAME_RATE, Mode

VOICE_FIRST_GAP = FRAME_RATE  # frames before a changed code may be sent again
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
                 voice: Callable[[], bytes | None] | None = None) -> None:
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
        self.ended = False

    def push(self, tokens: np.ndarray) -> list[Packet]:
        """Add frames; return the packets they complete."""
        if self.ended:
            raise RuntimeError("stream already ended")
        self._pending.extend(int(t) for t in tokens)
        out = []
        while len(self._pending) >= self.size:
            out.append(self._cut(self.size, eos=False))
        return out

    def finish(self) -> Packet:
        """The last packet, flagged end-of-stream (possibly with zero frames)."""
        packet = self._cut(len(self._pending), eos=True)
        self.ended = True
        return packet

    def _cut(self, n: int, eos: bool) -> Packet:
        tokens = np.array(self._pending[:n], dtype=np.int64)
        del self._pending[:n]
        packet = Packet(stream_id=self.stream_id, seq=self.seq & 0xFFFF,
                        first_frame=self.next_frame & 0xFFFFFF, tokens=tokens,
                        width=self.mode.bits, mode=self.mode.name, eos=eos,
                        voice=self._voice_due())
        self.seq += 1
        self.next_frame += n
        return packet

    def _voice_due(self) -> bytes | None:
        """The voice code if this packet should carry it (see the module docstring)."""
        code = self.voice() if self.voice is not None else None
        if code is None:
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
