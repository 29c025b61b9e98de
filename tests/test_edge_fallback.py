"""MQTT 5 -> 3.1.1 fallback of gacflow-edge (`--mqtt-version auto`) and of the load generator.

Mosquitto speaks MQTT 5, so the 3.1.1-only side is the repo's embedded broker
(gacflow.cloud.embedded_broker), which answers an MQTT 5 CONNECT with CONNACK return code
1 ("unacceptable protocol version") and closes. Some older 3.1.1 brokers hang up on an
MQTT 5 CONNECT without any CONNACK instead; `HangsUpOnMqtt5` reproduces that with a plain
TCP relay in front of the same embedded broker. The agent is the real one (a subprocess,
INT8 ONNX encoder of the shipped bundle); a plain paho 3.1.1 subscriber collects what the
broker delivers and compares it byte for byte with the agent's --packet-log.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from broker import free_port
from test_edge_mqtt import ENTROPY, Collector, read_log

from gacflow.audio import write_wav
from gacflow.bitstream import decode_packet
from gacflow.bundle import Bundle
from gacflow.cloud.embedded_broker import EmbeddedBroker
from gacflow.cloud.loadgen import Publisher, packetize
from gacflow.errors import ConfigError
from gacflow.mqtt_version import ProtocolChoice
from gacflow.spec import TokenLayout

AGENT = [sys.executable, "-m", "gacflow.edge.cli"]
DEVICE = "fallback-dev"


# -- brokers -------------------------------------------------------------------------------
@pytest.fixture
def ebroker():
    b = EmbeddedBroker().start()
    yield b
    b.stop()


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


class HangsUpOnMqtt5:
    """A loopback TCP relay to a broker that closes any MQTT 5 CONNECT without a CONNACK.

    It reads the CONNECT's fixed header and protocol name and level; level 5 gets the
    socket closed, anything else is relayed (those bytes first) to the real broker.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.levels: list[int] = []  # protocol level of every CONNECT seen
        self._socks: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._socks.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            head = _recv_exact(conn, 1)
            while True:  # remaining length: 1-4 bytes, high bit = more
                b = _recv_exact(conn, 1)
                head += b
                if not b[0] & 0x80:
                    break
            name_len = _recv_exact(conn, 2)
            name = _recv_exact(conn, int.from_bytes(name_len, "big"))
            level = _recv_exact(conn, 1)
            head += name_len + name + level
        except OSError:
            conn.close()
            return
        self.levels.append(level[0])
        if level[0] == 5:
            conn.close()
            return
        up = socket.create_connection(("127.0.0.1", self.upstream_port))
        self._socks.append(up)
        up.sendall(head)
        threading.Thread(target=self._pipe, args=(up, conn), daemon=True).start()
        self._pipe(conn, up)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.listener.close()
        for s in self._socks:
            s.close()


@pytest.fixture
def hangs_up(ebroker):
    relay = HangsUpOnMqtt5(ebroker.port)
    yield relay
    relay.close()


def subscriber_311(port: int, device: str = DEVICE) -> Collector:
    """A plain paho MQTT 3.1.1 subscriber to one device's tokens and status."""
    return Collector(port, device, v311=True)


# -- the agent -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle(bundle_dir) -> Path:
    if not Bundle.load(bundle_dir).has("encoder.int8.onnx"):
        pytest.skip("the shipped bundle has no encoder.int8.onnx")
    return bundle_dir


@pytest.fixture(scope="module")
def short_wav(tmp_path_factory, speech) -> Path:
    path = tmp_path_factory.mktemp("fallback") / "speech4s.wav"
    write_wav(path, speech[: 4 * 16000])
    return path


def run_agent(tmp: Path, url: str, bundle: Path, wav: Path, *extra: str,
              timeout: float = 90) -> subprocess.CompletedProcess:
    args = AGENT + [
        "--broker", url, "--device-id", DEVICE, "--input", str(wav), "--bundle", str(bundle),
        "--queue", str(tmp / "queue.db"), "--packet-log", str(tmp / "packets.bin"),
        "--stats-json", str(tmp / "stats.json"), "--batch-seconds", "0.2",
        "--reconnect-max-delay", "2", "--drain-timeout", "20", *extra,
    ]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def connected_protocols(stdout: str) -> list[str]:
    """The protocol= field of every `event=connected` log line."""
    return [part.split("=", 1)[1] for line in stdout.splitlines()
            if "event=connected" in line for part in line.split()
            if part.startswith("protocol=")]


def check_delivery(tmp: Path, sub: Collector, bundle: Path) -> list[bytes]:
    """Every logged packet arrived exactly once, in order, byte for byte; birth seen."""
    sent = read_log(tmp / "packets.bin")
    sub.wait_for(len(sent))
    time.sleep(0.3)  # a duplicate or an extra packet would show up now
    assert sub.messages == sent
    packets = [decode_packet(m, ENTROPY) for m in sent]
    assert [p.seq for p in packets] == list(range(len(packets)))
    assert packets[-1].eos and sum(p.frame_count for p in packets) == 100  # 4 s at 25 Hz
    birth = [s for s in sub.status if s and s.get("online")]
    assert birth and birth[0]["codec_id"] == Bundle.load(bundle).codec_id
    stats = json.loads((tmp / "stats.json").read_text())
    assert stats["finished"] and stats["queue_depth"] == 0 and stats["acked"] == len(sent)
    return sent


def test_auto_falls_back_when_the_broker_refuses_mqtt5(tmp_path, ebroker, bundle, short_wav):
    sub = subscriber_311(ebroker.port)
    proc = run_agent(tmp_path, ebroker.url, bundle, short_wav)  # --mqtt-version: default
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    sent = check_delivery(tmp_path, sub, bundle)
    sub.close()
    assert len(sent) == 20  # 20 packets of 0.2 s, the last one ending the stream
    assert "event=mqtt5_refused action=fallback_3.1.1" in proc.stdout
    assert "how=refused" in proc.stdout
    assert connected_protocols(proc.stdout) == ["3.1.1"]
    # the v5 attempt, the 3.1.1 agent connection and the subscriber; nothing malformed
    assert ebroker.stats["connections"] == 3 and ebroker.stats["malformed"] == 0


def test_auto_falls_back_when_the_broker_hangs_up_on_mqtt5(tmp_path, ebroker, hangs_up,
                                                           bundle, short_wav):
    sub = subscriber_311(ebroker.port)
    proc = run_agent(tmp_path, hangs_up.url, bundle, short_wav, "--mqtt-version", "auto")
    assert proc.returncode == 0, proc.stderr
    check_delivery(tmp_path, sub, bundle)
    sub.close()
    assert "event=mqtt5_refused action=fallback_3.1.1" in proc.stdout
    assert "how=closed" in proc.stdout
    assert connected_protocols(proc.stdout) == ["3.1.1"]
    assert hangs_up.levels == [5, 4]  # one MQTT 5 try, then 3.1.1 at once


def test_explicit_311_never_tries_mqtt5(tmp_path, ebroker, hangs_up, bundle, short_wav):
    sub = subscriber_311(ebroker.port)
    proc = run_agent(tmp_path, hangs_up.url, bundle, short_wav, "--mqtt-version", "3.1.1")
    assert proc.returncode == 0, proc.stderr
    check_delivery(tmp_path, sub, bundle)
    sub.close()
    assert hangs_up.levels == [4] and "mqtt5_refused" not in proc.stdout


def test_mqtt5_only_against_a_311_broker_is_one_line(tmp_path, ebroker, bundle, short_wav,
                                                     speech):
    t0 = time.monotonic()
    proc = run_agent(tmp_path, ebroker.url, bundle, short_wav, "--mqtt-version", "5")
    took = time.monotonic() - t0
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "does not support MQTT 5" in proc.stderr and "--mqtt-version auto" in proc.stderr
    assert took < 15  # fails at the refusal, does not sit out --drain-timeout 20
    # the refusal comes within milliseconds, so the agent usually stops before its first
    # packet; whatever it did queue stays on disk
    logged = tmp_path / "packets.bin"
    queued = read_log(logged) if logged.exists() else []
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["acked"] == 0 and stats["queue_depth"] == len(queued)
    # the next run (default auto) delivers what was queued, then its own stream
    sub = subscriber_311(ebroker.port)
    again = tmp_path / "one-second.wav"
    write_wav(again, speech[: 16000])
    ok = run_agent(tmp_path, ebroker.url, bundle, again)
    assert ok.returncode == 0, ok.stderr
    every = read_log(tmp_path / "packets.bin")
    sub.wait_for(len(every))
    sub.close()
    assert sub.messages == every and decode_packet(every[-1], ENTROPY).eos


# -- the shared protocol rule --------------------------------------------------------------
def test_protocol_choice_rules():
    auto = ProtocolChoice("auto")
    assert auto.name == "5"
    assert not auto.refused(0x87)  # not authorized: not a version problem
    assert auto.refused(0x84) and auto.name == "3.1.1"
    assert not auto.closed_before_connack() and auto.name == "3.1.1"  # a refusal is final
    guess = ProtocolChoice("auto")
    assert guess.closed_before_connack() and guess.name == "3.1.1"
    assert not guess.closed_before_connack() and guess.name == "5"  # 3.1.1 closed too
    five = ProtocolChoice("5")
    assert not five.refused(0x84) and five.name == "5"
    assert "does not support MQTT 5" in str(five.unsupported_error("mqtt://b", 0x84))
    assert five.unsupported_error("mqtt://b", 0x87) is None
    assert ProtocolChoice("3.1.1").name == "3.1.1"
    with pytest.raises(ConfigError):
        ProtocolChoice("4")


# -- the load generator (cloud/loadgen.py) -------------------------------------------------
@pytest.mark.parametrize("how", ["refuses", "hangs up"])
def test_loadgen_publisher_falls_back_to_311(ebroker, how):
    relay = HangsUpOnMqtt5(ebroker.port) if how == "hangs up" else None
    try:
        sub = subscriber_311(ebroker.port, "loadgen")
        layout = TokenLayout()
        ids = np.random.default_rng(7).integers(0, 2 ** layout.mode("275").bits, 300)
        packets = packetize(ids, "275", layout, frames_per_packet=25)
        pub = Publisher(relay.url if relay else ebroker.url, "loadgen", "codec-under-test")
        assert pub.protocol == "3.1.1"
        pub.send(packets)
        sub.wait_for(len(packets))
        pub.close()
        sub.close()
        assert sub.messages == packets
        assert sub.status[0]["online"] and sub.status[0]["codec_id"] == "codec-under-test"
        if relay:
            assert relay.levels[:2] == [5, 4]
    finally:
        if relay:
            relay.close()


def test_loadgen_publisher_keeps_mqtt5_on_mosquitto(broker):
    pub = Publisher(broker.url, "loadgen5", "codec-under-test")
    assert pub.protocol == "5"
    pub.close()


def test_loadgen_publisher_unreachable_is_a_config_error():
    with pytest.raises(ConfigError, match="127.0.0.1"):
        Publisher(f"mqtt://127.0.0.1:{free_port()}", "nobody", "codec-under-test")
