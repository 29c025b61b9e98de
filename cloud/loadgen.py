"""A synthetic device for tests and benchmarks: packetize tokens and publish them over MQTT.

It speaks exactly what an edge agent speaks (retained birth status, QoS 1 packets on
gacflow/v1/<device>/tokens) but takes tokens from the torch codec, and can reorder,
duplicate or drop packets to exercise the receiver's jitter buffer.

MQTT version: like the agent (`--mqtt-version auto`), MQTT 5 first and 3.1.1 when the
broker refuses it or hangs up on it (the embedded demo broker speaks only 3.1.1), through
the shared `gacflow.mqtt_version.connect_negotiated`.
"""

from __future__ import annotations

import secrets
import time

import numpy as np
import paho.mqtt.client as mqtt

from gacflow import topics
from gacflow.bitstream import Packet, encode_packet
from gacflow.entropy import EntropyModel
from gacflow.mqtt_version import connect_negotiated
from gacflow.spec import FRAME_RATE, TokenLayout

from .config import parse_broker


def packetize(ids: np.ndarray, mode: str, layout: TokenLayout, frames_per_packet: int = 25,
              stream_id: int = 1, entropy: EntropyModel | None = None,
              voice: bytes | None = None) -> list[bytes]:
    """Token ids -> encoded packets (entropy-coded with `entropy`, as the edge agent codes
    them); the first one carries the voice code, if given, the last one end-of-stream."""
    width = layout.mode(mode).bits
    out = []
    starts = list(range(0, max(1, len(ids)), frames_per_packet))
    for k, a in enumerate(starts):
        chunk = np.asarray(ids[a : a + frames_per_packet], dtype=np.int64)
        out.append(encode_packet(Packet(stream_id, k & 0xFFFF, a, chunk, width, mode,
                                        eos=k == len(starts) - 1,
                                        voice=voice if k == 0 else None), entropy))
    return out


class Publisher:
    """A paho client that publishes as device `device` (QoS 1, retained birth message).

    `mqtt_version` is "auto" (5, falling back to 3.1.1), "5" or "3.1.1"; `.protocol` says
    which one the broker took. paho reconnects the client by itself after that.
    """

    def __init__(self, broker: str, device: str, codec_id: str, mode: str = "275",
                 mqtt_version: str = "auto") -> None:
        url = parse_broker(broker)
        self.device = device
        self.client, self.protocol = connect_negotiated(self._make_client, url.host, url.port,
                                                        mqtt_version)
        # a fresh nonce per publisher, as an agent with a new queue has (docs/cloud.md)
        self.status(True, codec_id=codec_id, mode=mode, stream_nonce=secrets.token_hex(8))

    def _make_client(self, protocol: int) -> mqtt.Client:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{self.device}",
                             protocol=protocol)
        client.will_set(topics.topic(self.device, "status"),
                        topics.status_message(False), qos=1, retain=True)
        client.max_inflight_messages_set(1000)
        return client

    def status(self, online: bool, **fields) -> None:
        self.client.publish(topics.topic(self.device, "status"),
                            topics.status_message(online, **fields), qos=1,
                            retain=True).wait_for_publish(10)

    def publish(self, payload: bytes) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topics.topic(self.device, "tokens"), payload, qos=1)

    def send(self, packets: list[bytes], realtime_frames: int = 0) -> None:
        """Publish packets; with realtime_frames, pace them as a live agent would."""
        infos = []
        for p in packets:
            infos.append(self.publish(p))
            if realtime_frames:
                time.sleep(realtime_frames / FRAME_RATE)
        for i in infos:
            i.wait_for_publish(30)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
