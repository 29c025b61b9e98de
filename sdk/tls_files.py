"""The TLS files a config names, checked before start-up: one line naming the bad file.

Shared by the edge agent and the receiver, so both refuse a missing or unusable
certificate with the same message instead of a late 'TLS setup failed'.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from .errors import ConfigError


def readable_file(key: str, path: str, flag: str | None = None) -> None:
    """ConfigError naming the setting (and its command-line flag) when a file is unreadable."""
    hint = f" ({flag})" if flag else ""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{key}: {path}: no such file{hint}")
    if not p.is_file():
        raise ConfigError(f"{key}: {path}: not a file{hint}")
    if not os.access(p, os.R_OK):
        raise ConfigError(f"{key}: {path}: not readable (permission denied)")


def check_tls_files(ca_file: str | None, cert_file: str | None, key_file: str | None,
                    *, load: bool = True, flags: bool = False) -> None:
    """Every named file readable; with `load`, the PEMs parse as a CA and a cert/key pair."""
    for key, value in (("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file)):
        if value:
            readable_file(key, value, f"--{key.replace('_', '-')}" if flags else None)
    if not load or not (ca_file or cert_file):
        return
    try:
        ctx = ssl.create_default_context(cafile=ca_file or None)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"ca_file: {ca_file}: not a usable CA certificate "
                          f"({getattr(exc, 'reason', None) or exc})") from exc
    if cert_file:
        try:
            ctx.load_cert_chain(cert_file, key_file or None)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"cert_file/key_file: {cert_file}, {key_file}: not a usable "
                              f"certificate and key ({getattr(exc, 'reason', None) or exc})"
                              ) from exc
