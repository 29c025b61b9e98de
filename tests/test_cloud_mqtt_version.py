"""The receiver's MQTT version negotiation (`--mqtt-version auto`, the default).

`gacflow-cloud` with default settings against the embedded 3.1.1-only broker (which
refuses MQTT 5 with CONNACK return code 1) must fall back to 3.1.1 and decode what a
3.1.1 publisher sends; against mosquitto it must stay on MQTT 5. The 3.1.1 session must be
persistent like the MQTT 5 one, and a broker that hangs up on an MQTT 5 CONNECT (no
CONNACK) must get the same fallback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

import numpy as np
import paho.mqtt.client as mqtt
import pytest
import soundfile as sf
from broker import free_port
from test_cloud_restart import wait_for
from test_edge_fallback import HangsUpOnMqtt5

from gacflow import mqtt_version
from gacflow.bundle import Bundle
from gacflow.cloud.config import parse_broker
from gacflow.cloud.embedded_broker import EmbeddedBroker
from gacflow.cloud.loadgen import Publisher, packetize
from gacflow.cloud.subscriber import Subscriber
from gacflow.errors import ConfigError
from gacflow.spec import FRAME_SAMPLES, TokenLayout

CLI = [sys.executable, "-m", "gacflow.cloud.cli"]


@pytest.fixture
def ebroker():
    b = EmbeddedBroker().start()
    yield b
    b.stop()


def token_packets(frames: int, seed: int = 3) -> list[bytes]:
    layout = TokenLayout()
    ids = np.random.default_rng(seed).integers(0, 2 ** layout.mode("275").bits, frames)
    return packetize(ids, "275", layout, frames_per_packet=25)


class ReceiverProcess:
    """`gacflow-cloud` with default MQTT settings, its log in a file, /health on a port."""

    def __init__(self, url: str, tmp) -> None:
        self.out, self.log = tmp / "out", tmp / "rx.log"
        self.health_port = free_port()
        env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
        for key in [k for k in env if k.startswith("GACFLOW_CLOUD_")]:
            del env[key]  # default settings, whatever the caller's environment says
        self.proc = subprocess.Popen(
            CLI + ["--broker", url, "--out", str(self.out), "--idle-timeout", "1",
                   "--reorder-timeout", "0.3", "--threads", "1",
                   "--metrics-port", str(self.health_port)],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"), env=env)

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def wait_connected(self) -> None:
        wait_for(lambda: "connected to" in self.text() or self.proc.poll() is not None, 90,
                 "receiver connected")
        assert self.proc.poll() is None, self.text()

    def health(self) -> dict:
        """The /health JSON, also while it says 503 (not connected yet)."""
        try:
            with urlopen(f"http://127.0.0.1:{self.health_port}/health", timeout=5) as r:
                return json.loads(r.read())
        except HTTPError as exc:
            return json.loads(exc.read())
        except URLError:  # the metrics server is not listening yet
            return {}

    def healthy_on(self, protocol: str) -> bool:
        h = self.health()
        return h.get("status") == "ok" and h.get("mqtt_protocol") == protocol

    def close(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        assert self.proc.wait(30) == 0  # SIGTERM is a clean stop
        return self.text()


def test_receiver_defaults_fall_back_to_311_and_decode(tmp_path, ebroker):
    rx = ReceiverProcess(ebroker.url, tmp_path)
    try:
        rx.wait_connected()
        log = rx.text()
        assert "connected to" in log and "protocol 3.1.1" in log
        assert "event=mqtt5_refused action=fallback_3.1.1" in log and "how=refused" in log
        wait_for(lambda: rx.healthy_on("3.1.1"), 10, "/health ok on 3.1.1")
        packets = token_packets(75)  # 3 s in three packets, the last one end-of-stream
        pub = Publisher(ebroker.url, "dev311", Bundle.load().codec_id, mqtt_version="3.1.1")
        assert pub.protocol == "3.1.1"
        pub.send(packets)
        wait_for(lambda: list((rx.out / "dev311").glob("*.wav")), 60, "session WAV")
        pub.close()
        (wav,) = (rx.out / "dev311").glob("*.wav")
        audio, sr = sf.read(wav, dtype="float32")
        assert sr == 16000 and len(audio) == 75 * FRAME_SAMPLES
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    finally:
        log = rx.close()
    assert "Traceback" not in log
    # one refused MQTT 5 attempt, the receiver on 3.1.1 and the publisher
    assert ebroker.stats["connections"] == 3 and ebroker.stats["malformed"] == 0


def test_receiver_defaults_stay_on_mqtt5_with_mosquitto(tmp_path, broker):
    rx = ReceiverProcess(broker.url, tmp_path)
    try:
        rx.wait_connected()
        wait_for(lambda: rx.healthy_on("5"), 10, "/health ok on 5")
    finally:
        log = rx.close()
    assert "protocol 5 " in log and "mqtt5_refused" not in log and "Traceback" not in log


def test_fallback_session_keeps_packets_queued_while_away(ebroker):
    """3.1.1 with clean_session=False: the broker holds what was sent while we were down."""
    url = parse_broker(ebroker.url)
    sub = Subscriber(url, "rx-persistent")
    sub.start()
    assert sub.wait_connected(10) and sub.protocol == "3.1.1"
    sub.stop()
    packets = token_packets(100)
    pub = Publisher(ebroker.url, "away", "codec-x", mqtt_version="3.1.1")
    pub.send(packets)
    pub.close()
    sub = Subscriber(url, "rx-persistent")
    sub.start()
    try:
        assert sub.wait_connected(10) and sub.protocol == "3.1.1"
        got = []
        deadline = time.time() + 10
        while len(got) < len(packets) and time.time() < deadline:
            if not sub.inbox.empty():
                msg = sub.inbox.get()
                sub.ack(msg)
                if msg.topic.endswith("/tokens"):
                    got.append(msg.payload)
            else:
                time.sleep(0.02)
        assert got == packets
    finally:
        sub.stop()


def test_subscriber_falls_back_when_the_broker_hangs_up_on_mqtt5(ebroker, caplog):
    relay = HangsUpOnMqtt5(ebroker.port)
    try:
        sub = Subscriber(parse_broker(relay.url), "rx-hangup")
        sub.start()
        assert sub.wait_connected(10) and sub.protocol == "3.1.1"
        sub.stop()
        assert relay.levels[:2] == [5, 4]
        assert "how=closed" in caplog.text
    finally:
        relay.close()


def test_explicit_versions_do_not_negotiate(ebroker, broker):
    sub = Subscriber(parse_broker(ebroker.url), "rx-311", mqtt_version="311")
    sub.start()
    assert sub.wait_connected(10) and sub.protocol == "3.1.1"
    sub.stop()
    sub = Subscriber(parse_broker(broker.url), "rx-5", mqtt_version="5")
    sub.start()
    assert sub.wait_connected(10) and sub.protocol == "5"
    sub.stop()
    assert ebroker.stats["connections"] == 1  # 311 never tried MQTT 5


def test_shared_rule_matches_paho_and_settings():
    assert (mqtt_version.MQTT_V5, mqtt_version.MQTT_V311) == (mqtt.MQTTv5, mqtt.MQTTv311)
    assert mqtt_version.normalize_version("311") == "3.1.1"
    assert mqtt_version.normalize_version(5) == "5"  # TOML `mqtt_version = 5`
    with pytest.raises(ConfigError, match="auto, 5 or 3.1.1"):
        mqtt_version.normalize_version("4")
    from gacflow.cloud.config import CHOICES, CloudConfig
    assert CloudConfig().mqtt_version == "auto" and "auto" in CHOICES["mqtt_version"]
