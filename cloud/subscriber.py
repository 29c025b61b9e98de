"""MQTT intake: a paho-mqtt v2 client with a persistent session and manual acknowledgements.

* Stable client id + MQTT 5 `clean_start=False` with a session expiry (3.1.1:
  `clean_session=False`), QoS 1: while the receiver is down the broker queues every
  packet for it.
* MQTT version (`mqtt_version`, default `auto`): the shared rule of
  `gacflow.mqtt_version` - MQTT 5 first, 3.1.1 at once when the broker refuses 5 (CONNACK
  return code 1) or closes the connection before any CONNACK. The 3.1.1 session is
  persistent too, so the broker still queues packets for us. A paho client speaks one
  version, so a fallback replaces the client (same client id, same session); between
  fallbacks paho reconnects the client by itself.
* `manual_ack=True`: a message is acknowledged only once the receiver has committed it
  to the archive (`Subscriber.ack`), so a receiver killed mid-stream loses nothing.
* paho's network thread only puts messages on a queue; the receiver's main loop does
  the work, so a slow decode never stalls keep-alives.
"""

from __future__ import annotations

import functools
import logging
import queue
import ssl
import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gacflow import topics
from gacflow.mqtt_version import MQTT_V5, ProtocolChoice, protocol_name

from .config import BrokerURL

log = logging.getLogger("gacflow.cloud")


@dataclass
class Message:
    topic: str
    payload: bytes
    arrival: float
    mid: int
    qos: int


class Subscriber:
    """Subscribes to every device's status and tokens; messages land in `.inbox`.

    `.protocol` is the MQTT version of the current (or last) connection: "5", "3.1.1", or
    "" before the first one.
    """

    def __init__(self, url: BrokerURL, client_id: str, group: str | None = None,
                 username: str | None = None, password: str | None = None,
                 ca_file: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None, mqtt_version: str = "auto",
                 session_expiry: int = 7 * 24 * 3600) -> None:
        self.url = url
        self.broker = f"{'mqtts' if url.tls else 'mqtt'}://{url.host}:{url.port}"
        self.client_id = client_id
        self.group = group
        self.username = username or url.username
        self.password = password or url.password
        self.tls_files = (ca_file, cert_file, key_file)
        self.choice = ProtocolChoice(mqtt_version)
        self.session_expiry = session_expiry
        self.inbox: queue.Queue[Message] = queue.Queue()
        self.connected = False
        self.protocol = ""
        self._lock = threading.Lock()  # guards the client swap against stop()
        self._stopped = threading.Event()
        self._gen = 0  # client generation: callbacks of a replaced client are ignored
        self._connack = False  # the current connection attempt got a CONNACK
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        protocol = self.choice.protocol
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=protocol,
            clean_session=None if protocol == MQTT_V5 else False,
            manual_ack=True,
        )
        if self.username:
            client.username_pw_set(self.username, self.password)
        if self.url.tls:
            ca_file, cert_file, key_file = self.tls_files
            client.tls_set(ca_certs=ca_file, certfile=cert_file, keyfile=key_file,
                           cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(1, 30)
        client.max_inflight_messages_set(100)
        client.on_connect = functools.partial(self._on_connect, self._gen, protocol)
        client.on_disconnect = functools.partial(self._on_disconnect, self._gen, protocol)
        client.on_message = self._on_message
        return client

    def filters(self) -> list[str]:
        return [topics.wildcard("status"), topics.wildcard("tokens", self.group)]

    def start(self) -> None:
        """Connect (retrying in the background while the broker is unreachable)."""
        kwargs = {}
        if self.choice.protocol == MQTT_V5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.session_expiry
            kwargs = {"clean_start": False, "properties": props}
        try:
            self.client.connect(self.url.host, self.url.port, keepalive=30, **kwargs)
        except OSError as exc:
            log.warning("broker %s:%s unreachable (%s); retrying", self.url.host,
                        self.url.port, exc)
            self.client.connect_async(self.url.host, self.url.port, keepalive=30, **kwargs)
        self.client.loop_start()

    def stop(self) -> None:
        with self._lock:
            self._stopped.set()
            client = self.client
        client.disconnect()
        client.loop_stop()

    def ack(self, msg: Message) -> None:
        if msg.qos:
            self.client.ack(msg.mid, msg.qos)

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.connected

    # -- protocol fallback -------------------------------------------------------------
    def _switch_protocol(self, delay: float = 0.0) -> None:
        """Replace the client by one speaking `choice.protocol` (called from a paho
        callback: the old client's loop is stopped from another thread)."""
        self._gen += 1  # from now on the old client's callbacks are ignored
        self._connack = False
        old = self.client
        threading.Thread(target=self._replace_client, args=(old, delay), daemon=True,
                         name="mqtt-protocol-switch").start()

    def _replace_client(self, old: mqtt.Client, delay: float) -> None:
        old.loop_stop()
        sock = old.socket()
        if sock is not None:
            sock.close()
        if self._stopped.wait(delay):
            return
        with self._lock:
            if self._stopped.is_set():
                return
            self.client = self._make_client()
            self.start()

    # -- paho callbacks (network thread) -------------------------------------------
    def _on_connect(self, gen, protocol, client, userdata, flags, reason_code,
                    properties) -> None:
        if gen != self._gen:
            return
        self._connack = True
        if reason_code.is_failure:
            unsupported = self.choice.unsupported_error(self.broker, reason_code)
            if unsupported is not None:  # mqtt_version 5 against a 3.1.1-only broker
                log.error("%s", unsupported)
            elif self.choice.after_refusal(self.broker, reason_code):
                self._switch_protocol()
            else:
                log.error("broker refused the connection: %s", reason_code)
            return
        # status (retained) first, so a device's codec is known before its packets
        client.subscribe([(f, 1) for f in self.filters()])
        self.protocol = protocol_name(protocol)
        self.connected = True
        log.info("connected to %s:%s, protocol %s (session present: %s)", self.url.host,
                 self.url.port, self.protocol, flags.session_present)

    def _on_disconnect(self, gen, protocol, client, userdata, flags, reason_code,
                       properties) -> None:
        if gen != self._gen:
            return
        got_connack, self._connack = self._connack, False
        self.connected = False
        if not got_connack and not self._stopped.is_set():
            # TCP was up but the broker hung up on our CONNECT: some 3.1.1-only brokers
            # answer an MQTT 5 CONNECT this way instead of with CONNACK return code 1
            if self.choice.after_close(self.broker):
                self._switch_protocol()
                return
            if self.choice.protocol != protocol:  # a guessed 3.1.1 was closed too: back to 5
                self._switch_protocol(delay=1.0)
                return
        if reason_code != 0:
            log.warning("disconnected from broker (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, msg) -> None:
        self.inbox.put(Message(msg.topic, bytes(msg.payload), time.time(), msg.mid, msg.qos))
