"""The embedded MQTT 3.1.1 broker with real paho clients, and the demo running on it."""

from __future__ import annotations

import queue
import re
import socket
import time

import paho.mqtt.client as mqtt
import pytest
import soundfile as sf

from gacflow.audio import write_wav
from gacflow.cloud.embedded_broker import EmbeddedBroker, matches, valid_filter


@pytest.fixture
def ebroker():
    b = EmbeddedBroker().start()
    yield b
    b.stop()


class Client:
    """A paho v2 client (MQTT 3.1.1) whose messages land in a queue."""

    def __init__(self, broker: EmbeddedBroker, cid: str, clean: bool = True,
                 will: tuple[str, bytes, bool] | None = None, keepalive: int = 60) -> None:
        self.inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = queue.Queue()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid,
                             protocol=mqtt.MQTTv311, clean_session=clean)
        self.c.on_message = lambda c, u, m: self.inbox.put(m)
        self.c.on_connect = lambda c, u, f, rc, p: self.connected.put((f.session_present, rc))
        if will:
            self.c.will_set(will[0], will[1], qos=1, retain=will[2])
        self.c.connect("127.0.0.1", broker.port, keepalive=keepalive)
        self.c.loop_start()
        self.session_present, rc = self.connected.get(timeout=5)
        assert rc == 0

    def subscribe(self, filt: str, qos: int = 1) -> None:
        done = queue.Queue()
        self.c.on_subscribe = lambda c, u, mid, codes, p: done.put(codes)
        self.c.subscribe(filt, qos)
        codes = done.get(timeout=5)
        assert [int(x.value) for x in codes] == [min(qos, 1)]

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.c.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)

    def get(self, n: int, timeout: float = 5) -> list[mqtt.MQTTMessage]:
        return [self.inbox.get(timeout=timeout) for _ in range(n)]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_topic_matching_rules():
    assert matches("a/+/c", "a/b/c") and not matches("a/+/c", "a/b/d/c")
    assert matches("a/#", "a") and matches("a/#", "a/b/c") and matches("#", "x/y")
    assert not matches("#", "$SYS/x") and not matches("+/x", "$SYS/x")
    assert valid_filter("a/+/#") and not valid_filter("a/b#") and not valid_filter("a/#/b")
    assert not valid_filter("a+/b") and not valid_filter("")


def test_qos1_round_trip_in_order(ebroker):
    sub, pub = Client(ebroker, "sub"), Client(ebroker, "pub")
    sub.subscribe("t/x", 1)
    for i in range(200):
        pub.publish("t/x", str(i).encode())
    msgs = sub.get(200)
    assert [int(m.payload) for m in msgs] == list(range(200))
    assert all(m.qos == 1 and not m.retain for m in msgs)
    pub.publish("t/x", b"q0", qos=0)
    (m,) = sub.get(1)
    assert m.payload == b"q0" and m.qos == 0
    sub.close()
    pub.close()


def test_wildcards_and_qos2_request(ebroker):
    sub, pub = Client(ebroker, "sub"), Client(ebroker, "pub")
    sub.subscribe("gacflow/v1/+/tokens", 2)  # QoS 2 is granted as 1
    sub.subscribe("status/#", 1)
    for t in ("gacflow/v1/dev1/tokens", "gacflow/v1/dev1/status", "gacflow/v1/a/b/tokens",
              "status", "status/a/b", "other"):
        pub.publish(t, t.encode())
    got = sorted(m.topic for m in sub.get(3))
    assert got == ["gacflow/v1/dev1/tokens", "status", "status/a/b"]
    with pytest.raises(queue.Empty):
        sub.inbox.get(timeout=0.3)
    sub.close()
    pub.close()


def test_retained_delivered_on_subscribe_and_cleared(ebroker):
    pub = Client(ebroker, "pub")
    pub.publish("dev/status", b"online", retain=True)
    sub = Client(ebroker, "sub")
    sub.subscribe("dev/+", 1)
    (m,) = sub.get(1)
    assert m.payload == b"online" and m.retain
    pub.publish("dev/status", b"", retain=True)  # empty retained payload clears
    (m,) = sub.get(1)
    assert m.payload == b"" and not m.retain  # live delivery carries retain=0
    late = Client(ebroker, "late")
    late.subscribe("dev/+", 1)
    with pytest.raises(queue.Empty):
        late.inbox.get(timeout=0.3)
    for c in (pub, sub, late):
        c.close()


def test_will_on_abrupt_close_and_not_on_disconnect(ebroker):
    sub = Client(ebroker, "sub")
    sub.subscribe("wills/#", 1)
    polite = Client(ebroker, "polite", will=("wills/polite", b"gone", False))
    polite.close()
    rude = Client(ebroker, "rude", will=("wills/rude", b"offline", True))
    rude.c.loop_stop()
    rude.c.socket().close()  # no DISCONNECT: the broker must publish the will
    (m,) = sub.get(1)
    assert (m.topic, m.payload) == ("wills/rude", b"offline")
    late = Client(ebroker, "late")  # the will was retained
    late.subscribe("wills/#", 1)
    (m,) = late.get(1)
    assert m.payload == b"offline" and m.retain
    sub.close()
    late.close()


def test_persistent_session_queues_while_offline(ebroker):
    sub = Client(ebroker, "keeper", clean=False)
    assert not sub.session_present
    sub.subscribe("q/#", 1)
    sub.close()
    pub = Client(ebroker, "pub")
    for i in range(50):
        pub.publish("q/a", str(i).encode())
    back = Client(ebroker, "keeper", clean=False)
    assert back.session_present
    assert [int(m.payload) for m in back.get(50)] == list(range(50))
    back.close()
    fresh = Client(ebroker, "keeper", clean=True)  # clean session drops the subscription
    assert not fresh.session_present
    pub.publish("q/a", b"x")
    with pytest.raises(queue.Empty):
        fresh.inbox.get(timeout=0.3)
    fresh.close()
    pub.close()


def test_unacked_messages_resent_with_dup_on_reconnect(ebroker):
    sub = Client(ebroker, "slow", clean=False)
    sub.subscribe("d", 1)
    sub.c.manual_ack_set(True)  # take the messages but never acknowledge them
    pub = Client(ebroker, "pub")
    for i in range(3):
        pub.publish("d", str(i).encode())
    assert [m.payload for m in sub.get(3)] == [b"0", b"1", b"2"]
    sub.close()
    back = Client(ebroker, "slow", clean=False)
    again = back.get(3)
    assert [m.payload for m in again] == [b"0", b"1", b"2"] and all(m.dup for m in again)
    back.close()
    pub.close()


def test_takeover_closes_old_connection(ebroker):
    first = Client(ebroker, "same")
    lost = queue.Queue()
    first.c.on_disconnect = lambda *a: lost.put(True)
    first.c.reconnect_delay_set(30, 30)  # stay away so the second keeps the id
    second = Client(ebroker, "same")
    assert lost.get(timeout=5)
    second.subscribe("t", 1)
    second.publish("t", b"ok")
    assert second.get(1)[0].payload == b"ok"
    first.c.loop_stop()
    second.close()


def test_garbage_does_not_kill_the_broker(ebroker):
    for junk in (b"\xff" * 64, b"\x10\xff\xff\xff\xff\x7f", b"\x10\x05\x00\x04MQ",
                 b"\x30\x03\x00\x01", b"GET / HTTP/1.0\r\n\r\n",
                 b"\x10\x0c\x00\x04MQTT\x04\x01\x00\x3c\x00\x00"):  # reserved flag set
        with socket.create_connection(("127.0.0.1", ebroker.port), timeout=5) as s:
            s.sendall(junk)
            s.shutdown(socket.SHUT_WR)
            try:
                s.recv(16)
            except OSError:
                pass
    assert ebroker.stats["malformed"] >= 4
    sub, pub = Client(ebroker, "sub"), Client(ebroker, "pub")
    sub.subscribe("after", 1)
    pub.publish("after", b"still alive")
    assert sub.get(1)[0].payload == b"still alive"
    sub.close()
    pub.close()


def test_keepalive_timeout_publishes_will(ebroker):
    sub = Client(ebroker, "sub")
    sub.subscribe("ka", 1)
    # CONNECT with keep-alive 1 s and a will, then silence: closed after 1.5 s
    will = b"\x00\x02ka" + b"\x00\x04dead"
    body = b"\x00\x04MQTT\x04" + bytes([0x02 | 0x04 | 0x08]) + b"\x00\x01" + b"\x00\x02ka" + will
    with socket.create_connection(("127.0.0.1", ebroker.port), timeout=5) as s:
        s.sendall(bytes([0x10, len(body)]) + body)
        assert s.recv(4) == b"\x20\x02\x00\x00"
        t0 = time.monotonic()
        (m,) = sub.get(1, timeout=5)
        assert m.payload == b"dead" and 1.2 < time.monotonic() - t0 < 3.5
    sub.close()


def test_pings_keep_a_quiet_client_connected(ebroker):
    c = Client(ebroker, "quiet", keepalive=1)
    lost = queue.Queue()
    c.c.on_disconnect = lambda *a: lost.put(True)
    time.sleep(2.5)  # longer than 1.5 x keep-alive: only PINGREQ/PINGRESP kept it open
    assert lost.empty()
    c.subscribe("k", 1)
    c.publish("k", b"here")
    assert c.get(1)[0].payload == b"here"
    c.close()


def test_auto_falls_back_to_embedded_without_mosquitto(monkeypatch):
    from gacflow.cloud import broker
    from gacflow.errors import ConfigError

    monkeypatch.setattr(broker, "find_mosquitto", lambda: None)
    b = broker.start_local_broker("auto")
    try:
        assert b.kind == "embedded" and b.mqtt_version == "3.1.1" and b.port > 0
    finally:
        b.stop()
    with pytest.raises(ConfigError):
        broker.start_local_broker("rabbitmq")


def test_demo_on_embedded_broker(tmp_path, speech, capsys):
    from gacflow.cloud.demo import run_demo

    clip = tmp_path / "clip.wav"
    write_wav(clip, speech[: 16000 * 4])
    assert run_demo(["--input", str(clip), "--out", str(tmp_path / "demo"),
                     "--broker", "embedded"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"broker\s+embedded", text)
    wav = re.search(r"decoded WAV\s+(\S+)", text).group(1)
    audio, sr = sf.read(wav)
    assert sr == 16000 and abs(len(audio) - 4 * 16000) <= 640
    assert re.search(r"edge agent\s+gacflow-edge", text)  # the real agent, not the fallback
