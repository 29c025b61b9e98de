"""Simulated fleet devices for the cluster test and bench/bench_fleet.py.

`TrackedPublisher` is the load generator's publisher (`cloud.loadgen.Publisher`: the
agent's topics, birth message and QoS 1) that also records when each packet was sent
and when the broker acknowledged it; like an agent it keeps publishing through a
disconnect (paho holds QoS 1 messages and sends them again after reconnecting).

`Recording` holds packets recorded from the real edge agent (bench_fleet records them
once) with the time each was due: the end of its last frame's audio, so replaying keeps
the agent's batching and DTX timing. `Recording.loop(k)` is the k-th repetition of the
recording as one continuing stream (sequence numbers and frame indices carried on).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from gacflow.bitstream import decode_packet, encode_packet
from gacflow.cloud.loadgen import Publisher
from gacflow.spec import FRAME_RATE


class TrackedPublisher(Publisher):
    """A Publisher that knows which of its packets the broker has acknowledged."""

    def __init__(self, broker: str, device: str, codec_id: str, mode: str = "275",
                 mqtt_version: str = "auto") -> None:
        self.lock = threading.Lock()
        self.sent: dict[int, float] = {}  # mid -> time published
        self.acked: set[int] = set()
        super().__init__(broker, device, codec_id, mode, mqtt_version)

    def _make_client(self, protocol: int) -> mqtt.Client:
        client = super()._make_client(protocol)
        client.on_publish = self._on_publish
        return client

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self.lock:
            self.acked.add(mid)

    def publish(self, payload: bytes) -> mqtt.MQTTMessageInfo:
        # not under self.lock: paho calls on_publish holding its own lock, which publish()
        # takes too (lock order). A PUBACK before we note the mid is fine: sets, not order.
        t = time.time()
        info = super().publish(payload)
        with self.lock:
            self.sent[info.mid] = t
        return info

    def unacked(self) -> int:
        with self.lock:
            return len(set(self.sent) - self.acked)

    def wait_mid(self, mid: int, timeout: float) -> bool:
        """Wait for one packet's PUBACK (an ordering window of 1, like the agent's queue)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                if mid in self.acked:
                    return True
            time.sleep(0.01)
        return False

    def wait_acked(self, timeout: float) -> bool:
        deadline = time.time() + timeout
        while self.unacked() and time.time() < deadline:
            time.sleep(0.1)
        return not self.unacked()


@dataclasses.dataclass
class Recording:
    """Packets of one agent stream and when each was due (s after the stream started)."""

    packets: list[bytes]
    due: list[float]
    frames: int  # frames the stream spans

    @classmethod
    def load(cls, path: str | Path) -> Recording:
        d = json.loads(Path(path).read_text())
        return cls([bytes.fromhex(h) for h in d["packets"]], d["due"], d["frames"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"packets": [p.hex() for p in self.packets],
                                          "due": self.due, "frames": self.frames}))

    @classmethod
    def from_packets(cls, packets: list[bytes], entropy=None) -> Recording:
        """Due times from the packets themselves: a packet leaves once its audio is in."""
        ps = [decode_packet(b, entropy) for b in packets]
        due = [(p.first_frame + p.frame_count) / FRAME_RATE for p in ps]
        frames = max(p.first_frame + p.frame_count for p in ps)
        return cls(packets, due, frames)

    @property
    def duration(self) -> float:
        return self.frames / FRAME_RATE

    def loop(self, k: int, entropy=None, last: bool = False,
             stream_id: int | None = None) -> list[bytes]:
        """Repetition k as the continuation of one stream (eos only on the `last` one)."""
        n = len(self.packets)
        out = []
        for i, b in enumerate(self.packets):
            p = decode_packet(b, entropy)
            sid = p.stream_id if stream_id is None else stream_id
            p = dataclasses.replace(p, stream_id=sid, seq=(p.seq + k * n) & 0xFFFF,
                                    first_frame=p.first_frame + k * self.frames,
                                    eos=last and i == n - 1)
            out.append(encode_packet(p, entropy))
        return out
