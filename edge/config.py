"""Agent settings from flags, a TOML file and GACFLOW_EDGE_* variables, one name for each.

Precedence, lowest to highest: built-in defaults < TOML file (--config) < environment
variables < command-line flags. A setting is spelled `batch_seconds` in TOML (dashes are
accepted too), `GACFLOW_EDGE_BATCH_SECONDS` in the environment and `--batch-seconds` on
the command line. Any bad value raises `ConfigError` with one line naming its source.
The layering itself is `gacflow.settings`; this module holds the agent's settings.
"""

from __future__ import annotations

import argparse
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gacflow.broker_url import parse_broker_url
from gacflow.errors import ConfigError
from gacflow.settings import Settings
from gacflow.tls_files import check_tls_files
from gacflow.topics import DEVICE_RE

ENV_PREFIX = "GACFLOW_EDGE_"


def _default_device_id() -> str:
    name = "".join(c if c.isalnum() or c in "_.-" else "-" for c in socket.gethostname())
    return name[:64] or "gacflow-edge"


def _default_queue() -> str:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state) / "gacflow-edge" / "queue.db")


@dataclass
class EdgeConfig:
    """Every setting of the agent; field names are the setting names."""

    broker: str = "mqtt://localhost:1883"
    device_id: str = ""
    input: str = "mic"
    input_device: str = ""
    bundle: str = ""
    backend: str = "auto"
    threads: int = 1
    mode: str = "275"
    batch_seconds: float = 1.0
    max_bitrate: float = 0.0
    block_ms: int = 20
    realtime: bool = False
    pace: float = 0.0
    dtx: bool = True
    entropy_coding: bool = True
    vad: str = "auto"
    vad_model: str = ""
    vad_threshold: float = 0.5
    hangover_ms: int = 200
    queue: str = ""
    queue_max_packets: int = 100_000
    max_inflight: int = 16
    mqtt_version: str = "auto"
    username: str = ""
    password: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    tls_insecure: bool = False
    keepalive: int = 60
    reconnect_max_delay: int = 30
    drain_timeout: float = 30.0
    stats_json: str = ""
    status_interval: float = 10.0
    packet_log: str = ""
    log_format: str = "kv"
    log_level: str = "info"

    @property
    def pace_factor(self) -> float:
        """Playback speed for file input: 0 = as fast as possible, 1 = real time."""
        return self.pace if self.pace > 0 else (1.0 if self.realtime else 0.0)


CHOICES: dict[str, tuple[str, ...]] = {
    "backend": ("auto", "onnx", "tflite"),
    "mode": ("275", "175"),
    "vad": ("auto", "silero", "energy"),
    "mqtt_version": ("auto", "5", "3.1.1"),
    "log_format": ("kv", "json"),
    "log_level": ("debug", "info", "warning", "error"),
}

HELP: dict[str, str] = {
    "broker": "broker URL: mqtt://HOST[:1883] or mqtts://HOST[:8883] (TLS)",
    "device_id": "device id: topic level and MQTT client id (default: host name)",
    "input": "audio source: 'mic', '-' (raw S16_LE 16 kHz mono PCM on stdin), or a WAV/FLAC path",
    "input_device": "microphone name (substring) or index; see --list-devices",
    "bundle": "model bundle folder (default: $GACFLOW_BUNDLE or the shipped bundle)",
    "backend": "INT8 encoder runtime: auto (ONNX Runtime, else LiteRT), onnx or tflite",
    "threads": "encoder threads (1 keeps other cores free)",
    "mode": "operating point: 275 or 175 bit/s of tokens",
    "batch_seconds": "seconds of audio per packet (0.2-10): latency vs header overhead",
    "max_bitrate": "hold the stream's payload to this many bit/s on average (0 = off): "
                   "packets drop from the 275 to the 175 mode while over budget",
    "block_ms": "audio read block in ms (10-40); bounds capture latency",
    "realtime": "read a file at real-time speed, as if it were a microphone",
    "pace": "read a file at this multiple of real time (overrides --realtime; 0 = max speed)",
    "dtx": "discontinuous transmission: mark silent frames instead of sending tokens",
    "entropy_coding": "arithmetic-code the tokens with the bundle's entropy tables (7-25 percent "
                      "fewer bits); off: plain packing, for receivers without those tables",
    "vad": "voice-activity detector: auto (silero-vad if found, else energy), silero, energy",
    "vad_model": "path to silero_vad.onnx (default: found in the installed silero-vad package)",
    "vad_threshold": "speech probability threshold of silero-vad (0-1)",
    "hangover_ms": "keep sending this long after speech ends, so word endings survive",
    "queue": "on-disk packet queue (SQLite); default ~/.local/state/gacflow-edge/queue.db",
    "queue_max_packets": "queue cap; beyond it the oldest packets are dropped and counted",
    "max_inflight": "packets sent but not yet acknowledged by the broker (ordering window)",
    "mqtt_version": "MQTT protocol: auto (5, falling back to 3.1.1), 5 or 3.1.1",
    "username": "MQTT user name",
    "password": "MQTT password (prefer GACFLOW_EDGE_PASSWORD or the TOML file)",
    "ca_file": "CA certificate (PEM) for mqtts://; default: system CAs",
    "cert_file": "client certificate (PEM) for TLS client authentication",
    "key_file": "client private key (PEM) for TLS client authentication",
    "tls_insecure": "do not verify the broker's host name (testing only)",
    "keepalive": "MQTT keepalive in seconds (paho pings about once per keepalive: ~14 bit/s at 60)",
    "reconnect_max_delay": "reconnect backoff doubles from 1 s up to this many seconds",
    "drain_timeout": "after a file ends, wait at most this long for the broker to take the queue",
    "stats_json": "write counters to this JSON file (atomically, periodically and at exit)",
    "status_interval": "seconds between one-line status logs and stats-json updates",
    "packet_log": "append every produced packet (concatenated bitstream packets) to this file",
    "log_format": "log lines as key=value (kv) or JSON",
    "log_level": "debug, info, warning or error",
}


SETTINGS: Settings[EdgeConfig] = Settings(EdgeConfig, ENV_PREFIX, ("gacflow-edge",), HELP, CHOICES)


def names() -> list[str]:
    return SETTINGS.names()


def read_toml(path: str) -> dict[str, Any]:
    """Settings from a TOML file (top level or a [gacflow-edge] table)."""
    return SETTINGS.read_toml(path)


def read_env(env: Mapping[str, str]) -> dict[str, Any]:
    """Settings from GACFLOW_EDGE_<NAME> variables; unknown GACFLOW_EDGE_* names are errors."""
    return SETTINGS.read_env(env)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """One flag per setting; all default to None so that unset flags do not override."""
    SETTINGS.add_arguments(ap)


def build(args: argparse.Namespace | None = None, env: Mapping[str, str] | None = None,
          config_path: str | None = None) -> EdgeConfig:
    """Merge the sources and validate; ConfigError on the first problem."""
    return validate(SETTINGS.merge(args, env, config_path))


def _range(name: str, value: float, lo: float, hi: float) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"{name.replace('_', '-')} must be between {lo:g} and {hi:g}, "
                          f"got {value:g}")


def validate(cfg: EdgeConfig) -> EdgeConfig:
    SETTINGS.check_choices(cfg)
    _range("batch_seconds", cfg.batch_seconds, 0.2, 10.0)
    if cfg.max_bitrate:
        _range("max_bitrate", cfg.max_bitrate, 50.0, 100_000.0)
    _range("block_ms", cfg.block_ms, 10, 40)
    _range("threads", cfg.threads, 1, 64)
    _range("pace", cfg.pace, 0.0, 1000.0)
    _range("vad_threshold", cfg.vad_threshold, 0.0, 1.0)
    _range("hangover_ms", cfg.hangover_ms, 0, 5000)
    _range("queue_max_packets", cfg.queue_max_packets, 10, 10_000_000)
    _range("max_inflight", cfg.max_inflight, 1, 1000)
    _range("keepalive", cfg.keepalive, 5, 3600)
    _range("reconnect_max_delay", cfg.reconnect_max_delay, 1, 600)
    _range("drain_timeout", cfg.drain_timeout, 0.0, 86_400.0)
    _range("status_interval", cfg.status_interval, 0.1, 3600.0)
    cfg.device_id = cfg.device_id or _default_device_id()
    if not DEVICE_RE.match(cfg.device_id):
        raise ConfigError(f"device-id {cfg.device_id!r} must be 1-64 characters of letters, "
                          "digits, '_', '.', '-'")
    cfg.queue = cfg.queue or _default_queue()
    broker_address(cfg.broker)
    check_tls_files(cfg.ca_file, cfg.cert_file, cfg.key_file, load=False, flags=True)
    if bool(cfg.cert_file) != bool(cfg.key_file):
        raise ConfigError("cert-file and key-file must be given together")
    check_tls_files(cfg.ca_file, cfg.cert_file, cfg.key_file)
    if cfg.password and not cfg.username:
        raise ConfigError("password given without username")
    return cfg


def broker_address(url: str) -> tuple[str, int, bool]:
    """'mqtt://host:port' -> (host, port, tls); credentials belong in --username/--password."""
    b = parse_broker_url(url, allow_credentials=False)
    return b.host, b.port, b.tls
