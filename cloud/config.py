"""Receiver settings from flags, environment (GACFLOW_CLOUD_<NAME>) and a TOML file.

Every option has one name used in all three places: `--idle-timeout` is
`GACFLOW_CLOUD_IDLE_TIMEOUT` and `idle_timeout = 30` (or `idle-timeout`) in the file.
Precedence: flag > environment > file > default.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gacflow.broker_url import BrokerURL, parse_broker_url
from gacflow.errors import ConfigError

ENV_PREFIX = "GACFLOW_CLOUD_"


@dataclass(frozen=True)
class Option:
    name: str
    type: type
    default: Any
    help: str


OPTIONS = [
    Option("broker", str, "mqtt://127.0.0.1:1883",
           "broker URL: mqtt://HOST:PORT or mqtts://HOST:PORT (TLS); user:pass@ allowed"),
    Option("out", str, "gacflow-out", "output folder: OUT/<device>/<session>.wav"),
    Option("archive", str, None, "token archive (SQLite; default OUT/archive.sqlite)"),
    Option("ca_file", str, None, "CA certificate for mqtts:// (default: system store)"),
    Option("cert_file", str, None, "client certificate for mutual TLS"),
    Option("key_file", str, None, "client key for mutual TLS"),
    Option("username", str, None, "broker user name"),
    Option("password", str, None, "broker password (prefer the environment variable)"),
    Option("client_id", str, None,
           "MQTT client id; must be stable for the persistent session (default: from host+out)"),
    Option("group", str, None, "join a shared subscription group ($share/<group>/...)"),
    Option("mqtt_version", str, "5", "MQTT protocol: 5 or 3.1.1"),
    Option("session_expiry", int, 7 * 24 * 3600,
           "s the broker keeps our session (queued packets) while we are away"),
    Option("bundle", str, None, "model bundle folder (default: the shipped one)"),
    Option("decoder", str, None, "decoder size in the bundle, e.g. small (default: its default)"),
    Option("device", str, "auto", "torch device: auto, cpu, cuda, cuda:1"),
    Option("threads", int, 0, "torch CPU threads (0: torch's default)"),
    Option("metrics_port", int, None, "serve /metrics and /health on this port"),
    Option("metrics_host", str, "127.0.0.1", "address for the metrics endpoint"),
    Option("reorder_timeout", float, 1.0, "s a missing packet may be late before it is a gap"),
    Option("idle_timeout", float, 30.0, "s without packets before a session ends"),
    Option("log_level", str, "info", "debug, info, warning or error"),
]
BY_NAME = {o.name: o for o in OPTIONS}


def add_options(ap: argparse.ArgumentParser, names: list[str] | None = None) -> None:
    """Add the flags (defaults left as None, so unset flags can fall through to env/file)."""
    for o in OPTIONS:
        if names is None or o.name in names:
            ap.add_argument("--" + o.name.replace("_", "-"), dest=o.name, default=None,
                            help=o.help + (f" (default {o.default})" if o.default else ""))
    ap.add_argument("--config", default=os.environ.get(ENV_PREFIX + "CONFIG"),
                    help="TOML file with the same option names")


def _convert(o: Option, value: Any, where: str) -> Any:
    if value is None:
        return None
    try:
        return o.type(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {o.name} must be {o.type.__name__}, got {value!r}") from exc


def load_file(path: str) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {p} not found") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p}: {exc}") from exc
    if isinstance(data.get("cloud"), dict):
        data = data["cloud"]
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in BY_NAME:
            raise ConfigError(f"config file {p}: unknown option {key!r}")
        out[name] = _convert(BY_NAME[name], value, f"config file {p}")
    return out


def resolve(args: argparse.Namespace, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Merge flags, environment, file and defaults into one settings dict."""
    env = os.environ if env is None else env
    from_file = load_file(args.config) if getattr(args, "config", None) else {}
    cfg = {}
    for o in OPTIONS:
        flag = getattr(args, o.name, None)
        if flag is not None:
            cfg[o.name] = _convert(o, flag, "--" + o.name.replace("_", "-"))
        elif ENV_PREFIX + o.name.upper() in env:
            cfg[o.name] = _convert(o, env[ENV_PREFIX + o.name.upper()],
                                   ENV_PREFIX + o.name.upper())
        elif o.name in from_file:
            cfg[o.name] = from_file[o.name]
        else:
            cfg[o.name] = o.default
    if cfg["mqtt_version"] not in ("5", "3.1.1", "311"):
        raise ConfigError(f"mqtt_version must be 5 or 3.1.1, got {cfg['mqtt_version']!r}")
    return cfg


def parse_broker(url: str) -> BrokerURL:
    """The receiver accepts credentials in the URL (cloud configs are not process lists)."""
    return parse_broker_url(url, allow_credentials=True)
