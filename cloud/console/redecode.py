"""Archived sessions for the console, and decoding one again with another decoder size.

The console reads the archive through its own read-only SQLite connection (WAL lets it
read while the receiver writes). A session is replayed through the receiver's own
stream assembler and decoder service, as `gacflow-cloud redecode` does, one decoder per
size loaded on first use and kept.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

from gacflow.bitstream import decode_packet
from gacflow.errors import BitstreamError


class ArchiveReader:
    def __init__(self, path: str | Path) -> None:
        self.db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True,
                                  check_same_thread=False)
        self.lock = threading.Lock()

    def sessions(self, limit: int = 200) -> list[dict]:
        with self.lock:
            rows = list(self.db.execute(
                "SELECT device, name, started, ended, frames, gaps, lost_frames FROM sessions "
                "ORDER BY started DESC LIMIT ?", (limit,)))
        return [{"device": d, "session": n, "started": s, "ended": e, "frames": f,
                 "seconds": round((f or 0) / 25, 1), "gaps": g, "lost_frames": lf,
                 "live": e is None} for d, n, s, e, f, g, lf in rows]

    def packets(self, device: str, session: str) -> list[tuple[float, bytes]]:
        with self.lock:
            return list(self.db.execute(
                "SELECT arrival, payload FROM packets WHERE device=? AND session=? ORDER BY id",
                (device, session)))


class Redecoder:
    """Decoder sizes of the bundle, and whole-session decodes with any of them."""

    def __init__(self, live_codec, bundle: str | None, live_size: str | None) -> None:
        from gacflow.bundle import Bundle

        model = Bundle.load(bundle).model_config
        self.bundle = bundle
        self.sizes = list(model.get("decoders") or {})
        self.live_size = live_size or model.get("default_decoder") or self.sizes[0]
        self.codecs = {self.live_size: live_codec}
        self.lock = threading.Lock()  # one re-decode at a time: they are CPU-heavy
        self._reader: ArchiveReader | None = None

    def reader(self, rx) -> ArchiveReader:
        if rx.archive is None:
            raise KeyError("this receiver keeps no archive")
        if self._reader is None:
            self._reader = ArchiveReader(rx.archive.path)
        return self._reader

    def codec(self, size: str):
        if size not in self.sizes:
            raise ValueError(f"decoder {size!r}: the bundle has {', '.join(self.sizes)}")
        if size not in self.codecs:
            from gacflow.model import Codec

            live = self.codecs[self.live_size]
            self.codecs[size] = Codec.from_bundle(self.bundle, decoder=size,
                                                  device=live.device)
        return self.codecs[size]

    def decode(self, reader: ArchiveReader, device: str, session: str,
               size: str) -> np.ndarray:
        from gacflow.cloud.decoder_service import DecoderService
        from gacflow.cloud.streams import StreamTable

        rows = reader.packets(device, session)
        if not rows:
            raise KeyError(f"session {device}/{session}")
        with self.lock:
            codec = self.codec(size)
            table = StreamTable(codec.layout, voice=codec.voice)
            s = None
            for arrival, payload in rows:
                try:
                    p = decode_packet(payload, codec.entropy)
                    s = table.session_for(device, p, arrival, name=session)
                    s.place(p, arrival)
                except BitstreamError:
                    continue
            if s is None:
                raise KeyError(f"session {device}/{session} has no readable packet")
            s.finish(time.time())
            svc = DecoderService(codec)
            jobs = svc.run(svc.plan(s, final=True))
        parts = [j.audio for j in jobs if j.audio is not None]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)
