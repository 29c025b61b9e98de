"""Stream identity survives queue loss (issue 27): a device id streaming again with a fresh
queue is a new stream, not a replay; a real replay of old packets is still a duplicate.

The end-to-end test runs the real edge agent twice (subprocess, INT8 ONNX, like
tests/test_cloud_edge.py) against a real mosquitto and an in-process receiver; the unit
tests drive `StreamTable` directly for the cases an agent cannot easily produce.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import soundfile as sf

from gacflow.audio import write_wav
from gacflow.bitstream import Packet, read_packet
from gacflow.bundle import Bundle
from gacflow.cloud.streams import StreamTable
from gacflow.topics import topic

BUNDLE = Bundle.load()
LAYOUT = BUNDLE.layout
DEVICE = "m9"


def split_packets(data: bytes) -> list[tuple[bytes, Packet]]:
    """A --packet-log file (concatenated packets) -> [(exact bytes, packet)]."""
    out, pos = [], 0
    while pos < len(data):
        p, end = read_packet(data, pos, BUNDLE.entropy)
        out.append((data[pos:end], p))
        pos = end
    return out


def run_agent(broker_url: str, wav, queue, packet_log) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "gacflow.edge.cli", "--broker", broker_url,
         "--device-id", DEVICE, "--input", str(wav), "--backend", "onnx",
         "--batch-seconds", "1", "--no-dtx", "--queue", str(queue),
         "--packet-log", str(packet_log)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()


def replay(broker_url: str, payloads: list[bytes]) -> None:
    """Publish the exact bytes again on the device's tokens topic (no birth message)."""
    host, port = broker_url.removeprefix("mqtt://").split(":")
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="replayer")
    c.connect(host, int(port))
    c.loop_start()
    try:
        for data in payloads:
            c.publish(topic(DEVICE, "tokens"), data, qos=1).wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()


def wait_for(cond, timeout: float, alive) -> None:
    deadline = time.time() + timeout
    while not cond() and time.time() < deadline:
        assert alive()
        time.sleep(0.1)


@pytest.mark.skipif(not BUNDLE.has("encoder.int8.onnx"), reason="bundle has no INT8 encoder")
def test_fresh_queue_twice_gives_two_wavs_and_a_replay_stays_a_duplicate(
        broker, speech, tmp_path):
    pytest.importorskip("onnxruntime")
    from test_cloud_e2e import RunningReceiver

    from gacflow.model import Codec

    rx = RunningReceiver(Codec.from_bundle(), broker.url, tmp_path / "out",
                         client_id="rx-identity")
    m = rx.rx.metrics
    wav = tmp_path / "talk.wav"
    write_wav(wav, speech[: 4 * 16000])
    logs = {}
    try:
        # the reported case: same device id, same input, a new queue each time (re-flash)
        for run in ("a", "b"):
            logs[run] = tmp_path / f"{run}.gac"
            run_agent(broker.url, wav, tmp_path / f"q{run}.db", logs[run])
            n = len(logs)
            wait_for(lambda n=n: len(rx.rx.finished) >= n, 60, rx.thread.is_alive)
        packets = {run: split_packets(path.read_bytes()) for run, path in logs.items()}
        assert [p.stream_id for _, p in packets["a"]][:1] == [0]
        assert [p.stream_id for _, p in packets["b"]][:1] == [0]  # the id really restarted
        frames = sum(p.frame_count for _, p in packets["a"])
        assert len(rx.rx.finished) == 2
        paths = {path for _, path in rx.rx.finished}
        assert len(paths) == 2
        for s, path in rx.rx.finished:
            audio, _ = sf.read(path, dtype="float32")
            assert s.device == DEVICE and s.gaps == 0 and s.frames == frames
            assert len(audio) == frames * 640 and np.abs(audio).max() > 0.01
        assert m.counters["packets"][DEVICE] == 2 * len(packets["a"])
        assert m.total("duplicates") == 0 and m.total("refused_packets") == 0
        assert m.counters["sessions"][DEVICE] == 2
        assert isinstance(rx.rx.nonces.get(DEVICE), str)  # the birth message carried one

        # a real replay: the exact bytes of the first stream, republished
        replay(broker.url, [data for data, _ in packets["a"]])
        total = 3 * len(packets["a"])
        wait_for(lambda: m.counters["packets"][DEVICE] >= total, 30, rx.thread.is_alive)
        time.sleep(3.0)  # longer than the receiver's idle timeout: a stray session would end
        assert m.counters["packets"][DEVICE] == total
        assert m.total("duplicates") == len(packets["a"])
        assert m.total("refused_packets") == 0
        assert len(rx.rx.finished) == 2 and not rx.rx.table.sessions
        assert len(list((tmp_path / "out").rglob("*.wav"))) == 2
    finally:
        rx.close()


def test_the_stream_nonce_is_kept_by_a_queue_and_new_in_a_new_one(tmp_path):
    from gacflow.edge.disk_queue import DiskQueue

    q = DiskQueue(tmp_path / "a.db")
    nonce = q.stream_nonce()
    q.close()
    again = DiskQueue(tmp_path / "a.db")
    assert again.stream_nonce() == nonce and len(nonce) == 16
    again.close()
    other = DiskQueue(tmp_path / "b.db")
    assert other.stream_nonce() != nonce
    other.close()


# --- StreamTable, directly -------------------------------------------------------------

def stream(seed: int, n: int = 3, stream_id: int = 0) -> list[Packet]:
    ids = np.random.default_rng(seed).integers(0, 1 << 10, 10 * n)
    return [Packet(stream_id, k, 10 * k, ids[10 * k : 10 * (k + 1)], 10, "275",
                   eos=k == n - 1) for k in range(n)]


def play(table: StreamTable, packets: list[Packet], now: float, nonce: str | None) -> list[str]:
    return [table.route("d", p, now, nonce)[1].outcome for p in packets]


def test_a_new_nonce_starts_a_new_stream_even_with_the_same_content():
    table = StreamTable(LAYOUT)
    assert play(table, stream(1), 0.0, "aa") == ["new"] * 3
    assert len(table.tick(0.0)) == 1
    assert play(table, stream(1), 1.0, "bb") == ["new"] * 3  # same bytes, new queue
    assert len(table.tick(1.0)) == 1
    assert play(table, stream(1), 2.0, "bb") == ["duplicate"] * 3


def test_a_replay_of_an_older_stream_is_a_duplicate_after_the_nonce_changed():
    table = StreamTable(LAYOUT)
    play(table, stream(1), 0.0, "aa")
    table.tick(0.0)
    play(table, stream(2), 1.0, "bb")
    table.tick(1.0)
    assert play(table, stream(1), 2.0, "bb") == ["duplicate"] * 3
    assert not table.sessions


def test_other_content_under_the_same_identity_is_refused_not_a_duplicate():
    table = StreamTable(LAYOUT)
    play(table, stream(1), 0.0, "aa")
    assert play(table, stream(3)[:1], 0.1, "aa") == ["refused"]  # live session
    table.tick(0.1)
    assert play(table, stream(3), 1.0, "aa") == ["refused"] * 3  # ended session
    (s,) = table.recent.values()
    assert s.refused == 4 and s.duplicates == 0 and not table.sessions


def test_without_a_nonce_other_content_after_the_end_is_a_new_stream():
    table = StreamTable(LAYOUT)
    play(table, stream(1), 0.0, None)
    table.tick(0.0)
    assert play(table, stream(3), 1.0, None) == ["new"] * 3
    assert play(table, stream(1)[:1], 1.1, None) == ["duplicate"]


def test_a_resumed_session_of_unknown_nonce_is_claimed_by_the_birth_nonce():
    table = StreamTable(LAYOUT)
    first, *rest = stream(1)
    s = table.session_for("d", first, 0.0)  # as Receiver.recover does
    s.place(first, 0.0)
    assert play(table, rest, 0.1, "aa") == ["new", "new"]
    assert list(table.sessions) == [("d", 0, "aa")]


def test_the_receiver_logs_and_counts_refused_packets_apart_from_duplicates(tmp_path, caplog):
    import logging

    from gacflow.cloud.loadgen import packetize
    from gacflow.cloud.receiver import Receiver
    from gacflow.cloud.subscriber import Message
    from gacflow.model import Codec
    from gacflow.topics import status_message

    codec = Codec.from_bundle()
    rx = Receiver(codec, tmp_path / "out")
    size = codec.layout.mode("275").codebook_size
    a, b = (packetize(np.random.default_rng(seed).integers(0, size, 30), "275", codec.layout,
                      10, stream_id=0, entropy=codec.entropy) for seed in (1, 2))

    def send(kind: str, data: bytes) -> None:
        rx.handle(Message(topic("d", kind), data, time.time(), 0, 1))

    try:
        send("status", status_message(True, codec_id=codec.codec_id, stream_nonce="aa"))
        for data in a + a[:1]:
            send("tokens", data)
        with caplog.at_level(logging.WARNING, logger="gacflow.cloud"):
            for data in b[:2]:  # other content, same device, stream id and nonce
                send("tokens", data)
        m = rx.metrics
        assert m.counters["refused_packets"]["d"] == 2 and m.counters["duplicates"]["d"] == 1
        assert sum("refused" in r.getMessage() for r in caplog.records) == 1
        assert 'gacflow_refused_packets_total{device="d"} 2' in m.render()
    finally:
        rx.close()
