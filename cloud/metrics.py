"""Receiver metrics in the Prometheus text format, and a /health endpoint (stdlib only).

Counters are per device where that helps find a misbehaving device (packets, bytes,
gaps, bad packets); decode figures are receiver-wide.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PER_DEVICE = {
    "packets": "packets received",
    "bytes": "payload bytes received",
    "duplicates": "duplicate packets ignored",
    "refused_packets": "packets refused: another stream's content under the same identity",
    "gaps": "gaps (lost packets) detected",
    "lost_frames": "token frames lost and concealed",
    "bad_packets": "malformed or implausible packets refused",
    "codec_mismatch": "packets refused because the device runs another codec",
    "quota_dropped": "packets dropped unparsed: over the device's size, rate or session quota",
    "sessions": "sessions finished",
    "stream_bytes": "payload bytes of the packets placed (duplicates and refused ones not counted)",
    "stream_seconds": "seconds of stream those packets carry (frames / frame rate, DTX included)",
    "packets_175": "packets placed that the device sent in the 175 mode (rate control)",
}


class Metrics:
    """Thread-safe counters and gauges; `render()` gives the Prometheus exposition text."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counters: dict[str, dict[str, float]] = {k: defaultdict(float) for k in PER_DEVICE}
        self.gauges: dict[str, float] = {
            "devices": 0, "live_sessions": 0, "queue_depth": 0, "decode_latency_seconds": 0,
            "decode_rtf": 0, "decoded_audio_seconds_total": 0, "decode_batches_total": 0,
            "connected": 0, "packets_other_partition_total": 0,
            "archive_write_errors_total": 0, "archive_pending_rows": 0,
        }
        self.info: dict[str, str] = {"mqtt_protocol": ""}  # text facts for /health

    def inc(self, name: str, device: str, value: float = 1.0) -> None:
        with self.lock:
            self.counters[name][device] += value

    def set(self, name: str, value: float) -> None:
        with self.lock:
            self.gauges[name] = value

    def set_info(self, name: str, value: str) -> None:
        """A text fact shown on /health (e.g. the negotiated MQTT version)."""
        with self.lock:
            self.info[name] = value

    def add(self, name: str, value: float = 1.0) -> None:
        """A receiver-wide counter (no device label: e.g. other partitions' packets)."""
        with self.lock:
            self.gauges[name] += value

    def bitrate(self, device: str) -> float:
        """Achieved payload bit/s of a device's placed packets (0 before any arrived)."""
        with self.lock:
            secs = self.counters["stream_seconds"].get(device, 0.0)
            return self.counters["stream_bytes"].get(device, 0.0) * 8 / secs if secs else 0.0

    def total(self, name: str) -> float:
        with self.lock:
            return sum(self.counters[name].values())

    def render(self) -> str:
        lines = []
        with self.lock:
            for name, help_ in PER_DEVICE.items():
                lines += [f"# HELP gacflow_{name}_total {help_}",
                          f"# TYPE gacflow_{name}_total counter"]
                for dev, v in sorted(self.counters[name].items()):
                    lines.append(f'gacflow_{name}_total{{device="{dev}"}} {v:g}')
            lines += ["# HELP gacflow_bitrate achieved payload bit/s of the device's "
                      "streams (stream bytes x 8 / stream seconds)", "# TYPE gacflow_bitrate gauge"]
            for dev, secs in sorted(self.counters["stream_seconds"].items()):
                if secs:
                    rate = self.counters["stream_bytes"][dev] * 8 / secs
                    lines.append(f'gacflow_bitrate{{device="{dev}"}} {rate:.2f}')
            for name, v in self.gauges.items():
                kind = "counter" if name.endswith("_total") else "gauge"
                lines += [f"# TYPE gacflow_{name} {kind}", f"gacflow_{name} {v:g}"]
        return "\n".join(lines) + "\n"

    def health(self) -> tuple[int, dict]:
        with self.lock:
            ok = bool(self.gauges["connected"])
            body = {"status": "ok" if ok else "disconnected",
                    "live_sessions": self.gauges["live_sessions"],
                    "queue_depth": self.gauges["queue_depth"], **self.info}
        return (200 if ok else 503), body


def serve(metrics: Metrics, port: int, host: str = "127.0.0.1",
          routes: Callable[[str], tuple[int, bytes, str] | None] | None = None,
          ) -> ThreadingHTTPServer:
    """Serve /metrics and /health on a daemon thread; returns the server (for .shutdown()).
    `routes(path)` answers other paths ((status, body, content type), or None: 404) on the
    same server and behind the same checks: the operator's console (cloud/console/)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            if self.path.startswith("/metrics"):
                code, body, ctype = 200, metrics.render().encode(), "text/plain; version=0.0.4"
            elif self.path.startswith("/health"):
                code, obj = metrics.health()
                body, ctype = json.dumps(obj).encode(), "application/json"
            elif routes is not None and (extra := routes(self.path)) is not None:
                code, body, ctype = extra
            else:
                code, body, ctype = 404, b"not found\n", "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # keep the receiver's log clean
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
    return server
