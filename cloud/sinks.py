"""Where decoded audio and received packets end up: WAV files and the SQLite token archive.

`WavSink` appends each session's audio to OUT/<device>/<session>.wav.part as it is
decoded (the live audio is on disk while the stream is still arriving) and renames it to
.wav when the session ends, so a .wav file is always complete.

`Archive` keeps every packet received (raw bytes, device, arrival time, the session it
was routed to, or the reason it was refused) in SQLite, so any stream can be decoded
again later, e.g. with a larger decoder (`gacflow-cloud redecode`). The receiver
acknowledges an MQTT message only after its row is committed: a receiver killed at any
moment loses nothing, because the broker redelivers what was not acknowledged and the
archive holds what was.

Faults: an archive that is not a readable SQLite database at start is set aside
(`<name>.corrupt-<UTC time>`, one error line) and a fresh one started. Rows are written
in one transaction per `commit()`; when it fails (disk full, I/O error) nothing of it is
kept on disk, the rows stay pending in memory, `commit` raises `ArchiveWriteError` and
the receiver does not acknowledge those messages (the broker keeps them: at most its
in-flight window, so memory stays bounded) and retries on every loop round until the
disk has room again.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gacflow.audio import write_wav
from gacflow.errors import ConfigError, GacflowError
from gacflow.fileio import set_aside
from gacflow.spec import SAMPLE_RATE

from .streams import Session

log = logging.getLogger("gacflow.cloud")


class ArchiveWriteError(GacflowError):
    """A commit of the archive failed (disk full, I/O error); its rows are still pending."""


class WavSink:
    """One 16-bit WAV per session, written incrementally, renamed into place at the end."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = Path(out)
        self.files: dict[tuple[str, str], object] = {}

    def path(self, s: Session) -> Path:
        return self.out / s.device / f"{s.name}.wav"

    def write(self, s: Session, audio: np.ndarray) -> None:
        import soundfile as sf

        key = (s.device, s.name)
        f = self.files.get(key)
        if f is None:
            part = self.path(s).with_suffix(".wav.part")
            part.parent.mkdir(parents=True, exist_ok=True)
            f = sf.SoundFile(str(part), "w", SAMPLE_RATE, 1, "PCM_16", format="WAV")
            self.files[key] = f
        f.write(audio)
        f.flush()

    def close(self, s: Session) -> Path:
        """Finish a session's file: rename the .part into place (an empty session -> empty WAV)."""
        f = self.files.pop((s.device, s.name), None)
        final = self.path(s)
        if f is None:
            write_wav(final, np.zeros(0, np.float32))
            return final
        f.close()
        os.replace(final.with_suffix(".wav.part"), final)
        return final

    def close_all(self) -> None:
        for f in self.files.values():
            f.close()
        self.files.clear()


SCHEMA = """
CREATE TABLE IF NOT EXISTS packets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL,
    arrival REAL NOT NULL,
    payload BLOB NOT NULL,
    session TEXT,            -- NULL when the packet was refused
    error TEXT               -- why it was refused
);
CREATE INDEX IF NOT EXISTS packets_session ON packets(session);
CREATE TABLE IF NOT EXISTS sessions (
    name TEXT NOT NULL,
    device TEXT NOT NULL,
    stream_id INTEGER NOT NULL,
    codec_id TEXT,
    started REAL NOT NULL,
    ended REAL,              -- NULL while live: replayed after a receiver restart
    frames INTEGER,
    gaps INTEGER,
    lost_frames INTEGER,
    wav TEXT,
    PRIMARY KEY (device, name)
);
"""


class Archive:
    """The SQLite token archive (WAL mode; one writer, the receiver's main loop)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.pending: list[tuple[str, tuple]] = []  # rows of the next commit
        self.write_errors = 0
        self.set_aside: Path | None = None  # where a corrupt archive found at start went
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._open()
            except sqlite3.DatabaseError as exc:  # not a database, malformed image
                self.db.close()
                self.set_aside = set_aside(self.path)
                log.error("archive %s unreadable (%s): set aside as %s, a fresh one started",
                          self.path, exc, self.set_aside)
                self._open()
        except (OSError, sqlite3.Error) as exc:  # a read-only disk, a folder, ...
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ConfigError(f"archive: {self.path}: cannot open ({reason})") from exc

    def _open(self) -> None:
        self.db = sqlite3.connect(str(self.path), check_same_thread=False)
        check = self.db.execute("PRAGMA quick_check").fetchone()[0]  # before any write
        if check != "ok":
            raise sqlite3.DatabaseError(f"integrity check: {check}")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.db.commit()

    def add_packet(self, device: str, arrival: float, payload: bytes,
                   session: str | None, error: str | None = None) -> None:
        self.pending.append((
            "INSERT INTO packets (device, arrival, payload, session, error) VALUES (?,?,?,?,?)",
            (device, arrival, payload, session, error)))

    def open_session(self, s: Session, codec_id: str | None) -> None:
        self.pending.append((
            "INSERT OR IGNORE INTO sessions (name, device, stream_id, codec_id, started) "
            "VALUES (?,?,?,?,?)", (s.name, s.device, s.stream_id, codec_id, s.started)))

    def close_session(self, s: Session, wav: str | None) -> None:
        self.pending.append((
            "UPDATE sessions SET ended=?, frames=?, gaps=?, lost_frames=?, wav=? "
            "WHERE device=? AND name=?",
            (time.time(), s.frames, s.gaps, s.lost_frames, wav, s.device, s.name)))

    def commit(self) -> None:
        """Write every pending row in one transaction; ArchiveWriteError keeps them pending."""
        if not self.pending:
            return
        try:
            with self.db:  # commits, or rolls back on an exception
                for sql, args in self.pending:
                    self.db.execute(sql, args)
        except sqlite3.Error as exc:
            self.write_errors += 1
            raise ArchiveWriteError(f"archive {self.path}: write failed ({exc}); "
                                    f"{len(self.pending)} row(s) kept pending") from exc
        self.pending.clear()

    def sessions(self, live_only: bool = False) -> list[tuple]:
        """(device, name, stream_id, codec_id, started) of archived sessions."""
        q = "SELECT device, name, stream_id, codec_id, started FROM sessions"
        if live_only:
            q += " WHERE ended IS NULL"
        return list(self.db.execute(q + " ORDER BY started"))

    def packets(self, device: str, session: str) -> Iterator[tuple[float, bytes]]:
        yield from self.db.execute(
            "SELECT arrival, payload FROM packets WHERE device=? AND session=? ORDER BY id",
            (device, session),
        )

    def close(self) -> None:
        try:
            self.commit()
        except ArchiveWriteError as exc:  # unacknowledged: the broker redelivers them
            log.error("%s; not acknowledged, the broker redelivers them", exc)
        self.db.close()
