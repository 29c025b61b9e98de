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
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gacflow.audio import write_wav
from gacflow.errors import ConfigError
from gacflow.spec import SAMPLE_RATE

from .streams import Session


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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
            self.db.commit()
        except (OSError, sqlite3.Error) as exc:  # a read-only disk, a file that is not SQLite
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ConfigError(f"archive: {self.path}: cannot open ({reason})") from exc

    def add_packet(self, device: str, arrival: float, payload: bytes,
                   session: str | None, error: str | None = None) -> None:
        self.db.execute(
            "INSERT INTO packets (device, arrival, payload, session, error) VALUES (?,?,?,?,?)",
            (device, arrival, payload, session, error),
        )

    def open_session(self, s: Session, codec_id: str | None) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO sessions (name, device, stream_id, codec_id, started) "
            "VALUES (?,?,?,?,?)",
            (s.name, s.device, s.stream_id, codec_id, s.started),
        )

    def close_session(self, s: Session, wav: str | None) -> None:
        self.db.execute(
            "UPDATE sessions SET ended=?, frames=?, gaps=?, lost_frames=?, wav=? "
            "WHERE device=? AND name=?",
            (time.time(), s.frames, s.gaps, s.lost_frames, wav, s.device, s.name),
        )

    def commit(self) -> None:
        self.db.commit()

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
        self.db.commit()
        self.db.close()
