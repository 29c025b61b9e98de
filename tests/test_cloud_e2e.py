"""The receiver against a real mosquitto: several devices, loss/reorder, garbage, redecode."""

from __future__ import annotations

import sqlite3
import struct
import threading
import time
import zlib

import numpy as np
import pytest
import soundfile as sf
import torch

from gacflow.cloud import cli
from gacflow.cloud.config import parse_broker
from gacflow.cloud.loadgen import Publisher, packetize
from gacflow.cloud.receiver import Receiver
from gacflow.cloud.streams import StreamPolicy
from gacflow.cloud.subscriber import Subscriber

torch.set_num_threads(1)
SEG = 16000 * 6  # 6 s per device


@pytest.fixture(scope="module")
def codec():
    from gacflow.model import Codec

    return Codec.from_bundle()


class RunningReceiver:
    """An in-process receiver (subscriber + main loop thread) on a real broker."""

    def __init__(self, codec, url: str, out, client_id: str = "rx-test",
                 mqtt_version: str = "5") -> None:
        self.rx = Receiver(codec, out, out / "archive.sqlite",
                           StreamPolicy(reorder_timeout=0.5, idle_timeout=2.0))
        self.sub = Subscriber(parse_broker(url), client_id, mqtt_version=mqtt_version)
        self.stop_event = threading.Event()
        self.sub.start()
        assert self.sub.wait_connected(10)
        self.thread = threading.Thread(target=self.rx.run, args=(self.sub, self.stop_event))
        self.thread.start()

    def wait_sessions(self, n: int, timeout: float = 60.0, device: str | None = None
                      ) -> dict[str, tuple]:
        """Finished sessions by device, once `n` have finished (and one of `device`)."""
        deadline = time.time() + timeout

        def waiting() -> bool:
            done = self.rx.finished
            return len(done) < n or (device is not None
                                     and all(s.device != device for s, _ in done))

        while waiting() and time.time() < deadline:
            assert self.thread.is_alive()
            time.sleep(0.1)
        return {s.device: (s, path) for s, path in self.rx.finished}

    def close(self) -> None:
        if self.stop_event.is_set():
            return
        self.stop_event.set()
        self.thread.join(30)
        self.sub.stop()
        self.rx.close()


@pytest.fixture
def receiver(codec, broker, tmp_path):
    r = RunningReceiver(codec, broker.url, tmp_path / "out")
    yield r
    r.close()


def stoi(ref, deg):
    from pystoi import stoi as _stoi

    n = min(len(ref), len(deg))
    return _stoi(ref[:n], deg[:n], 16000)


def test_three_devices_at_once_decode_like_offline(codec, broker, receiver, speech, tmp_path):
    inputs = {f"dev{i}": speech[i * SEG : (i + 1) * SEG] for i in range(3)}
    tokens = {d: codec.encode(w) for d, w in inputs.items()}
    pubs = [Publisher(broker.url, d, codec.codec_id) for d in inputs]
    threads = [threading.Thread(target=p.send,
                                args=(packetize(tokens[p.device].ids, "275", codec.layout), 6))
               for p in pubs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = receiver.wait_sessions(3)
    assert sorted(done) == sorted(inputs)
    for d, w in inputs.items():
        s, path = done[d]
        got, sr = sf.read(path, dtype="float32")
        offline = codec.decode(tokens[d])
        assert sr == 16000 and len(got) == len(tokens[d]) * 640 and s.gaps == 0
        assert abs(stoi(w, got) - stoi(w, offline)) < 0.02
    for p in pubs:
        p.close()
    assert receiver.rx.metrics.total("packets") == 3 * 6

    # the archive holds every packet: decode it all again, offline
    receiver.close()
    assert cli.main(["redecode", "--archive", str(tmp_path / "out" / "archive.sqlite"),
                     "--out", str(tmp_path / "again")]) == 0
    for d in inputs:
        s, path = done[d]
        again, _ = sf.read(tmp_path / "again" / d / path.name, dtype="float32")
        first, _ = sf.read(path, dtype="float32")
        np.testing.assert_allclose(again, first, atol=1e-3)


def test_reordered_duplicated_dropped_packets(codec, broker, receiver, speech):
    ids = codec.encode(speech[:SEG]).ids  # 150 frames
    pk = packetize(ids, "275", codec.layout, frames_per_packet=10)  # 15 packets
    order = [0, 2, 1, 3, 3, 4, 6, 5, 0, 7, 9, 10, 12, 11, 13, 14]  # packet 8 dropped
    pub = Publisher(broker.url, "jit", codec.codec_id)
    pub.send([pk[i] for i in order])
    other = Publisher(broker.url, "alien", "some-other-codec-00000000")
    other.send(pk[:3])
    s, path = receiver.wait_sessions(1)["jit"]
    got, _ = sf.read(path, dtype="float32")
    assert len(got) == 150 * 640  # right length, the hole concealed in place
    assert s.gaps == 1 and s.lost_frames == 10 and s.duplicates == 2
    m = receiver.rx.metrics
    assert m.counters["duplicates"]["jit"] == 2
    assert m.counters["gaps"]["jit"] == 1 and m.counters["lost_frames"]["jit"] == 10
    time.sleep(0.5)
    assert m.counters["codec_mismatch"]["alien"] == 3  # refused, not decoded
    assert all(sess.device != "alien" for sess, _ in receiver.rx.finished)
    pub.close()
    other.close()


def mutate(good: list[bytes], rng: np.random.Generator) -> bytes:
    """Random bytes, bit flips, truncation, padding, or header edits with a valid check byte."""
    kind = rng.integers(5)
    p = bytearray(good[rng.integers(len(good))])
    if kind == 0:
        return rng.bytes(int(rng.integers(0, 64)))
    if kind == 1:
        for _ in range(rng.integers(1, 4)):
            p[rng.integers(len(p))] ^= 1 << int(rng.integers(8))
        return bytes(p)
    if kind == 2:
        return bytes(p[: rng.integers(len(p))])
    if kind == 3:
        return bytes(p) + rng.bytes(int(rng.integers(1, 8)))
    # forge header fields (stream id, seq, first frame, count) and fix the check byte
    p[2:10] = rng.bytes(8) if rng.random() < 0.5 else p[2:5] + struct.pack(
        ">I", int(rng.integers(0, 2**24)))[1:] + p[8:10]
    p[10] = zlib.crc32(bytes(p[:10]) + bytes(p[11:])) & 0xFF
    return bytes(p)


def test_garbage_storm_does_not_stop_a_good_stream(codec, broker, receiver, speech):
    ids = codec.encode(speech[:SEG]).ids
    good = packetize(ids, "275", codec.layout)
    rng = np.random.default_rng(7)
    garbage = [mutate(good, rng) for _ in range(10_000)]
    fuzzer = Publisher(broker.url, "fuzz", codec.codec_id)
    dev = Publisher(broker.url, "good", codec.codec_id)
    t = threading.Thread(target=fuzzer.send, args=(garbage,))
    t.start()
    dev.send(good, realtime_frames=5)
    t.join()
    # forged packets may open and end a session of the fuzzing device first
    s, path = receiver.wait_sessions(1, device="good")["good"]
    got, _ = sf.read(path, dtype="float32")
    plain = codec.encode(speech[:SEG])
    plain.voice = None  # these packets carry tokens only (no voice code: no timbre EQ)
    ref = codec.decode(plain)
    assert len(got) == len(ids) * 640 and s.gaps == 0
    assert np.abs(got - ref[: len(got)]).max() < 2e-3
    m = receiver.rx.metrics
    deadline = time.time() + 60
    while m.counters["packets"]["fuzz"] < 10_000 and time.time() < deadline:
        time.sleep(0.2)
    assert m.counters["packets"]["fuzz"] == 10_000
    assert m.counters["bad_packets"]["fuzz"] > 9_000
    assert receiver.thread.is_alive()
    fuzzer.close()
    dev.close()


def test_archive_rows_survive_and_metrics_page(receiver, codec, broker, speech):
    from urllib.request import urlopen

    from gacflow.cloud.metrics import serve

    server = serve(receiver.rx.metrics, 0)
    pub = Publisher(broker.url, "m1", codec.codec_id)
    pub.send(packetize(codec.encode(speech[:16000]).ids, "275", codec.layout))
    receiver.wait_sessions(1)
    port = server.server_address[1]
    text = urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    assert 'gacflow_packets_total{device="m1"} 1' in text and "gacflow_decode_rtf" in text
    assert urlopen(f"http://127.0.0.1:{port}/health").status == 200
    server.shutdown()
    pub.close()
    db = sqlite3.connect(receiver.rx.archive.path)
    assert db.execute("SELECT count(*) FROM packets WHERE device='m1'").fetchone()[0] == 1


def test_mqtt311_persistent_session_keeps_packets_sent_while_away(codec, broker, tmp_path,
                                                                  speech):
    ids = codec.encode(speech[: 16000 * 3]).ids
    packets = packetize(ids, "275", codec.layout)
    first = RunningReceiver(codec, broker.url, tmp_path / "a", "rx-311", "3.1.1")
    first.close()  # away: the broker keeps the clean_session=False session
    pub = Publisher(broker.url, "away", codec.codec_id)
    pub.send(packets)
    second = RunningReceiver(codec, broker.url, tmp_path / "a", "rx-311", "3.1.1")
    try:
        s, path = second.wait_sessions(1)["away"]
        assert s.frames == len(ids) and s.gaps == 0
    finally:
        second.close()
        pub.close()


def test_broker_restart_mid_stream(codec, broker, receiver, speech):
    ids = codec.encode(speech[: 16000 * 4]).ids
    packets = packetize(ids, "275", codec.layout)
    pub = Publisher(broker.url, "bounce", codec.codec_id)
    pub.send(packets[:2])
    time.sleep(0.5)
    broker.restart()  # persistence on: sessions and queued messages survive
    deadline = time.time() + 30
    while not (pub.client.is_connected() and receiver.sub.connected) and time.time() < deadline:
        time.sleep(0.1)
    pub.send(packets[2:])
    s, _ = receiver.wait_sessions(1)["bounce"]
    assert s.frames == len(ids) and s.gaps == 0
    assert receiver.sub.connected
    pub.close()
