"""The receiver reports the rate a device achieved: payload bytes of the packets it placed
over the seconds of stream they carry (what `--max-bitrate` holds on the edge)."""

from __future__ import annotations

import logging
import time

import numpy as np

from gacflow.cloud.loadgen import packetize
from gacflow.cloud.receiver import Receiver
from gacflow.cloud.subscriber import Message
from gacflow.model import Codec
from gacflow.topics import status_message, topic


def test_receiver_reports_the_achieved_payload_rate_without_duplicates(tmp_path, caplog):
    codec = Codec.from_bundle()
    rx = Receiver(codec, tmp_path / "out")
    size = codec.layout.mode("275").codebook_size
    ids = np.random.default_rng(3).integers(0, size, 100)  # 4 s in 1 s packets
    packets = packetize(ids, "275", codec.layout, 25, stream_id=0, entropy=codec.entropy)
    # rate control: the second half of the stream went out in the 175 mode
    low = packetize(codec.layout.base_tokens(ids), "175", codec.layout, 25, stream_id=0,
                    entropy=codec.entropy)
    sent = packets[:2] + low[2:]

    def send(kind: str, data: bytes) -> None:
        rx.handle(Message(topic("d", kind), data, time.time(), 0, 1))

    try:
        send("status", status_message(True, codec_id=codec.codec_id, stream_nonce="ab"))
        with caplog.at_level(logging.INFO, logger="gacflow.cloud"):
            for data in sent + sent[:1]:  # one duplicate: not part of the achieved rate
                send("tokens", data)
            rx.tick(time.time() + 60, final=True)
        m = rx.metrics
        expected = sum(map(len, sent)) * 8 / 4.0
        assert abs(m.bitrate("d") - expected) < 1e-6
        assert m.counters["packets_175"]["d"] == 2 and m.counters["duplicates"]["d"] == 1
        assert f'gacflow_bitrate{{device="d"}} {expected:.2f}' in m.render()
        done = [r.getMessage() for r in caplog.records if "done" in r.getMessage()]
        assert len(done) == 1 and "(2 at 175)" in done[0]
        assert f"{expected:.0f} bit/s payload" in done[0]
    finally:
        rx.close()
