"""The fleet deployment survives a broker node and a worker dying mid-stream (RabbitMQ).

A real 3-node RabbitMQ cluster on loopback ports, three worker processes, 20 devices
streaming through the MQTT balancer. Mid-stream one broker node and one worker are
killed (SIGKILL) and a new worker joins. Every worker's archive is then read back: each
device's packets 0..K-1 are all there (0 lost; duplicates from redelivery allowed), and
each worker saw each device's packets in order.

About 90 s on a loaded 2-core machine (the cluster alone boots in ~35 s), hence `slow`:
run it with `pytest -m slow tests/test_cluster_fault.py`.
"""

from __future__ import annotations

import sqlite3
import threading
import time

import numpy as np
import pytest

from gacflow.bitstream import decode_packet
from gacflow.cloud.cluster.nodes import rabbitmq_available

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not rabbitmq_available(), reason="rabbitmq-server not installed"),
]

DEVICES = 20
PACKETS = 48  # 1 s packets
PACE = 0.25  # s between a device's packets (4x real time)


def archived(out, worker: str, entropy) -> dict[str, list[int]]:
    """device -> sequence numbers in the order the worker archived them."""
    db = sqlite3.connect(f"file:{out / worker / 'archive.sqlite'}?mode=ro", uri=True)
    seqs: dict[str, list[int]] = {}
    for device, payload in db.execute(
            "SELECT device, payload FROM packets WHERE session IS NOT NULL ORDER BY id"):
        seqs.setdefault(device, []).append(decode_packet(payload, entropy).seq)
    db.close()
    return seqs


def test_node_and_worker_killed_mid_stream(tmp_path):
    from gacflow.cloud.cluster.fleetgen import TrackedPublisher
    from gacflow.cloud.cluster.local import LocalFleet
    from gacflow.cloud.loadgen import packetize
    from gacflow.model import Codec

    codec = Codec.from_bundle(device="cpu", decoder="small")
    rng = np.random.default_rng(26)
    fleet = LocalFleet(tmp_path, nodes=3, worker_args=["--no-decode", "--idle-timeout", "5"])
    pubs: list[TrackedPublisher] = []
    try:
        fleet.start()
        for w in ("w0", "w1", "w2"):
            fleet.add_worker(w)
        for w in ("w0", "w1", "w2"):
            assert fleet.wait_log(w, "members: w0, w1, w2"), (tmp_path / f"{w}.log").read_text()
        streams = {}
        for i in range(DEVICES):
            dev = f"dev-{i:02d}"
            ids = rng.integers(0, 1024, PACKETS * 25)
            streams[dev] = packetize(ids, "275", codec.layout, 25, stream_id=1,
                                     entropy=codec.entropy)
            pubs.append(TrackedPublisher(fleet.mqtt_url, dev, codec.codec_id))

        def stream(pub: TrackedPublisher, packets: list[bytes]) -> None:
            """Like the agent: publish in order at its pace, the next packet once the
            broker acknowledged the last (the agent's queue re-sends in order after a
            reconnect; paho alone would re-send in-flight ones after newer ones)."""
            for p in packets:
                t = time.time()
                pub.wait_mid(pub.publish(p).mid, 120)
                time.sleep(max(0.0, PACE - (time.time() - t)))
            pub.wait_acked(120)

        threads = [threading.Thread(target=stream, args=(p, streams[p.device]))
                   for p in pubs]
        for t in threads:
            t.start()
        time.sleep(3)
        fleet.cluster.kill(fleet.cluster.nodes[0])  # a broker node crashes
        time.sleep(2)
        fleet.kill_worker("w0")  # and a worker
        fleet.add_worker("w3")  # a new worker joins; the others keep running
        for t in threads:
            t.join(180)
        assert not any(t.is_alive() for t in threads), "devices could not publish"
        assert not any(p.unacked() for p in pubs), "the broker never acknowledged some packets"
        # every packet published (PUBACKed) must reach a worker's archive
        deadline = time.time() + 90
        while time.time() < deadline:
            got = {}
            for w in ("w0", "w1", "w2", "w3"):
                if (tmp_path / w / "archive.sqlite").exists():
                    for dev, seqs in archived(tmp_path, w, codec.entropy).items():
                        got.setdefault(dev, set()).update(seqs)
            if all(len(got.get(d, ())) == PACKETS for d in streams):
                break
            time.sleep(1)
        missing = {d: sorted(set(range(PACKETS)) - got.get(d, set())) for d in streams}
        assert not any(missing.values()), f"lost packets: {missing}"
        for w in ("w0", "w1", "w2", "w3"):
            if not (tmp_path / w / "archive.sqlite").exists():
                continue
            for dev, seqs in archived(tmp_path, w, codec.entropy).items():
                first = list(dict.fromkeys(seqs))  # first arrival of each packet
                assert first == sorted(first), f"{w} {dev} out of order: {seqs}"
        assert fleet.wait_log("w3", "owns"), "the new worker never took partitions"
    finally:
        for p in pubs:
            p.close()
        fleet.stop()
