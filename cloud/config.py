"""Receiver settings from flags, environment (GACFLOW_CLOUD_<NAME>) and a TOML file.

Every setting has one name used in all three places: `--idle-timeout` is
`GACFLOW_CLOUD_IDLE_TIMEOUT` and `idle_timeout = 30` (or `idle-timeout`) in the file,
at top level or under `[cloud]` / `[gacflow-cloud]`. Precedence: flag > environment >
file > default. The layering itself is `gacflow.settings`.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gacflow.broker_url import BrokerURL, is_loopback, parse_broker_url
from gacflow.errors import ConfigError
from gacflow.settings import Settings
from gacflow.tls_files import check_tls_files

from .partition import Partition, parse_partition

ENV_PREFIX = "GACFLOW_CLOUD_"


@dataclass
class CloudConfig:
    """Every setting of the receiver; field names are the setting names."""

    broker: str = "mqtt://127.0.0.1:1883"
    out: str = "gacflow-out"
    archive: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = None
    client_id: str | None = None
    group: str | None = None
    partition: str | None = None
    mqtt_version: str = "auto"
    session_expiry: int = 7 * 24 * 3600
    bundle: str | None = None
    decoder: str | None = None
    device: str = "auto"
    threads: int = 0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    reorder_timeout: float = 1.0
    idle_timeout: float = 30.0
    max_packet_bytes: int = 4096
    quota_packets_per_s: float = 50.0
    quota_burst: int = 20_000
    max_sessions_per_device: int = 8
    allow_plaintext: bool = False
    log_level: str = "info"

    @property
    def partition_spec(self) -> Partition | None:
        """`partition` parsed ('0/3' -> Partition(0, 3)); None when not partitioned."""
        return parse_partition(self.partition) if self.partition else None


HELP: dict[str, str] = {
    "broker": "broker URL: mqtt://HOST:PORT or mqtts://HOST:PORT (TLS); user:pass@ allowed",
    "out": "output folder: OUT/<device>/<session>.wav",
    "archive": "token archive (SQLite; default OUT/archive.sqlite)",
    "ca_file": "CA certificate for mqtts:// (default: system store)",
    "cert_file": "client certificate for mutual TLS",
    "key_file": "client key for mutual TLS",
    "username": "broker user name",
    "password": "broker password (prefer the environment variable)",
    "client_id": "MQTT client id; must be stable for the persistent session "
                 "(default: from host+out, plus group or partition)",
    "group": "join a shared subscription group ($share/<group>/...); needs a broker that "
             "keeps each device on one worker (sticky/hash strategy), not mosquitto",
    "partition": "I/N: keep only devices whose hash mod N is I (one worker of N, any broker)",
    "mqtt_version": "MQTT protocol: auto (5, falling back to 3.1.1 when the broker refuses "
                    "it), 5 or 3.1.1",
    "session_expiry": "s the broker keeps our session (queued packets) while we are away",
    "bundle": "model bundle folder (default: the shipped one)",
    "decoder": "decoder size in the bundle, e.g. small (default: its default)",
    "device": "torch device: auto, cpu, cuda, cuda:1",
    "threads": "torch CPU threads (0: torch's default)",
    "metrics_port": "serve /metrics and /health on this port",
    "metrics_host": "address for the metrics endpoint",
    "reorder_timeout": "s a missing packet may be late before it is a gap",
    "idle_timeout": "s without packets before a session ends",
    "max_packet_bytes": "packets larger than this are dropped unparsed (counted per device)",
    "quota_packets_per_s": "sustained packets/s a device may send; beyond its burst the rest "
                           "is dropped and counted (0: no limit)",
    "quota_burst": "packets a device may send at once above its rate (an agent's backlog)",
    "max_sessions_per_device": "live sessions a device may hold; packets of more are dropped",
    "allow_plaintext": "allow mqtt:// (no TLS) to a broker that is not on this host",
    "log_level": "debug, info, warning or error",
}

CHOICES: dict[str, tuple[str, ...]] = {
    "mqtt_version": ("auto", "5", "3.1.1", "311"),
    "log_level": ("debug", "info", "warning", "error"),
}

SETTINGS: Settings[CloudConfig] = Settings(CloudConfig, ENV_PREFIX, ("cloud", "gacflow-cloud"),
                                           HELP, CHOICES, show_defaults=True)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """One flag per setting (defaults None, so unset flags fall through), and --config."""
    SETTINGS.add_arguments(ap)
    ap.add_argument("--config", metavar="TOML", default=None,
                    help=f"TOML file with the same setting names (or ${ENV_PREFIX}CONFIG)")


def resolve(args: argparse.Namespace | None, env: Mapping[str, str] | None = None,
            ) -> CloudConfig:
    """Merge flags, environment, file and defaults, and check the combination."""
    env = os.environ if env is None else env
    return validate(SETTINGS.merge(args, env, getattr(args, "config", None)))


def validate(cfg: CloudConfig) -> CloudConfig:
    SETTINGS.check_choices(cfg)
    spec = cfg.partition_spec
    if cfg.metrics_port is not None and not 0 <= cfg.metrics_port <= 65535:
        raise ConfigError(f"metrics_port must be between 0 and 65535, got {cfg.metrics_port}")
    for key in ("max_packet_bytes", "quota_burst", "max_sessions_per_device"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be at least 1, got {getattr(cfg, key)}")
    if cfg.quota_packets_per_s < 0:
        raise ConfigError(f"quota_packets_per_s must be >= 0, got {cfg.quota_packets_per_s}")
    if spec is not None and cfg.group:
        raise ConfigError("partition and group exclude each other: --group shares one "
                          "subscription among workers (needs a sticky/hash broker), "
                          "--partition gives each worker its own; pick one")
    return cfg


def check_port(host: str, port: int) -> None:
    """Bind and release the metrics address, as the HTTP server will (SO_REUSEADDR)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"metrics_host {host!r}: cannot resolve ({exc.strerror})") from exc
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            raise ConfigError(port_error(host, port, exc)) from exc


def port_error(host: str, port: int, exc: OSError) -> str:
    """One line for a metrics port we cannot listen on, saying how to change it."""
    why = ("is already in use" if exc.errno == errno.EADDRINUSE
           else f"cannot be opened ({exc.strerror or exc})")
    return (f"metrics port {host}:{port} {why} (set --metrics-port / metrics_port to another "
            "port, or leave it unset to disable the endpoint)")


def preflight(cfg: CloudConfig) -> BrokerURL:
    """Everything checkable before start-up writes anything: the broker URL, every file
    and folder the settings name, the metrics port. Returns the parsed broker URL."""
    url = parse_broker(cfg.broker)
    if not url.tls and not is_loopback(url.host) and not cfg.allow_plaintext:
        raise ConfigError(f"broker {cfg.broker}: plaintext MQTT to another host would carry "
                          "every device's speech and the receiver's credentials in clear; use "
                          "mqtts:// (or allow_plaintext = true on a network you trust)")
    check_tls_files(cfg.ca_file, cfg.cert_file, cfg.key_file, load=url.tls)
    if cfg.bundle and not Path(cfg.bundle).is_dir():
        raise ConfigError(f"bundle: {cfg.bundle}: no such folder")
    for key, path in (("out", cfg.out), ("archive", cfg.archive)):
        if path and Path(path).exists() and Path(path).is_dir() != (key == "out"):
            raise ConfigError(f"{key}: {path}: is a {'file' if key == 'out' else 'folder'}")
    if cfg.metrics_port is not None:
        check_port(cfg.metrics_host, cfg.metrics_port)
    return url


def parse_broker(url: str) -> BrokerURL:
    """The receiver accepts credentials in the URL (cloud configs are not process lists)."""
    return parse_broker_url(url, allow_credentials=True)
