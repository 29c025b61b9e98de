"""gacflow-edge end to end through a real mosquitto: exact delivery, outages, kills, errors.

The agent runs as a subprocess (`python -m gacflow.edge.cli`) with the shipped bundle's
INT8 ONNX encoder; a plain paho subscriber in the test collects what the broker delivers
and compares it byte for byte with the agent's packet log (--packet-log).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from broker import Mosquitto, free_port

from gacflow.audio import write_wav
from gacflow.bitstream import SILENT, decode_packet, read_packet
from gacflow.bundle import Bundle
from gacflow.topics import parse_status, topic

ENTROPY = Bundle.load().entropy  # the shipped tables: the agent codes its packets

AGENT = [sys.executable, "-m", "gacflow.edge.cli"]
DEVICE = "test-dev"


def _export_int8_bundle(src: Path, out: Path, speech: np.ndarray) -> Path:
    """Until the shipped bundle carries encoder.int8.onnx: export one with gacflow.export."""
    pytest.importorskip("torch")
    try:
        from gacflow.export.audio_data import utterance_mels
        from gacflow.export.onnx_export import export_fp32, quantize_int8
        from gacflow.export.source import from_bundle
    except ImportError:
        pytest.skip("no INT8 bundle and no gacflow.export to make one")
    from gacflow.bundle import write_manifest

    shutil.copytree(src, out)
    export_fp32(from_bundle(out).encoder, out / "encoder.fp32.onnx")
    quantize_int8(out / "encoder.fp32.onnx", out / "encoder.int8.onnx",
                  [utterance_mels(speech[: 6 * 16000])])
    (out / "encoder.fp32.onnx").unlink()
    b = Bundle.load(out, verify=False)
    write_manifest(out, b.manifest["codec"]["name"], b.codec_id, b.layout, b.model_config)
    return out


@pytest.fixture(scope="session")
def bundle(bundle_dir, speech, tmp_path_factory) -> Path:
    """A bundle with the INT8 ONNX encoder: the shipped one when it has it."""
    if Bundle.load(bundle_dir).has("encoder.int8.onnx"):
        return bundle_dir
    return _export_int8_bundle(bundle_dir, tmp_path_factory.mktemp("int8") / "bundle", speech)


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory, speech) -> Path:
    """60 s: speech with 2 s pauses (so DTX has work), built from the bundled sample."""
    pause = np.zeros(32000, np.float32)
    parts, n = [], 0
    while n < 60 * 16000:
        for piece in (speech[: 8 * 16000], pause, speech[8 * 16000 :], pause):
            parts.append(piece)
            n += len(piece)
    path = tmp_path_factory.mktemp("edge") / "long.wav"
    write_wav(path, np.concatenate(parts)[: 60 * 16000])
    return path


class Collector:
    """A plain paho subscriber with a persistent session; reconnects by itself."""

    def __init__(self, port: int, device: str = DEVICE, v311: bool = False) -> None:
        self.messages: list[bytes] = []
        self.status: list[dict] = []
        self.device = device
        self.subscribed = threading.Event()
        cid = f"sub-{uuid.uuid4().hex[:8]}"
        if v311:  # for 3.1.1-only brokers (the embedded one)
            self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid,
                                      protocol=mqtt.MQTTv311, clean_session=False)
        else:
            self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=cid,
                                      protocol=mqtt.MQTTv5)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        if v311:
            self.client.connect("127.0.0.1", port)
        else:
            props = mqtt.Properties(mqtt.PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
            self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscriber could not subscribe"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        client.subscribe([(topic(self.device, "tokens"), 1), (topic(self.device, "status"), 1)])

    def _on_message(self, client, userdata, msg) -> None:
        if msg.topic.endswith("/tokens"):
            self.messages.append(bytes(msg.payload))
        else:
            self.status.append(parse_status(msg.payload))

    def wait_for(self, n: int, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while len(self.unique()) < n and time.time() < deadline:
            time.sleep(0.1)

    def unique(self) -> list[bytes]:
        """Delivered packets, duplicates (same stream id and seq) removed, arrival order."""
        seen, out = set(), []
        for m in self.messages:
            p = decode_packet(m, ENTROPY)
            if (p.stream_id, p.seq) not in seen:
                seen.add((p.stream_id, p.seq))
                out.append(m)
        return out

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def read_log(path: Path) -> list[bytes]:
    """Split the agent's packet log (concatenated packets) into packets."""
    data, out, pos = path.read_bytes(), [], 0
    while pos < len(data):
        _, end = read_packet(data, pos, ENTROPY)
        out.append(data[pos:end])
        pos = end
    return out


def agent_args(tmp: Path, broker_url: str, bundle: Path, source: str, *extra: str) -> list[str]:
    return AGENT + [
        "--broker", broker_url, "--device-id", DEVICE, "--input", source, "--bundle", str(bundle),
        "--queue", str(tmp / "queue.db"), "--packet-log", str(tmp / "packets.bin"),
        "--stats-json", str(tmp / "stats.json"), "--status-interval", "1",
        "--reconnect-max-delay", "2", *extra,
    ]


def run_agent(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def spawn():
    """Start agent processes; any still running when the test ends is killed."""
    procs: list[subprocess.Popen] = []

    def start(args: list[str], **kwargs) -> subprocess.Popen:
        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        proc = subprocess.Popen(args, env=env, **kwargs)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def one_line_error(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr and needle in proc.stderr, proc.stderr


def test_60s_file_arrives_byte_identical(tmp_path, broker, bundle, long_wav):
    sub = Collector(broker.port)
    proc = run_agent(agent_args(tmp_path, broker.url, bundle, str(long_wav),
                                "--batch-seconds", "1"))
    assert proc.returncode == 0, proc.stderr
    sent = read_log(tmp_path / "packets.bin")
    sub.wait_for(len(sent))
    sub.close()
    assert sub.messages == sent  # every packet, once, in order, byte for byte
    packets = [decode_packet(m, ENTROPY) for m in sent]
    assert [p.seq for p in packets] == list(range(len(packets)))
    assert packets[-1].eos and not any(p.eos for p in packets[:-1])
    frames = np.concatenate([p.tokens for p in packets])
    assert len(frames) == 60 * 25
    # the tokens are the INT8 encoder's: the frames DTX kept equal an offline encode
    from gacflow.backends import encoder_runtime
    from gacflow.streaming import StreamingEncoder

    b = Bundle.load(bundle)
    from gacflow.audio import read_audio

    enc = StreamingEncoder(encoder_runtime(b, "onnx"), b.layout, b.layout.mode("275"))
    wav = read_audio(long_wav)
    offline = np.concatenate([enc.push(wav), enc.flush()])
    kept = frames != SILENT
    np.testing.assert_array_equal(frames[kept], offline[kept])
    assert 0.3 < kept.mean() < 0.95  # the pauses are silent, the speech is sent
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["finished"] and stats["queue_depth"] == 0 and stats["acked"] == len(sent)
    assert stats["bitrate"] < stats["bitrate_no_dtx"]
    birth = [s for s in sub.status if s and s["online"]]
    assert birth and birth[0]["codec_id"] == b.codec_id and birth[0]["dtx"] is True


def test_broker_outage_loses_nothing(tmp_path, broker, bundle, long_wav, spawn):
    """Broker down for 20 s in the middle of a 60 s file played at twice real time."""
    sub = Collector(broker.port)
    args = agent_args(tmp_path, broker.url, bundle, str(long_wav), "--pace", "2",
                      "--batch-seconds", "0.2", "--drain-timeout", "40")
    agent = spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(5)
    broker.stop()
    time.sleep(20)
    broker.start()
    _, err = agent.communicate(timeout=90)
    assert agent.returncode == 0, err
    sent = read_log(tmp_path / "packets.bin")
    sub.wait_for(len(sent), timeout=20)
    sub.close()
    assert sub.unique() == sent  # all of them, in order, after de-duplication by seq
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["disconnects"] >= 1 and stats["queue_depth"] == 0
    assert len(sent) == 60 * 5  # 0.2 s packets; the end joins the last (eos) one


def test_sigkill_and_restart_delivers_the_queue(tmp_path, broker, bundle, long_wav, spawn):
    sub = Collector(broker.port)
    args = agent_args(tmp_path, broker.url, bundle, str(long_wav), "--pace", "4",
                      "--batch-seconds", "0.2")
    agent = spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(4)
    broker.stop()  # from now on packets pile up on disk
    time.sleep(3)
    agent.send_signal(signal.SIGKILL)
    agent.wait(10)
    first = read_log(tmp_path / "packets.bin")
    assert not decode_packet(first[-1], ENTROPY).eos  # really killed mid-stream
    broker.start()
    short = tmp_path / "short.wav"
    write_wav(short, np.zeros(16000, np.float32))
    proc = run_agent(agent_args(tmp_path, broker.url, bundle, str(short)))
    assert proc.returncode == 0, proc.stderr
    every = read_log(tmp_path / "packets.bin")  # first session, then the second
    sub.wait_for(len(every), timeout=20)
    sub.close()
    got = sub.unique()
    # a packet queued but not yet logged at the kill may also arrive: allow exactly that
    if len(got) == len(every) + 1:
        extra = decode_packet(got[len(first)], ENTROPY)
        assert extra.stream_id == decode_packet(first[0], ENTROPY).stream_id
        got = got[: len(first)] + got[len(first) + 1 :]
    assert got == every
    ids = [decode_packet(m, ENTROPY).stream_id for m in every]
    assert ids[-1] == (ids[0] + 1) % 256  # the restart opened a new stream


def test_stdin_mode175_until_sigterm(tmp_path, broker, bundle, speech, spawn):
    sub = Collector(broker.port)
    args = agent_args(tmp_path, broker.url, bundle, "-", "--batch-seconds", "0.2",
                      "--mode", "175")
    agent = spawn(args, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                  stderr=subprocess.PIPE)
    pcm = (np.clip(speech[:48000], -1, 1) * 32767).astype("<i2").tobytes()
    agent.stdin.write(pcm)  # 3 s, like `arecord -f S16_LE -r 16000 -c 1 -t raw`
    agent.stdin.flush()
    time.sleep(3)
    agent.send_signal(signal.SIGTERM)  # stdin stays open: a live source
    _, err = agent.communicate(timeout=30)
    assert agent.returncode == 0, err
    sent = read_log(tmp_path / "packets.bin")
    sub.wait_for(len(sent))
    sub.close()
    assert sub.unique() == sent and decode_packet(sent[-1], ENTROPY).eos
    assert sum(decode_packet(m, ENTROPY).frame_count for m in sent) == 75
    got = [decode_packet(m, ENTROPY) for m in sent]
    assert {(p.mode, p.width) for p in got} == {("175", 6)}


def test_unreachable_broker_is_one_line(tmp_path, bundle, speech):
    wav = tmp_path / "a.wav"
    write_wav(wav, speech[:35200])  # 2.2 s: 11 packets of 0.2 s (the end joins the last)
    proc = run_agent(agent_args(tmp_path, f"mqtt://127.0.0.1:{free_port()}", bundle, str(wav),
                                "--drain-timeout", "2", "--batch-seconds", "0.2",
                                "--queue-max-packets", "10"))
    assert proc.returncode == 3
    one_line_error(proc, "unreachable")
    assert "10 packets still queued" in proc.stderr
    # 11 packets for a cap of 10: the oldest was dropped, and counted
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["packets"] == 11 and stats["queue_dropped"] == 1 and stats["queue_depth"] == 10


def test_bad_credentials_is_one_line(tmp_path, bundle, speech):
    b = Mosquitto()
    pw = b.dir / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "edge", "s3cret"], check=True,
                   capture_output=True)
    with open(b.conf, "a") as f:
        f.write(f"allow_anonymous false\npassword_file {pw}\n")
    b.start()
    try:
        wav = tmp_path / "a.wav"
        write_wav(wav, speech[:16000])
        proc = run_agent(agent_args(tmp_path, b.url, bundle, str(wav), "--username", "edge",
                                    "--password", "wrong", "--drain-timeout", "10"))
        one_line_error(proc, "refused the connection")
        assert proc.returncode == 2
        ok = run_agent(agent_args(tmp_path, b.url, bundle, str(wav), "--username", "edge",
                                  "--password", "s3cret", "--drain-timeout", "10"))
        assert ok.returncode == 0, ok.stderr
    finally:
        b.close()


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--bundle", "/nonexistent/bundle"], "no such directory"),
        (["--batch-seconds", "60"], "batch-seconds must be between"),
        (["--no-such-flag"], "unrecognized arguments"),
        (["--input", "/nonexistent.wav"], "no such file"),
    ],
)
def test_bad_config_is_one_line(tmp_path, bundle, extra, needle):
    args = agent_args(tmp_path, "mqtt://127.0.0.1:1", bundle, "-") + extra
    proc = run_agent(args, timeout=60)
    one_line_error(proc, needle)


def _make_certs(folder: Path) -> Path:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl CLI)."""
    def ssl_cmd(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    ssl_cmd("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=gacflow test CA", "-keyout", "ca.key", "-out", "ca.pem")
    ssl_cmd("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout",
            "server.key", "-out", "server.csr")
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl_cmd("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem")
    return folder / "ca.pem"


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs the openssl CLI")
def test_tls_and_mqtt311(tmp_path, bundle, speech):
    b = Mosquitto()
    ca = _make_certs(b.dir)
    tls_port = free_port()
    with open(b.conf, "a") as f:
        f.write(f"listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {b.dir}/server.pem\n"
                f"keyfile {b.dir}/server.key\n")
    b.start()
    try:
        wav = tmp_path / "a.wav"
        write_wav(wav, speech[:32000])
        url = f"mqtts://127.0.0.1:{tls_port}"
        sub = Collector(b.port)
        ok = run_agent(agent_args(tmp_path, url, bundle, str(wav), "--ca-file", str(ca),
                                  "--mqtt-version", "3.1.1", "--batch-seconds", "0.2"))
        assert ok.returncode == 0, ok.stderr
        assert "protocol=3.1.1" in ok.stdout
        sent = read_log(tmp_path / "packets.bin")
        sub.wait_for(len(sent))
        sub.close()
        assert sub.unique() == sent and len(sent) == 10  # the end joins the last packet
        # without our CA the broker's certificate is refused: one line saying so
        bad = run_agent(agent_args(tmp_path / "x", url, bundle, str(wav), "--drain-timeout",
                                   "2"))
        assert bad.returncode == 3
        one_line_error(bad, "TLS handshake failed")
    finally:
        b.close()


def test_a_whole_agent_run_never_imports_torch(tmp_path, broker, bundle, speech):
    wav = tmp_path / "a.wav"
    write_wav(wav, speech[:16000])
    argv = agent_args(tmp_path, broker.url, bundle, str(wav))[3:]  # flags only
    code = (
        "import sys\n"
        "from gacflow.edge.cli import main\n"
        f"rc = main({argv!r})\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'silero_vad'))\n"
        "assert rc == 0 and not bad, (rc, bad)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_litert_backend(tmp_path, broker, bundle, speech):
    """The same agent on the LiteRT (TFLite) encoder, when the bundle and runtime have it."""
    from gacflow.edge.encoder import choose_backend

    b = Bundle.load(bundle)
    try:
        choose_backend(b, "tflite")
    except Exception as exc:  # BundleError or ConfigError: say which, then skip
        pytest.skip(str(exc))
    wav = tmp_path / "a.wav"
    write_wav(wav, speech[: 3 * 16000])
    sub = Collector(broker.port)
    proc = run_agent(agent_args(tmp_path, broker.url, bundle, str(wav), "--backend", "tflite",
                                "--no-dtx"))
    assert proc.returncode == 0, proc.stderr
    sent = read_log(tmp_path / "packets.bin")
    sub.wait_for(len(sent))
    sub.close()
    assert sub.unique() == sent
    from gacflow.backends import encoder_runtime
    from gacflow.streaming import StreamingEncoder

    enc = StreamingEncoder(encoder_runtime(b, "tflite"), b.layout, b.layout.mode("275"))
    offline = np.concatenate([enc.push(speech[: 3 * 16000]), enc.flush()])
    got = np.concatenate([decode_packet(m, ENTROPY).tokens for m in sent])
    np.testing.assert_array_equal(got, offline)
    assert [s for s in sub.status if s and s["online"]][0]["backend"] == "tflite"
