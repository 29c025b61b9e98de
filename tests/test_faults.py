"""Faults at rest and on disk: a corrupt edge queue or receiver archive at start is set
aside, not fatal; a full disk holds packets (edge) or leaves them unacknowledged (cloud),
with an error line and a counter, and nothing is lost once there is room again.

A full disk is made with SQLite's `max_page_count`: the database then fails exactly as on
a full file system (SQLITE_FULL, "database or disk is full").
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

import pytest

from gacflow.cloud.sinks import Archive, ArchiveWriteError
from gacflow.edge.disk_queue import SCHEMA, DiskQueue


def fill_disk(db: sqlite3.Connection) -> None:
    """No page beyond the ones the file has now."""
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count={pages}")


def free_disk(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA max_page_count=1073741823")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_queue_is_set_aside_and_a_fresh_one_started(tmp_path, damage, caplog):
    path = tmp_path / "queue.db"
    if damage == "garbage":
        path.write_bytes(b"this is not an SQLite file" * 100)
    else:
        with sqlite3.connect(path) as db:  # a big real queue file, without 3000 fsyncs
            db.executescript(SCHEMA)
            db.executemany("INSERT INTO packets (payload) VALUES (?)",
                           [(b"packet %05d " % i + bytes(100),) for i in range(3000)])
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] + bytes(4096) + data[len(data) // 2 + 4096:])
    before = path.read_bytes()
    with caplog.at_level(logging.ERROR):
        q = DiskQueue(path)
    assert q.set_aside is not None and q.set_aside.read_bytes() == before
    assert "event=queue_corrupt" in caplog.text
    q.put(b"new")
    assert [p for _, p in q.after(0, 10)] == [b"new"]
    q.close()


def test_a_corrupt_archive_is_set_aside_and_a_fresh_one_started(tmp_path, caplog):
    path = tmp_path / "archive.sqlite"
    path.write_bytes(b"\x00garbage" * 1000)
    with caplog.at_level(logging.ERROR):
        a = Archive(path)
    assert a.set_aside is not None and a.set_aside.read_bytes() == b"\x00garbage" * 1000
    assert "set aside" in caplog.text
    a.add_packet("d", 1.0, b"x", None, "test")
    a.commit()
    assert a.db.execute("SELECT count(*) FROM packets").fetchone()[0] == 1
    a.close()


def test_edge_queue_on_a_full_disk_holds_packets_in_order(tmp_path, caplog):
    q = DiskQueue(tmp_path / "queue.db")
    q.put(b"first")
    fill_disk(q._db)
    with caplog.at_level(logging.ERROR):
        n = 0
        while q.write_errors == 0:
            q.put(b"p%05d" % n + bytes(500))
            n += 1
        for _ in range(20):  # the disk stays full for a while
            q.put(b"p%05d" % n + bytes(500))
            n += 1
    assert "event=queue_disk_full" in caplog.text
    assert q.held >= 20 and q.write_errors >= 21 and q.dropped == 0
    assert len(q) == n + 1
    free_disk(q._db)
    q.put(b"p%05d" % n + bytes(500))
    n += 1
    assert q.held == 0
    got = [p[:6] for _, p in q.after(0, 10 * n)]
    assert got == [b"first"[:6]] + [b"p%05d" % i for i in range(n)]
    q.close()


def test_archive_on_a_full_disk_keeps_rows_pending(tmp_path):
    a = Archive(tmp_path / "archive.sqlite")
    fill_disk(a.db)
    for i in range(200):
        a.add_packet("d", float(i), bytes(1000), "s", None)
    with pytest.raises(ArchiveWriteError, match="full"):
        a.commit()
    assert len(a.pending) == 200 and a.write_errors == 1
    free_disk(a.db)
    a.commit()
    assert a.db.execute("SELECT count(*) FROM packets").fetchone()[0] == 200
    a.close()


def test_receiver_on_a_full_archive_disk_loses_nothing(broker, tmp_path, speech):
    """Messages are not acknowledged while the archive cannot commit; once it can, every
    packet is archived once and the stream is complete."""
    import torch

    from gacflow.cloud.config import parse_broker
    from gacflow.cloud.loadgen import Publisher, packetize
    from gacflow.cloud.receiver import Receiver
    from gacflow.cloud.streams import StreamPolicy
    from gacflow.cloud.subscriber import Subscriber
    from gacflow.model import Codec

    torch.set_num_threads(1)
    codec = Codec.from_bundle()
    rx = Receiver(codec, tmp_path / "out", tmp_path / "out" / "archive.sqlite",
                  StreamPolicy(reorder_timeout=0.5, idle_timeout=3.0))
    db = rx.archive.db  # fill the free room of its pages too: the next row needs a new one
    fill_disk(db)
    for size in (1000, 100, 10, 0):
        try:
            while True:
                db.execute("INSERT INTO packets (device, arrival, payload) VALUES "
                           "('filler', 0, ?)", (bytes(size),))
                db.commit()
        except sqlite3.OperationalError:
            db.rollback()
    sub = Subscriber(parse_broker(broker.url), "rx-full", mqtt_version="5")
    stop = threading.Event()
    loop = threading.Thread(target=rx.run, args=(sub, stop))
    sub.start()
    assert sub.wait_connected(10)
    loop.start()
    pub = Publisher(broker.url, "full", codec.codec_id)
    try:
        ids = codec.encode(speech[: 16000 * 4]).ids
        packets = packetize(ids, "275", codec.layout, frames_per_packet=5)  # 20 packets
        pub.send(packets)
        deadline = time.time() + 20
        while rx.metrics.gauges["archive_write_errors_total"] == 0 and time.time() < deadline:
            time.sleep(0.05)
        assert rx.metrics.gauges["archive_write_errors_total"] > 0
        assert rx.metrics.gauges["archive_pending_rows"] > 0
        time.sleep(1.0)
        free_disk(rx.archive.db)  # room again
        deadline = time.time() + 30
        while (not rx.finished or rx.archive.pending or rx.unacked) and time.time() < deadline:
            time.sleep(0.1)
        (s, _path), = rx.finished
        assert s.frames == len(ids) and s.gaps == 0
        with sqlite3.connect(rx.archive.path) as db:
            rows = db.execute("SELECT payload FROM packets WHERE device='full' "
                              "ORDER BY id").fetchall()
        assert [bytes(r[0]) for r in rows] == packets  # each once, in order
        assert rx.metrics.gauges["archive_pending_rows"] == 0 and not rx.unacked
    finally:
        pub.close()
        stop.set()
        loop.join(30)
        sub.stop()
        rx.close()
