"""On-disk packet queue (SQLite, WAL): packets survive broker outages, crashes and power cuts.

A packet is inserted when it is produced and deleted only when the broker acknowledged
it (PUBACK). Row ids increase, so reading in id order publishes in production order,
also across restarts. `synchronous=FULL` makes every insert durable before the agent
goes on (one fsync per packet: at most a few per second).

Size cap, drop policy: when `max_packets` rows are queued, inserting a new packet drops
the *oldest* ones and counts them in `dropped` (persisted): during a very long outage
the newest speech is kept, and a receiver sees the gap as missing sequence numbers.

The queue also stores the stream-id counter, so a restarted agent starts a new stream,
and a random stream nonce chosen when the file is created: stream ids (one byte) restart
at 0 in a new or wiped queue, and the nonce (sent in the birth message) lets a receiver
tell those streams from a replay of the old ones with the same device id.

Faults: a queue file that is not a readable SQLite database at start (a torn SD card
write, a truncated file) is renamed to `<queue>.corrupt-<UTC time>` and a fresh queue
started, with one error line: the agent keeps working and the bad file is kept for
inspection. A full disk (SQLITE_FULL) does not lose the packet: it is held in memory
(up to `max_held` packets; beyond, the oldest held are dropped and counted) and written
before any newer one as soon as an insert succeeds again; `write_errors` counts the
failed writes (the agent's stats: `queue_write_errors`) and an error line says so.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gacflow.errors import ConfigError, GacflowError
from gacflow.fileio import set_aside

SCHEMA = """
CREATE TABLE IF NOT EXISTS packets (id INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
SQLITE_FULL = 13
log = logging.getLogger("gacflow.edge.queue")


class DiskFullError(GacflowError):
    """The queue's disk (or file system quota) is full."""


class DiskQueue:
    """Thread-safe FIFO of packet payloads in one SQLite file."""

    def __init__(self, path: str | Path, max_packets: int = 100_000,
                 max_held: int = 10_000) -> None:
        self.path = Path(path)
        self.max_packets = max_packets
        self.max_held = max_held
        self.write_errors = 0
        self.set_aside: Path | None = None  # where a corrupt file found at start went
        self._held: deque[bytes] = deque()  # packets the full disk did not take yet
        self._held_dropped = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._open()
            except sqlite3.DatabaseError as exc:  # not a database, malformed image
                if getattr(self, "_db", None) is not None:
                    self._db.close()
                self.set_aside = set_aside(self.path)
                log.error("event=queue_corrupt error=%r set_aside=%s (a fresh queue is "
                          "started)", str(exc), self.set_aside)
                self._open()
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"queue {self.path}: cannot open ({exc})") from exc
        self._lock = threading.Lock()

    def _open(self) -> None:
        self._db = sqlite3.connect(str(self.path), check_same_thread=False,
                                   isolation_level=None, timeout=10)
        check = self._db.execute("PRAGMA quick_check").fetchone()[0]  # before any write
        if check != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {check}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._count = self._db.execute("SELECT COUNT(*) FROM packets").fetchone()[0]

    @contextmanager
    def _tx(self, what: str) -> Iterator[None]:
        """One locked write transaction; a disk error becomes one clear GacflowError."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                full = getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL
                raise (DiskFullError if full else GacflowError)(
                    f"queue {self.path}: {what} failed ({exc})") from exc

    def _meta(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def _set_meta(self, key: str, value: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @property
    def dropped(self) -> int:
        with self._lock:
            return self._meta("dropped") + self._held_dropped

    @property
    def held(self) -> int:
        """Packets waiting in memory for disk space (not yet publishable)."""
        return len(self._held)

    def __len__(self) -> int:
        with self._lock:
            return self._count + len(self._held)

    def new_stream_id(self) -> int:
        """0, 1, ..., 255, 0, ...: one per agent session, remembered across restarts."""
        with self._tx("stream id update"):
            sid = self._meta("next_stream_id")
            self._set_meta("next_stream_id", (sid + 1) % 256)
        return sid

    def stream_nonce(self) -> str:
        """This queue's stream nonce (16 hex digits): random, chosen on first use of the file."""
        with self._tx("stream nonce update"):
            value = self._meta("stream_nonce")
            if not value:
                value = secrets.randbits(63) or 1
                self._set_meta("stream_nonce", value)
        return f"{value:016x}"

    def put(self, payload: bytes) -> int:
        """Append a packet durably (after any held by a full disk); drop the oldest beyond
        the cap. Returns the number dropped. A full disk holds it in memory instead."""
        self._held.append(payload)
        dropped = 0
        while self._held:
            try:
                dropped += self._insert(self._held[0])
            except DiskFullError as exc:
                self.write_errors += 1
                if self.write_errors == 1 or self.write_errors % 100 == 0:
                    log.error("event=queue_disk_full error=%r held_in_memory=%d write_errors=%d",
                              str(exc), len(self._held), self.write_errors)
                while len(self._held) > self.max_held:
                    self._held.popleft()
                    self._held_dropped += 1
                    dropped += 1
                return dropped
            self._held.popleft()
        return dropped

    def _insert(self, payload: bytes) -> int:
        with self._tx("insert"):
            excess = max(0, self._count + 1 - self.max_packets)
            if excess:
                cur = self._db.execute(
                    "DELETE FROM packets WHERE id IN "
                    "(SELECT id FROM packets ORDER BY id LIMIT ?)", (excess,))
                excess = cur.rowcount
                self._set_meta("dropped", self._meta("dropped") + excess)
            self._db.execute("INSERT INTO packets (payload) VALUES (?)", (payload,))
            self._count += 1 - excess
        return excess

    def after(self, last_id: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` packets with id > last_id, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, payload FROM packets WHERE id > ? ORDER BY id LIMIT ?",
                (last_id, limit)).fetchall()
        return [(int(i), bytes(p)) for i, p in rows]

    def delete(self, packet_id: int) -> None:
        """Forget an acknowledged packet (no-op if it was already dropped)."""
        with self._tx("delete"):
            cur = self._db.execute("DELETE FROM packets WHERE id=?", (packet_id,))
            self._count -= cur.rowcount

    def close(self) -> None:
        if self._held:
            log.error("event=queue_closed_with_held lost=%d (the disk stayed full)",
                      len(self._held))
        with self._lock:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
