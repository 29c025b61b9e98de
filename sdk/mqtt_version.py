"""MQTT version negotiation, one rule for the edge agent, the cloud receiver and the load generator.

Under `auto` a client tries MQTT 5 first. A 3.1.1-only broker answers an MQTT 5 CONNECT
with CONNACK return code 1 ("unacceptable protocol version", which paho reports as reason
0x84) or simply closes the connection; either way the next attempt, made at once, uses
3.1.1. A refusal is final (3.1.1 is kept for the life of the process); a close before any
CONNACK is ambiguous (the network may have dropped it), so if 3.1.1 is then closed too the
client goes back to 5 with its normal backoff. An explicit `5` that the broker refuses is
a configuration error, not something to retry forever.

No paho import here (the SDK stays NumPy-only at import): protocol numbers are the
CONNECT protocol levels, equal to paho's `MQTTv311` and `MQTTv5`, and the paho clients
are built by the callers.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

log = logging.getLogger("gacflow.mqtt_version")

MQTT_V311 = 4  # CONNECT protocol level; paho.mqtt.client.MQTTv311
MQTT_V5 = 5  # paho.mqtt.client.MQTTv5
VERSIONS = ("auto", "5", "3.1.1")
ALIASES = {"311": "3.1.1"}  # the cloud receiver has always accepted 311
UNSUPPORTED_PROTOCOL = {0x84, 0x01}  # paho maps a v5 CONNACK return code 1 to 0x84


def normalize_version(version: object) -> str:
    """'auto', '5' or '3.1.1' from a setting value ('311' and TOML's 5 accepted)."""
    text = str(version).strip().lower()
    text = ALIASES.get(text, text)
    if text not in VERSIONS:
        raise ConfigError(f"mqtt-version must be auto, 5 or 3.1.1, got {version!r}")
    return text


def protocol_name(protocol: int) -> str:
    return "5" if protocol == MQTT_V5 else "3.1.1"


def is_version_refusal(reason_code: object) -> bool:
    """A CONNACK saying the broker does not speak the protocol version we sent."""
    return getattr(reason_code, "value", reason_code) in UNSUPPORTED_PROTOCOL


class ProtocolChoice:
    """Which MQTT version the next connection attempt uses (`auto`, `5` or `3.1.1`)."""

    def __init__(self, version: str = "auto") -> None:
        self.version = normalize_version(version)
        self.protocol = MQTT_V311 if self.version == "3.1.1" else MQTT_V5
        self._guessed = False  # 3.1.1 was chosen after a close, not after a clear refusal

    @property
    def name(self) -> str:
        """The protocol of the next attempt: "5" or "3.1.1"."""
        return protocol_name(self.protocol)

    is_version_refusal = staticmethod(is_version_refusal)

    def refused(self, reason_code: object) -> bool:
        """After a refusing CONNACK: True when the next attempt should use 3.1.1 at once."""
        if not (is_version_refusal(reason_code) and self.protocol == MQTT_V5
                and self.version == "auto"):
            return False
        self.protocol, self._guessed = MQTT_V311, False
        return True

    def closed_before_connack(self) -> bool:
        """After the broker closed the connection without a CONNACK: True when the next
        attempt should use 3.1.1 at once (auto and v5 was tried); a guessed 3.1.1 that
        was closed too goes back to 5 (returns False: retry with the normal backoff)."""
        if self.version != "auto":
            return False
        if self.protocol == MQTT_V5:
            self.protocol, self._guessed = MQTT_V311, True
            return True
        if self._guessed:
            self.protocol, self._guessed = MQTT_V5, False
        return False

    def after_refusal(self, broker: str, reason_code: object) -> bool:
        """`refused`, logging the fallback (one line, the same in every component)."""
        if not self.refused(reason_code):
            return False
        log.warning("event=mqtt5_refused action=fallback_3.1.1 broker=%s how=refused", broker)
        return True

    def after_close(self, broker: str) -> bool:
        """`closed_before_connack`, logging the fallback."""
        if not self.closed_before_connack():
            return False
        log.warning("event=mqtt5_refused action=fallback_3.1.1 broker=%s how=closed", broker)
        return True

    def unsupported_error(self, broker: str, reason_code: object) -> ConfigError | None:
        """The fatal error for an explicit `5` that the broker refuses, else None."""
        if self.version == "5" and is_version_refusal(reason_code):
            return ConfigError(f"broker {broker} does not support MQTT 5 ({reason_code}); "
                               "use --mqtt-version auto or 3.1.1")
        return None


def connect_negotiated(make_client: Callable[[int], mqtt.Client], host: str, port: int,
                       version: str = "auto", keepalive: int = 60,
                       timeout: float = 10.0) -> tuple[mqtt.Client, str]:
    """Connect a simple blocking client (clean start) with the `ProtocolChoice` rule.

    `make_client(protocol)` builds a configured, unconnected paho client. Returns the
    connected client (its network loop running, paho reconnecting it from then on) and
    the protocol used ("5" or "3.1.1"). Raises ConfigError when no attempt succeeds.
    """
    choice = ProtocolChoice(version)
    broker = f"mqtt://{host}:{port}"
    for _ in range(3):  # 5, then 3.1.1 (refusal or close), then 5 again after a close
        client = make_client(choice.protocol)
        events: queue.Queue[tuple[str, object]] = queue.Queue()
        user_on_connect, user_on_disconnect = client.on_connect, client.on_disconnect
        client.on_connect = lambda c, u, f, rc, p, q=events: q.put(("connack", rc))
        client.on_disconnect = lambda c, u, f, rc, p, q=events: q.put(("closed", rc))
        kwargs = {"clean_start": True} if choice.protocol == MQTT_V5 else {}
        try:
            client.connect(host, port, keepalive=keepalive, **kwargs)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"broker {broker}: {exc}") from exc
        client.loop_start()
        try:
            kind, rc = events.get(timeout=timeout)
        except queue.Empty:
            kind, rc = "timeout", None
        if kind == "connack" and not rc.is_failure:
            client.on_connect, client.on_disconnect = user_on_connect, user_on_disconnect
            return client, choice.name
        client.loop_stop()
        client.disconnect()
        if kind == "timeout":
            raise ConfigError(f"broker {broker} did not answer CONNECT within {timeout:g} s")
        if kind == "connack":
            fatal = choice.unsupported_error(broker, rc)
            if fatal is not None:
                raise fatal
            if not choice.after_refusal(broker, rc):
                raise ConfigError(f"broker {broker} refused the connection ({rc})")
        elif not choice.after_close(broker):
            raise ConfigError(f"broker {broker} closed the connection before CONNACK")
    raise ConfigError(f"broker {broker} accepted neither MQTT 5 nor 3.1.1")
