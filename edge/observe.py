"""Observability: key=value or JSON log lines on stdout, counters, an atomic --stats-json file.

Logs go to stdout so that stderr carries only the single line of a fatal error.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from gacflow.fileio import atomic_write_bytes
from gacflow.spec import FRAME_RATE


class KeyValueFormatter(logging.Formatter):
    """`ts=... level=info logger=... event=... k=v`: grep- and journald-friendly."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"ts={ts}Z level={record.levelname.lower()} {record.getMessage()}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the message's key=value pairs become fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                               "logger": record.name}
        for part in record.getMessage().split():
            key, sep, value = part.partition("=")
            if sep:
                out[key] = _typed(value)
            else:
                out["msg"] = (out.get("msg", "") + " " + part).strip()
        return json.dumps(out, sort_keys=True)


def _typed(value: str) -> Any:
    """'12' -> 12, '0.5' -> 0.5, 'true' -> True; anything else stays a string."""
    if value in ("true", "false"):
        return value == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def setup_logging(fmt: str = "kv", level: str = "info") -> None:
    logging.raiseExceptions = False  # a closed stdout (| head) must not print tracebacks
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger("gacflow")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


@dataclass
class AgentStats:
    """Counters of one agent session (queue counters include earlier sessions' packets)."""

    device_id: str = ""
    stream_id: int = 0
    backend: str = ""
    vad: str = ""
    mode: str = ""
    batch_seconds: float = 0.0
    max_bitrate: float = 0.0  # --max-bitrate target (0: off); `bitrate` is what it achieved
    packets_175: int = 0  # packets rate control sent in the 175 mode
    started: float = field(default_factory=time.time)
    audio_seconds: float = 0.0
    frames: int = 0
    active_frames: int = 0
    packets: int = 0
    payload_bytes: int = 0
    payload_bytes_no_dtx: int = 0
    encoder_seconds: float = 0.0
    vad_seconds: float = 0.0
    queue_depth: int = 0
    queue_dropped: int = 0
    queue_write_errors: int = 0  # inserts a full disk refused (packets held in memory)
    published: int = 0
    acked: int = 0
    rejected: int = 0
    connected: bool = False
    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    protocol: str = ""  # MQTT version of the last successful connection: "5" or "3.1.1"
    eos_sent: bool = False
    finished: bool = False

    @property
    def stream_seconds(self) -> float:
        return self.frames / FRAME_RATE

    def snapshot(self) -> dict[str, Any]:
        d = asdict(self)
        secs = self.stream_seconds
        d["bitrate"] = round(self.payload_bytes * 8 / secs, 2) if secs else 0.0
        d["bitrate_no_dtx"] = round(self.payload_bytes_no_dtx * 8 / secs, 2) if secs else 0.0
        d["encoder_rtf"] = round(self.encoder_seconds / self.audio_seconds, 5) \
            if self.audio_seconds else 0.0
        d["vad_rtf"] = round(self.vad_seconds / self.audio_seconds, 5) \
            if self.audio_seconds else 0.0
        d["uptime"] = round(time.time() - self.started, 2)
        return d

    def status_line(self) -> str:
        s = self.snapshot()
        return (f"event=status frames={s['frames']} active_frames={s['active_frames']} "
                f"packets={s['packets']} queued={s['queue_depth']} acked={s['acked']} "
                f"dropped={s['queue_dropped']} bitrate={s['bitrate']} "
                f"bitrate_no_dtx={s['bitrate_no_dtx']} rtf={s['encoder_rtf']} "
                f"connected={str(s['connected']).lower()}")


def write_json_atomic(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Readers (scripts polling --stats-json) never see a half-written file."""
    atomic_write_bytes(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
