"""One provisioned device floods the fleet's broker with 10 000 malformed and oversize
packets (and tries to open dozens of sessions) while three others stream: every good
stream arrives complete and bit-exact, the flood is dropped and counted per device, its
archive rows and sessions stay bounded, and the receiver keeps running."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from fleet_helpers import FleetBroker, device_client, make_fleet

from gacflow import topics
from gacflow.cloud.config import parse_broker
from gacflow.cloud.loadgen import packetize
from gacflow.cloud.quota import QuotaPolicy
from gacflow.cloud.receiver import Receiver
from gacflow.cloud.streams import StreamPolicy
from gacflow.cloud.subscriber import Subscriber

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")
torch.set_num_threads(1)
GOOD = ("a", "b", "c")
FLOOD = 10_000
QUOTA = QuotaPolicy(max_packet_bytes=2048, packets_per_s=200.0, burst=2000, max_sessions=4)


def garbage(good: list[bytes], n: int, rng: np.random.Generator) -> list[bytes]:
    """Random bytes, truncations, bit flips of real packets, and oversize blobs."""
    out = []
    for i in range(n):
        src = good[i % len(good)]
        kind = i % 4
        if kind == 0:
            out.append(rng.bytes(int(rng.integers(0, 64))))
        elif kind == 1:
            out.append(src[: int(rng.integers(0, len(src)))])
        elif kind == 2:
            b = bytearray(src)
            for j in rng.integers(0, len(b), 3):
                b[j] ^= 1 << int(rng.integers(0, 8))
            out.append(bytes(b))
        else:
            out.append(rng.bytes(int(rng.integers(4096, 16384))))
    return out


def test_a_flooding_device_leaves_every_other_stream_complete(tmp_path, speech):
    from gacflow.model import Codec

    codec = Codec.from_bundle()
    fleet = make_fleet(tmp_path / "fleet", "cert", devices=(*GOOD, "evil"))
    broker = FleetBroker(fleet).start()
    r = fleet.dir / "receiver"
    rx = Receiver(codec, tmp_path / "out", tmp_path / "out" / "archive.sqlite",
                  StreamPolicy(reorder_timeout=0.5, idle_timeout=2.0), quota=QUOTA)
    sub = Subscriber(parse_broker(broker.url), "gacflow-cloud-flood",
                     ca_file=str(r / "ca.crt"), cert_file=str(r / "client.crt"),
                     key_file=str(r / "client.key"))
    stop = threading.Event()
    loop = threading.Thread(target=rx.run, args=(sub, stop))
    clients = []
    try:
        sub.start()
        assert sub.wait_connected(10)
        loop.start()
        seg = 16000 * 2
        ids = {d: codec.encode(speech[i * seg : (i + 1) * seg]).ids for i, d in enumerate(GOOD)}
        evil = device_client(fleet, "evil", broker.port)
        assert evil.connect()
        clients.append(evil)
        evil.birth("evil", codec.codec_id)
        good_packets = packetize(ids["a"], "275", codec.layout)
        # valid packets, each opening a new stream (the session quota caps them), then junk
        junk = [packetize(ids["a"][:25], "275", codec.layout, stream_id=k)[0]
                for k in range(10, 50)]
        junk += garbage(good_packets, FLOOD - 40, np.random.default_rng(25))
        flood = threading.Thread(target=evil.publish_many,
                                 args=(topics.topic("evil", "tokens"), junk))
        flood.start()
        for d in GOOD:
            c = device_client(fleet, d, broker.port)
            assert c.connect()
            clients.append(c)
            c.birth(d, codec.codec_id)
        for k in range(len(good_packets)):  # interleaved with the flood, one packet each
            for d in GOOD:
                p = packetize(ids[d], "275", codec.layout)
                clients[1 + GOOD.index(d)].c.publish(topics.topic(d, "tokens"), p[k], qos=1)
            time.sleep(0.05)
        flood.join(120)
        deadline = time.time() + 90
        while time.time() < deadline and (len(rx.finished) < 3 or
                                          rx.metrics.counters["packets"]["evil"] < FLOOD):
            assert loop.is_alive()
            time.sleep(0.2)
        done = {s.device: (s, path) for s, path in rx.finished}
        for d in GOOD:
            s, path = done[d]
            assert s.frames == len(ids[d]) and s.gaps == 0 and s.refused == 0
            got, _ = sf.read(path, dtype="float32")
            assert len(got) == len(ids[d]) * 640
        m = rx.metrics
        assert m.counters["packets"]["evil"] == FLOOD
        dropped = m.counters["quota_dropped"]["evil"]
        bad = m.counters["bad_packets"]["evil"]
        assert dropped >= FLOOD // 4  # every oversize packet at least
        assert bad > 0 and dropped + bad >= FLOOD - 40
        assert rx.open_sessions.get("evil", 0) <= QUOTA.max_sessions
        for d in GOOD:
            assert m.counters["quota_dropped"][d] == 0 and m.counters["bad_packets"][d] == 0
        with sqlite3.connect(tmp_path / "out" / "archive.sqlite") as db:
            rows, size = db.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM "
                                    "packets WHERE device='evil'").fetchone()
        assert rows == FLOOD - dropped  # what is over quota costs no disk
        assert size <= rows * QUOTA.max_packet_bytes
        assert loop.is_alive()
    finally:
        for c in clients:
            c.close()
        stop.set()
        if loop.is_alive():
            loop.join(30)
        sub.stop()
        rx.close()
        broker.close()
