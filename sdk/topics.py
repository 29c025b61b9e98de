"""MQTT topic schema and the device status (birth / last-will) message, shared by edge and cloud.

    gacflow/v1/<device>/tokens   packets (bitstream.py), QoS 1
    gacflow/v1/<device>/status   retained JSON: birth message (online + codec and settings)
                                 or the last will (offline)
    gacflow/v1/<device>/control  receiver -> device commands (JSON)
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import ConfigError

PREFIX = "gacflow/v1"
DEVICE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
KINDS = ("tokens", "status", "control")


def check_device_id(device: str) -> str:
    """Device ids become topic levels and MQTT client ids: keep them plain."""
    if not DEVICE_RE.match(device or ""):
        raise ConfigError(
            f"device id {device!r} must be 1-64 characters of letters, digits, '_', '.', '-'"
        )
    return device


def topic(device: str, kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown topic kind {kind!r}")
    return f"{PREFIX}/{check_device_id(device)}/{kind}"


def wildcard(kind: str, group: str | None = None) -> str:
    """Subscription filter for all devices, optionally as a shared-subscription group."""
    base = f"{PREFIX}/+/{kind}"
    return f"$share/{group}/{base}" if group else base


def parse_topic(t: str) -> tuple[str, str] | None:
    """'gacflow/v1/dev/tokens' -> ('dev', 'tokens'); None for anything else."""
    parts = t.split("/")
    if len(parts) != 4 or "/".join(parts[:2]) != PREFIX or parts[3] not in KINDS:
        return None
    if not DEVICE_RE.match(parts[2]):
        return None
    return parts[2], parts[3]


def status_message(online: bool, **fields: Any) -> bytes:
    """Birth (online=True, with codec id and settings) or last-will payload."""
    return json.dumps({"online": online, **fields}, sort_keys=True).encode()


def parse_status(payload: bytes) -> dict[str, Any] | None:
    try:
        msg = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return msg if isinstance(msg, dict) and isinstance(msg.get("online"), bool) else None
