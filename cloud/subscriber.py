"""MQTT intake: a paho-mqtt v2 client with a persistent session and manual acknowledgements.

* Stable client id + MQTT 5 `clean_start=False` with a session expiry (3.1.1:
  `clean_session=False`), QoS 1: while the receiver is down the broker queues every
  packet for it.
* `manual_ack=True`: a message is acknowledged only once the receiver has committed it
  to the archive (`Subscriber.ack`), so a receiver killed mid-stream loses nothing.
* paho's network thread only puts messages on a queue; the receiver's main loop does
  the work, so a slow decode never stalls keep-alives.
"""

from __future__ import annotations

import logging
import queue
import ssl
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gacflow import topics

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
    def __init__(self, url: BrokerURL, client_id: str, group: str | None = None,
                 username: str | None = None, password: str | None = None,
                 ca_file: str | None = None, cert_file: str | None = None,
                 key_file: str | None = None, mqtt_version: str = "5",
                 session_expiry: int = 7 * 24 * 3600) -> None:
        self.url = url
        self.group = group
        self.v5 = mqtt_version == "5"
        self.session_expiry = session_expiry
        self.inbox: queue.Queue[Message] = queue.Queue()
        self.connected = False
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5 if self.v5 else mqtt.MQTTv311,
            clean_session=None if self.v5 else False,
            manual_ack=True,
        )
        user = username or url.username
        if user:
            self.client.username_pw_set(user, password or url.password)
        if url.tls:
            self.client.tls_set(ca_certs=ca_file, certfile=cert_file, keyfile=key_file,
                                cert_reqs=ssl.CERT_REQUIRED)
        self.client.reconnect_delay_set(1, 30)
        self.client.max_inflight_messages_set(100)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def filters(self) -> list[str]:
        return [topics.wildcard("status"), topics.wildcard("tokens", self.group)]

    def start(self) -> None:
        """Connect (retrying in the background while the broker is unreachable)."""
        props = None
        kwargs = {}
        if self.v5:
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
        self.client.disconnect()
        self.client.loop_stop()

    def ack(self, msg: Message) -> None:
        if msg.qos:
            self.client.ack(msg.mid, msg.qos)

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.connected

    # -- paho callbacks (network thread) -------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        # status (retained) first, so a device's codec is known before its packets
        client.subscribe([(f, 1) for f in self.filters()])
        self.connected = True
        log.info("connected to %s:%s (session present: %s)", self.url.host, self.url.port,
                 flags.session_present)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected = False
        if reason_code != 0:
            log.warning("disconnected from broker (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, msg) -> None:
        self.inbox.put(Message(msg.topic, bytes(msg.payload), time.time(), msg.mid, msg.qos))
