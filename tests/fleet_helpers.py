"""A provisioned fleet and its real mosquitto (the config `gacflow-cloud provision` writes),
and MQTT clients that connect with a device's or the receiver's files."""

from __future__ import annotations

import os
import queue
import ssl
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from broker import Mosquitto, free_port

from gacflow.broker_url import parse_broker_url
from gacflow.cloud import fleet_files
from gacflow.cloud.provision import Fleet


class FleetBroker(Mosquitto):
    """mosquitto running exactly the fleet's generated listener config (on a free port)."""

    def __init__(self, fleet: Fleet) -> None:
        super().__init__(port=parse_broker_url(fleet.data["broker"]).port)
        self.fleet = fleet
        self.tls_port = self.port
        self.pidfile = self.dir / "mosquitto.pid"
        conf = fleet_files.mosquitto_conf(fleet.dir, fleet.auth, self.port, bind="127.0.0.1",
                                          data=self.dir)
        self.conf.write_text(conf + f"pid_file {self.pidfile}\n"
                             + ("user root\n" if os.geteuid() == 0 else ""))

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    def reload(self) -> None:
        """SIGHUP, as `provision --reload` sends; give mosquitto a moment to re-read."""
        from gacflow.cloud.provision import reload_broker

        reload_broker(str(self.pidfile))
        time.sleep(0.5)


def make_fleet(folder: Path, auth: str = "cert", devices: tuple[str, ...] = ("a", "b")) -> Fleet:
    """A fleet whose broker URL has a free port (the broker is started on it later)."""
    fleet = Fleet(folder)
    with fleet.locked():
        fleet.create(f"mqtts://127.0.0.1:{free_port()}", auth)
        for d in devices:
            fleet.provision(d)
    return fleet


def edge_settings(fleet: Fleet, device: str) -> dict[str, str]:
    """The device's gacflow-edge.toml as a dict (what the agent would read)."""
    import tomllib

    path = fleet.dir / "devices" / device / "gacflow-edge.toml"
    return tomllib.loads(path.read_text())["gacflow-edge"]


class Client:
    """A paho MQTT 5 client with a fleet identity; records CONNACK, SUBACK, PUBACK, messages."""

    def __init__(self, port: int, ca: str | None, cert: str | None = None,
                 key: str | None = None, username: str | None = None,
                 password: str | None = None, client_id: str = "", tls: bool = True) -> None:
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
        if tls:
            self.c.tls_set(ca_certs=ca, certfile=cert, keyfile=key, cert_reqs=ssl.CERT_REQUIRED)
        self.c.max_inflight_messages_set(1000)
        if username:
            self.c.username_pw_set(username, password)
        self.port = port
        self.events: queue.Queue = queue.Queue()
        self.messages: queue.Queue = queue.Queue()
        self.c.on_connect = lambda c, u, f, rc, p: self.events.put(("connack", rc))
        self.c.on_disconnect = lambda c, u, f, rc, p: self.events.put(("closed", rc))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.events.put(("suback", rcs))
        self.c.on_publish = lambda c, u, mid, rc, p: self.events.put(("puback", rc))
        self.c.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload)))

    def connect(self, timeout: float = 5.0) -> bool:
        """True when the broker accepted us; False when it refused or hung up."""
        try:
            self.c.connect("127.0.0.1", self.port, keepalive=30)
        except (OSError, ssl.SSLError):
            return False
        self.c.loop_start()
        kind, rc = self.wait("connack", "closed", timeout=timeout)
        return kind == "connack" and not rc.is_failure

    def wait(self, *kinds: str, timeout: float = 5.0) -> tuple[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                kind, value = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if kind in kinds:
                return kind, value
        return "timeout", None

    def subscribe(self, topic: str) -> list:
        self.c.subscribe(topic, qos=1)
        return self.wait("suback")[1]

    def publish(self, topic: str, payload: bytes):
        """PUBACK reason code (MQTT 5: 0x87 when the ACL refuses it)."""
        self.c.publish(topic, payload, qos=1)
        return self.wait("puback")[1]

    def publish_many(self, topic: str, payloads: list[bytes], timeout: float = 60.0) -> None:
        """QoS 1, as fast as the broker acknowledges (a flood, or an agent's backlog)."""
        infos = [self.c.publish(topic, p, qos=1) for p in payloads]
        for i in infos:
            i.wait_for_publish(timeout)

    def birth(self, device: str, codec_id: str) -> None:
        """The retained status an agent sends first: codec id and a fresh stream nonce."""
        import secrets

        from gacflow import topics

        self.c.publish(topics.topic(device, "status"), topics.status_message(
            True, codec_id=codec_id, stream_nonce=secrets.token_hex(8)), qos=1,
            retain=True).wait_for_publish(10)

    def drain(self, seconds: float, count: int | None = None) -> list[tuple[str, bytes]]:
        """Messages received within `seconds` (returns early once `count` arrived)."""
        out: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and (count is None or len(out) < count):
            try:
                out.append(self.messages.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                break
        return out

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def device_client(fleet: Fleet, device: str, port: int, **kw) -> Client:
    s = edge_settings(fleet, device)
    return Client(port, s["ca_file"], s.get("cert_file"), s.get("key_file"),
                  s.get("username"), s.get("password"), client_id=device, **kw)


def receiver_client(fleet: Fleet, port: int, client_id: str = "gacflow-cloud-test") -> Client:
    import tomllib

    r = fleet.dir / "receiver"
    cfg = tomllib.loads((r / "receiver.toml").read_text())["cloud"]
    password = None
    if (r / "receiver.env").exists():
        password = (r / "receiver.env").read_text().strip().split("=", 1)[1]
    return Client(port, cfg["ca_file"], cfg.get("cert_file"), cfg.get("key_file"),
                  cfg.get("username"), password, client_id=client_id)
