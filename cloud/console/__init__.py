"""The operator's live console: a web page and JSON API on the receiver's metrics server.

    /console                          the page (static: cloud/console/index.html)
    /console/api/devices              devices online, bit rate, gaps, concealed frames, flags
    /console/api/live/<device>.wav    the last LIVE_SECONDS of the device's decoded audio
    /console/api/live/<device>.json   its waveform envelope and log spectrogram
    /console/api/archive              archived sessions, and the decoder sizes of the bundle
    /console/api/redecode/<device>/<session>.wav?decoder=SIZE   an archived session
                                      decoded again with another decoder size

It is served by the same HTTP server (and so behind the same access rules) as /metrics
and /health: `serve_with_console` passes its routes to `cloud.metrics.serve`. It only
reads the receiver's state; the live audio comes from a tap on the WAV sink.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
import urllib.parse
from collections import deque
from pathlib import Path

import numpy as np

from gacflow.spec import SAMPLE_RATE

from .live import LiveAudio, spectrogram, waveform
from .redecode import ArchiveReader, Redecoder

PAGE = Path(__file__).with_name("index.html")
LIVE_SECONDS = 20.0
RATE_WINDOW = 10.0  # s over which the bit rate is averaged
STALL_SECONDS = 5.0  # an online device silent this long is flagged
FLAG_COUNTERS = {"gaps": "gaps", "bad_packets": "bad packets", "duplicates": "duplicates",
                 "refused_packets": "refused packets", "codec_mismatch": "codec mismatch",
                 "quota_dropped": "over quota"}

Response = tuple[int, bytes, str]


def wav_bytes(audio: np.ndarray) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(audio, np.float32), SAMPLE_RATE, "PCM_16", format="WAV")
    return buf.getvalue()


class Console:
    """Reads a running `Receiver` for the page; `handle(path)` answers one GET."""

    def __init__(self, rx, bundle: str | None = None, decoder: str | None = None) -> None:
        self.rx = rx
        self.live = LiveAudio(LIVE_SECONDS)
        self.live.attach(rx.wavs)
        self.redecoder = Redecoder(rx.codec, bundle, decoder)
        self.bytes_seen: dict[str, deque[tuple[float, float]]] = {}
        self.lock = threading.Lock()

    # -- data -------------------------------------------------------------------
    def _counter(self, name: str, device: str) -> float:
        m = self.rx.metrics
        with m.lock:
            c = m.counters.get(name)
            return float(c.get(device, 0.0)) if c is not None else 0.0

    def _bitrate(self, device: str, now: float) -> float:
        """bit/s of token payload over the last RATE_WINDOW s (sampled at each request)."""
        total = self._counter("bytes", device)
        with self.lock:
            hist = self.bytes_seen.setdefault(device, deque())
            hist.append((now, total))
            while len(hist) > 2 and now - hist[1][0] > RATE_WINDOW:
                hist.popleft()
            t0, b0 = hist[0]
        return 8 * (total - b0) / (now - t0) if now - t0 > 0.5 else 0.0

    def devices(self) -> dict:
        now = time.time()
        rx = self.rx
        live = {s.device: s for s in list(rx.table.sessions.values())}
        rows = []
        for dev in sorted(set(rx.devices)):
            st = rx.status.get(dev, {})
            s = live.get(dev)
            last = s.last_arrival if s else 0.0
            online = bool(st.get("online", s is not None))
            flags = [label for key, label in FLAG_COUNTERS.items() if self._counter(key, dev)]
            if online and s is not None and now - last > STALL_SECONDS:
                flags.append("stalled")
            if not online:
                flags.append("offline")
            rows.append({
                "device": dev, "online": online, "mode": st.get("mode"),
                "codec": st.get("codec_id") or st.get("codec"),
                "bitrate": round(self._bitrate(dev, now), 1),
                "packets": self._counter("packets", dev),
                "gaps": self._counter("gaps", dev),
                "concealed_frames": self._counter("lost_frames", dev),
                "session": s.name if s else None,
                "seconds": round(s.frames / 25, 1) if s else 0.0,
                "live_audio_seconds": round(self.live.seconds(dev), 1),
                "flags": flags,
            })
        return {"time": now, "devices": rows,
                "online": sum(r["online"] for r in rows),
                "live_sessions": len(live)}

    # -- HTTP ---------------------------------------------------------------------
    def handle(self, path: str) -> Response | None:
        """(status, body, content type) for a /console path; None for other paths."""
        url = urllib.parse.urlsplit(path)
        p, query = url.path, urllib.parse.parse_qs(url.query)
        if p in ("/console", "/console/", "/"):
            return 200, PAGE.read_bytes(), "text/html; charset=utf-8"
        if not p.startswith("/console/api/"):
            return None
        try:
            return self._api(p[len("/console/api/"):], query)
        except KeyError as exc:
            return 404, f"not found: {exc.args[0]}\n".encode(), "text/plain"
        except ValueError as exc:
            return 400, f"{exc}\n".encode(), "text/plain"

    def _api(self, rest: str, query: dict) -> Response:
        if rest == "devices":
            return self._json(self.devices())
        if rest == "archive":
            return self._json({"sessions": self.redecoder.reader(self.rx).sessions(),
                               "decoders": self.redecoder.sizes,
                               "live_decoder": self.redecoder.live_size})
        m = re.fullmatch(r"live/([A-Za-z0-9_.-]+)\.(wav|json)", rest)
        if m:
            dev, kind = m.groups()
            audio = self.live.audio(dev)
            if audio is None:
                raise KeyError(f"no live audio of device {dev}")
            if kind == "wav":
                return 200, wav_bytes(audio), "audio/wav"
            return self._json({"device": dev, "seconds": len(audio) / SAMPLE_RATE,
                               "wave": waveform(audio), "spec": spectrogram(audio)})
        m = re.fullmatch(r"redecode/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.:-]+)\.wav", rest)
        if m:
            size = (query.get("decoder") or [self.redecoder.live_size])[0]
            audio = self.redecoder.decode(self.redecoder.reader(self.rx), *m.groups(), size)
            return 200, wav_bytes(audio), "audio/wav"
        raise KeyError(rest)

    @staticmethod
    def _json(obj) -> Response:
        return 200, json.dumps(obj).encode(), "application/json"


def serve_with_console(rx, port: int, host: str = "127.0.0.1", bundle: str | None = None,
                       decoder: str | None = None):
    """The metrics server (/metrics, /health) with the console's routes added."""
    from gacflow.cloud.metrics import serve

    console = Console(rx, bundle, decoder)
    server = serve(rx.metrics, port, host, routes=console.handle)
    server.console = console
    return server


__all__ = ["ArchiveReader", "Console", "serve_with_console"]
