"""Broker addresses, one parser for the edge agent and the receiver.

`mqtt://[user[:pass]@]host[:port]` or `mqtts://...` (TLS); ports default to 1883 / 8883.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from .errors import ConfigError

SCHEMES = {"mqtt": False, "tcp": False, "mqtts": True, "ssl": True}


@dataclass(frozen=True)
class BrokerURL:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None


def is_loopback(host: str) -> bool:
    """'localhost', 127.0.0.0/8 or ::1: a plaintext connection that never leaves the host
    (the only place edge and receiver use mqtt:// without a warning)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_broker_url(url: str, allow_credentials: bool = True) -> BrokerURL:
    """Parse a broker URL; ConfigError with the reason for anything else.

    Devices refuse credentials in the URL (`allow_credentials=False`): a URL shows up in
    process listings and logs, a --password file or variable does not.
    """
    try:
        u = urlsplit(url if "://" in url else "mqtt://" + url)
        port = u.port
    except ValueError as exc:
        raise ConfigError(f"broker {url!r}: bad URL ({exc})") from exc
    if u.scheme not in SCHEMES or not u.hostname:
        raise ConfigError(f"broker {url!r}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    if u.path not in ("", "/") or u.query:
        raise ConfigError(f"broker {url!r}: no path or query in a broker URL")
    if u.username and not allow_credentials:
        raise ConfigError(f"broker {url!r}: no credentials in the URL "
                          "(use --username/--password)")
    tls = SCHEMES[u.scheme]
    return BrokerURL(u.hostname, port or (8883 if tls else 1883), tls,
                     unquote(u.username) if u.username else None,
                     unquote(u.password) if u.password else None)
