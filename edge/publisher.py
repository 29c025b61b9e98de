"""Lossless, ordered MQTT publishing of queued packets (paho-mqtt v2, QoS 1).

The disk queue is the only source of truth. One pump thread owns the in-flight window:
it publishes queue rows strictly in id order, at most `max_inflight` unacknowledged at a
time, and deletes a row only when the broker's PUBACK for it arrives (`on_publish` with
its mid, handed over through a thread-safe queue because paho calls it under its own
lock). Each connection gets a fresh paho client: when a connection is lost the client is
dropped with whatever it had in flight, and the next one re-sends from the oldest row
still on disk, in order. A restarted agent does the same. Delivery is therefore
at-least-once and in order; receivers de-duplicate by (stream id, seq).

Reconnects back off exponentially (1 s doubling up to --reconnect-max-delay); the pump
does this itself, as each paho client makes a single connection attempt. Under
MQTT 5 the tokens topic is sent once per connection and replaced by a topic alias after
that (when the broker allows aliases): about 22 bytes less per packet, which matters at
a few hundred bit/s. Because every connection starts a new client, a re-sent packet never
refers to an alias of a previous connection.

The client id is the device id; a retained birth message goes to
gacflow/v1/<device>/status on every connect, the last will (retained) says offline.

MQTT version: `gacflow.mqtt_version.ProtocolChoice` (the rule shared with the cloud
receiver and load generator). Under `auto`, MQTT 5 is tried first and a refusal or a close
before CONNACK makes the next attempt, made at once, use 3.1.1. With `--mqtt-version 5` a
refusal is a fatal configuration error (one line, exit 2) rather than an endless retry.
"""

from __future__ import annotations

import functools
import logging
import queue
import socket
import ssl
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gacflow.broker_url import is_loopback
from gacflow.errors import ConfigError
from gacflow.mqtt_version import MQTT_V5, ProtocolChoice
from gacflow.topics import status_message, topic

from .config import EdgeConfig, broker_address
from .disk_queue import DiskQueue

log = logging.getLogger("gacflow.edge.publisher")

AUTH_FAILURES = {0x86, 0x87, 0x8C}  # bad user name or password, not authorized, bad auth method
TOKENS_ALIAS = 1


@dataclass
class PublisherStats:
    published: int = 0  # PUBLISH sends, re-sends included
    acked: int = 0
    rejected: int = 0  # MQTT 5 PUBACK with an error reason: dropped, logged
    connects: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    protocol: str = ""  # MQTT version of the last successful connection: "5" or "3.1.1"


class MqttPublisher:
    """Drains a DiskQueue to gacflow/v1/<device>/tokens."""

    def __init__(self, cfg: EdgeConfig, disk_queue: DiskQueue, birth: dict) -> None:
        self.cfg = cfg
        self.queue = disk_queue
        self.birth = birth
        self.host, self.port, self.tls = broker_address(cfg.broker)
        self.tokens_topic = topic(cfg.device_id, "tokens")
        self.status_topic = topic(cfg.device_id, "status")
        self.stats = PublisherStats()
        self.connected = threading.Event()
        self.fatal: ConfigError | None = None
        self.last_error = ""
        self.choice = ProtocolChoice(cfg.mqtt_version)
        self._acks: queue.Queue[tuple[int, int, int]] = queue.Queue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._gen = 0  # connection generation: callbacks of replaced clients are ignored
        self._dead = False  # the current client's connection ended: replace it
        self._was_up = False  # the current client reached CONNACK success
        self._connack = False  # the current client got a CONNACK (success or refusal)
        self._backoff = 0.0
        self._alias_ok = False  # the broker accepts a topic alias on this connection
        self._alias_set = False  # the alias has been bound to the tokens topic
        self._inflight: dict[int, int] = {}  # mid -> queue row id (pump thread only)
        self._cursor = 0  # highest row id handed to the current client
        self._pump: threading.Thread | None = None
        self.client = self._make_client()

    @property
    def protocol(self) -> int:
        """The paho protocol constant the next (or current) connection uses."""
        return self.choice.protocol

    # --- client setup -------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.cfg.device_id,
                        protocol=self.protocol, reconnect_on_failure=False)
        if self.tls:
            try:
                c.tls_set(ca_certs=self.cfg.ca_file or None, certfile=self.cfg.cert_file or None,
                          keyfile=self.cfg.key_file or None, cert_reqs=ssl.CERT_REQUIRED)
            except (ssl.SSLError, OSError, ValueError) as exc:
                raise ConfigError(f"TLS setup failed ({exc})") from exc
            c.tls_insecure_set(self.cfg.tls_insecure)
        if self.cfg.username:
            c.username_pw_set(self.cfg.username, self.cfg.password or None)
        c.will_set(self.status_topic, status_message(False), qos=1, retain=True)
        c.reconnect_delay_set(min_delay=1, max_delay=self.cfg.reconnect_max_delay)
        c.max_inflight_messages_set(self.cfg.max_inflight + 2)
        gen = self._gen
        c.on_connect = functools.partial(self._on_connect, gen)
        c.on_connect_fail = functools.partial(self._on_connect_fail, gen)
        c.on_disconnect = functools.partial(self._on_disconnect, gen)
        c.on_publish = functools.partial(self._on_publish, gen)
        return c

    def _connect(self) -> None:
        """Start connecting in paho's network thread (one attempt per client)."""
        kwargs = {"clean_start": True} if self.protocol == MQTT_V5 else {}
        try:
            self.client.connect_async(self.host, self.port, keepalive=self.cfg.keepalive,
                                      **kwargs)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"broker {self.cfg.broker}: {exc}") from exc
        self.client.loop_start()

    def start(self) -> None:
        if not self.tls and not is_loopback(self.host):
            log.warning("event=plaintext broker=%s (no TLS: tokens and credentials cross the "
                        "network in clear; use mqtts:// and a provisioned identity)",
                        self.cfg.broker)
        self._connect()
        self._pump = threading.Thread(target=self._run_pump, name="mqtt-pump", daemon=True)
        self._pump.start()

    # --- paho callbacks (network thread) -------------------------------------------------
    def _on_connect(self, gen, client, userdata, flags, reason_code, properties) -> None:
        if gen != self._gen:
            return
        self._connack = True
        if not reason_code.is_failure:
            self.stats.connects += 1
            self.stats.protocol = self.choice.name
            self.last_error = ""
            self._was_up = True
            self._alias_ok = getattr(properties, "TopicAliasMaximum", 0) >= TOKENS_ALIAS
            self._alias_set = False
            log.info("event=connected broker=%s protocol=%s topic_alias=%s", self.cfg.broker,
                     self.choice.name, str(self._alias_ok).lower())
            client.publish(self.status_topic, status_message(True, **self.birth), qos=1,
                           retain=True)
            self.connected.set()
            self._wake.set()
            return
        code = reason_code.value
        self.last_error = f"refused the connection ({reason_code})"
        unsupported = self.choice.unsupported_error(self.cfg.broker, reason_code)
        if code in AUTH_FAILURES:
            self.fatal = ConfigError(
                f"broker {self.cfg.broker} refused the connection: {reason_code} "
                "(check --username/--password)")
            self._stop.set()
        elif unsupported is not None:  # --mqtt-version 5 against a 3.1.1-only broker
            self.fatal = unsupported
            self._stop.set()
        elif self.choice.after_refusal(self.cfg.broker, reason_code):
            self._was_up = True  # retry at once with the other protocol
        else:
            log.warning("event=connect_refused reason=%r", str(reason_code))
        self._dead = True
        self._wake.set()

    def _on_connect_fail(self, gen, client, userdata) -> None:
        if gen != self._gen:
            return
        self.stats.connect_failures += 1
        n = self.stats.connect_failures
        if n in (1, 10) or n % 100 == 0:
            log.warning("event=connect_failed broker=%s attempts=%d", self.cfg.broker, n)
        self._dead = True  # paho gives up on this client; the pump retries after a backoff
        self._wake.set()

    def _on_disconnect(self, gen, client, userdata, flags, reason_code, properties) -> None:
        if gen != self._gen:
            return
        if self.connected.is_set() and not self._stop.is_set():
            self.stats.disconnects += 1
            self.last_error = f"disconnected ({reason_code})"
            log.warning("event=disconnected reason=%r inflight=%d", str(reason_code),
                        len(self._inflight))
        elif not self._connack and not self._stop.is_set():
            # TCP was up but the broker hung up on our CONNECT: some 3.1.1-only brokers
            # answer an MQTT 5 CONNECT this way instead of with CONNACK return code 1
            self.last_error = "closed the connection before CONNACK"
            if self.choice.after_close(self.cfg.broker):
                self._was_up = True  # retry at once with 3.1.1
        self.connected.clear()
        self._dead = True
        self._wake.set()

    def _on_publish(self, gen, client, userdata, mid, reason_code, properties) -> None:
        self._acks.put((gen, mid, reason_code.value if reason_code is not None else 0))
        self._wake.set()

    # --- pump thread ------------------------------------------------------------------------
    def _replace_client(self) -> None:
        """Drop the dead client (and its in-flight messages); re-send from the queue head."""
        old = self.client
        self._handle_acks()  # PUBACKs that arrived before the connection dropped still count
        self._gen += 1
        old.loop_stop()
        self._dead = False  # after the old thread ended: none of its callbacks can follow
        self._inflight.clear()
        self._cursor = 0
        if self._was_up:
            self._backoff = 0.0
        else:  # connect failed or refused: back off, doubling up to the maximum
            self._backoff = min(max(1.0, self._backoff * 2), float(self.cfg.reconnect_max_delay))
            if self._stop.wait(self._backoff):
                return
        self._was_up = False
        self._connack = False
        self.client = self._make_client()
        self._connect()

    def _handle_acks(self) -> None:
        while True:
            try:
                gen, mid, code = self._acks.get_nowait()
            except queue.Empty:
                return
            row = self._inflight.pop(mid, None) if gen == self._gen else None
            if row is None:
                continue  # the birth message, or a message of a replaced client
            if code >= 0x80:
                self.stats.rejected += 1
                log.error("event=publish_rejected reason_code=0x%02x row=%d", code, row)
            else:
                self.stats.acked += 1
            self.queue.delete(row)

    def _publish(self, payload: bytes) -> mqtt.MQTTMessageInfo:
        """Tokens topic in full once per connection, then its alias (MQTT 5)."""
        if not self._alias_ok:
            return self.client.publish(self.tokens_topic, payload, qos=1)
        props = Properties(PacketTypes.PUBLISH)
        props.TopicAlias = TOKENS_ALIAS
        name = "" if self._alias_set else self.tokens_topic
        info = self.client.publish(name, payload, qos=1, properties=props)
        self._alias_set = True
        return info

    def _run_pump(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            if self._dead:
                self._replace_client()
                continue
            self._handle_acks()
            if not self.connected.is_set():
                continue
            room = self.cfg.max_inflight - len(self._inflight)
            if room <= 0:
                continue
            for row, payload in self.queue.after(self._cursor, room):
                info = self._publish(payload)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    break  # connection lost: the next client re-sends from the queue
                self._inflight[info.mid] = row
                self._cursor = row
                self.stats.published += 1

    def wake(self) -> None:
        """Tell the pump a new packet is queued."""
        self._wake.set()

    def diagnose(self) -> str:
        """Why no connection: probe TCP, then the TLS handshake, with the agent's settings."""
        try:
            sock = socket.create_connection((self.host, self.port), timeout=3)
        except OSError as exc:
            return f"unreachable ({exc.strerror or exc})"
        try:
            if self.tls:
                ctx = ssl.create_default_context(cafile=self.cfg.ca_file or None)
                if self.cfg.cert_file:
                    ctx.load_cert_chain(self.cfg.cert_file, self.cfg.key_file)
                ctx.check_hostname = not self.cfg.tls_insecure
                try:
                    ctx.wrap_socket(sock, server_hostname=self.host).close()
                except (ssl.SSLError, OSError) as exc:
                    return f"TLS handshake failed ({getattr(exc, 'reason', None) or exc})"
        finally:
            sock.close()
        return self.last_error or "not connected (the broker did not accept the connection)"

    # --- shutdown ------------------------------------------------------------------------------
    def drain(self, timeout: float) -> bool:
        """Wait until every queued packet is acknowledged; False on timeout or fatal error."""
        deadline = time.monotonic() + timeout
        while len(self.queue) and time.monotonic() < deadline and self.fatal is None:
            time.sleep(0.05)
        return len(self.queue) == 0

    def close(self) -> None:
        """Say offline (retained), disconnect cleanly, stop the threads."""
        self._stop.set()
        self._wake.set()
        if self._pump:
            self._pump.join(5)
        self._handle_acks()
        if self.connected.is_set():
            info = self.client.publish(self.status_topic, status_message(False), qos=1,
                                       retain=True)
            try:
                info.wait_for_publish(2.0)
            except (RuntimeError, ValueError):
                pass
            self.client.disconnect()
        self.client.loop_stop()
