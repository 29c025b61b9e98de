"""Edge agent stages on their own: config, sources, VAD/DTX, packetizer, disk queue, stats."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from gacflow.bitstream import SILENT, decode_packet, encode_packet
from gacflow.edge import config
from gacflow.edge.cli import parser
from gacflow.edge.disk_queue import DiskQueue
from gacflow.edge.observe import AgentStats, JsonFormatter, write_json_atomic
from gacflow.edge.packetizer import Packetizer, frames_per_packet
from gacflow.edge.sources import FileSource, StdinSource, pick_device
from gacflow.edge.vad import DtxGate, EnergyVad, find_silero_model, make_vad
from gacflow.errors import AudioError, ConfigError
from gacflow.spec import FRAME_SAMPLES, TokenLayout


def _cfg(argv=(), env=None, path=None):
    return config.build(parser().parse_args(list(argv)), env=env or {}, config_path=path)


# --- config ---------------------------------------------------------------------------------
def test_config_precedence_file_env_flags(tmp_path):
    toml = tmp_path / "edge.toml"
    toml.write_text('batch-seconds = 5\nmode = "175"\ndevice_id = "from-file"\ndtx = false\n')
    env = {"GACFLOW_EDGE_BATCH_SECONDS": "2", "GACFLOW_EDGE_DTX": "true"}
    cfg = _cfg(["--batch-seconds", "0.4"], env=env, path=toml)
    assert cfg.batch_seconds == 0.4  # flag beats env beats file
    assert cfg.dtx is True  # env beats file
    assert cfg.mode == "175" and cfg.device_id == "from-file"  # file beats default
    assert _cfg(["--no-dtx"], env=env, path=toml).dtx is False


def test_config_file_from_env_and_table(tmp_path):
    toml = tmp_path / "edge.toml"
    toml.write_text('[gacflow-edge]\nbroker = "mqtts://example.org"\nrealtime = true\n')
    cfg = _cfg(env={"GACFLOW_EDGE_CONFIG": str(toml)})
    assert config.broker_address(cfg.broker) == ("example.org", 8883, True)
    assert cfg.pace_factor == 1.0


@pytest.mark.parametrize(
    "argv, env, toml, needle",
    [
        (["--batch-seconds", "20"], {}, None, "batch-seconds must be between 0.2 and 10"),
        (["--threads", "two"], {}, None, "bad value for threads"),
        (["--mode", "300"], {}, None, "mode must be one of 275, 175"),
        (["--broker", "http://x"], {}, None, "expected mqtt://HOST"),
        (["--broker", "mqtt://user:pw@x"], {}, None, "no credentials in the URL"),
        (["--device-id", "a/b"], {}, None, "device-id"),
        (["--ca-file", "/nonexistent/ca.pem"], {}, None, "no such file"),
        ([], {"GACFLOW_EDGE_BATCHSECONDS": "1"}, None, "unknown variable"),
        ([], {"GACFLOW_EDGE_DTX": "maybe"}, None, "expected true/false"),
        ([], {}, "nonsense = 1\n", "unknown setting 'nonsense'"),
        ([], {}, "batch_seconds = [\n", "not valid TOML"),
        ([], {}, 'threads = "x"\n', "bad value for threads"),
    ],
)
def test_config_errors_are_one_line(tmp_path, argv, env, toml, needle):
    path = None
    if toml is not None:
        path = tmp_path / "bad.toml"
        path.write_text(toml)
    with pytest.raises(ConfigError) as err:
        _cfg(argv, env=env, path=path)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_every_setting_has_a_flag_and_help():
    flags = parser().format_help()
    for name in config.names():
        assert "--" + name.replace("_", "-") in flags
        assert name in config.HELP


# --- sources ----------------------------------------------------------------------------------
def test_stdin_source_blocks_and_tail():
    pcm = (np.arange(1000, dtype=np.int16) * 7).astype("<i2").tobytes() + b"\x01"  # odd byte
    r, w = os.pipe()

    def feed():
        with os.fdopen(w, "wb") as f:
            for i in range(0, len(pcm), 333):
                f.write(pcm[i : i + 333])
                f.flush()
                time.sleep(0.001)

    threading.Thread(target=feed).start()
    with os.fdopen(r, "rb") as f:
        blocks = list(StdinSource(block=320, stream=f).blocks())
    assert [len(b) for b in blocks] == [320, 320, 320, 40]
    got = np.concatenate(blocks)
    np.testing.assert_array_equal(got, np.arange(1000, dtype=np.int16) * 7 / 32768.0)


def test_stdin_source_stops_while_pipe_is_quiet():
    r, w = os.pipe()
    src = StdinSource(block=320, stream=os.fdopen(r, "rb"))
    threading.Timer(0.3, src.stop).start()
    t0 = time.monotonic()
    assert list(src.blocks()) == []
    assert time.monotonic() - t0 < 2
    os.close(w)


def test_file_source_paces_at_real_time(tmp_path, speech):
    from gacflow.audio import write_wav

    path = tmp_path / "half.wav"
    write_wav(path, speech[:8000])  # 0.5 s
    t0 = time.monotonic()
    blocks = list(FileSource(str(path), block=320, pace=1.0).blocks())
    assert 0.45 < time.monotonic() - t0 < 1.5
    assert sum(len(b) for b in blocks) == 8000
    t0 = time.monotonic()
    list(FileSource(str(path), block=320, pace=0.0).blocks())
    assert time.monotonic() - t0 < 0.3


def test_pick_device_by_name_and_index():
    devs = [(0, "HDA Intel PCH: ALC3246 Analog", 2, 44100), (3, "USB Audio Device", 1, 48000)]
    assert pick_device(devs, "usb") == 3
    assert pick_device(devs, "0") == 0
    assert pick_device(devs, "") is None
    with pytest.raises(ConfigError, match="no capture device of that name"):
        pick_device(devs, "bluetooth")
    with pytest.raises(ConfigError, match="no capture device with that index"):
        pick_device(devs, "7")
    with pytest.raises(AudioError, match="no microphone found"):
        pick_device([], "")


def test_mic_without_pyaudio_is_a_clear_error():
    try:
        import pyaudio  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("PyAudio is installed here")
    proc = subprocess.run([sys.executable, "-m", "gacflow.edge.cli", "--list-devices"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "needs PyAudio" in proc.stderr


# --- VAD and DTX --------------------------------------------------------------------------------
def _speech_with_pauses(speech: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2 s silence, 4 s speech, 2 s faint noise, 4 s speech; and the truth per frame."""
    noise = np.random.default_rng(0).normal(0, 1e-3, 32000).astype(np.float32)
    parts = [np.zeros(32000, np.float32), speech[16000:80000], noise, speech[96000:160000]]
    truth = np.concatenate([np.full(len(p) // FRAME_SAMPLES, i % 2 == 1) for i, p in
                            enumerate(parts)])
    return np.concatenate(parts), truth


@pytest.mark.parametrize("kind", ["energy", "silero"])
def test_vad_finds_speech_and_silence(speech, kind):
    if kind == "silero" and find_silero_model() is None:
        pytest.skip("silero-vad is not installed (pip install --no-deps silero-vad)")
    vad = make_vad(kind)
    audio, truth = _speech_with_pauses(speech)
    # odd chunk sizes: decisions must not depend on chunking
    out = np.concatenate([vad.push(audio[i : i + 333]) for i in range(0, len(audio), 333)])
    assert len(out) == len(truth)
    assert not out[:50].any()  # leading digital silence
    assert not out[160:200].any()  # the noise gap (frames 150-200), after the word ends
    assert out[truth].mean() > 0.6  # speech is mostly detected (pauses between words exist)


def test_silero_is_chunking_invariant(speech):
    if find_silero_model() is None:
        pytest.skip("silero-vad is not installed")
    a = make_vad("silero").push(speech[:64000])
    v = make_vad("silero")
    b = np.concatenate([v.push(speech[i : i + 320]) for i in range(0, 64000, 320)])
    np.testing.assert_array_equal(a, b)


def test_energy_vad_on_silence_and_tone():
    vad = EnergyVad()
    t = np.arange(16000) / 16000
    tone = (0.1 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)
    out = vad.push(np.concatenate([np.zeros(16000, np.float32), tone]))
    assert not out[:25].any() and out[25:].all()


def test_dtx_gate_hangover_and_preroll():
    gate = DtxGate(hangover_frames=3, preroll_frames=2)
    speech = np.array([0] * 6 + [1] * 2 + [0] * 8, bool)
    tokens = np.arange(16)
    out = np.concatenate([gate.push(tokens[i : i + 1], speech[i : i + 1]) for i in range(16)]
                         + [gate.flush()])
    sent = out != SILENT
    # frames 4-5 (pre-roll), 6-7 (speech), 8-10 (hangover) are sent; the rest is SILENT
    assert sent.tolist() == [False] * 4 + [True] * 7 + [False] * 5
    np.testing.assert_array_equal(out[sent], tokens[sent])


def test_dtx_gate_holds_only_the_preroll():
    gate = DtxGate(hangover_frames=5, preroll_frames=2)
    out = gate.push(np.arange(10), np.ones(10, bool))
    assert len(out) == 8  # fixed look-ahead of two frames
    assert len(gate.flush()) == 2


# --- packetizer ---------------------------------------------------------------------------------
@pytest.mark.parametrize("seconds, frames", [(0.2, 5), (1, 25), (5, 125), (10, 250)])
def test_frames_per_packet(seconds, frames):
    assert frames_per_packet(seconds) == frames


def test_packetizer_sequence_frames_and_eos():
    mode = TokenLayout().mode("275")
    pk = Packetizer(stream_id=300, mode=mode, batch_seconds=0.2)  # 5 frames, id wraps to 44
    tokens = np.arange(23) % 1024
    tokens[7:12] = SILENT
    packets = pk.push(tokens[:13]) + pk.push(tokens[13:]) + [pk.finish()]
    assert [p.seq for p in packets] == [0, 1, 2, 3, 4]
    assert [p.first_frame for p in packets] == [0, 5, 10, 15, 20]
    assert [p.eos for p in packets] == [False] * 4 + [True]
    assert all(p.stream_id == 44 for p in packets)
    back = [decode_packet(encode_packet(p)) for p in packets]
    np.testing.assert_array_equal(np.concatenate([p.tokens for p in back]), tokens)
    assert back[1].has_dtx and not back[0].has_dtx


def test_packetizer_empty_eos():
    pk = Packetizer(0, TokenLayout().mode("175"), 1.0)
    assert pk.push(np.zeros(25, np.int64))[0].frame_count == 25
    last = decode_packet(encode_packet(pk.finish()))
    assert last.eos and last.frame_count == 0 and last.seq == 1 and last.first_frame == 25


# --- disk queue -------------------------------------------------------------------------------
def test_disk_queue_order_ack_and_restart(tmp_path):
    path = tmp_path / "q.db"
    q = DiskQueue(path)
    assert [q.new_stream_id() for _ in range(3)] == [0, 1, 2]
    ids = [q.put(f"p{i}".encode()) or None for i in range(5)]
    assert ids == [None] * 5
    rows = q.after(0, 3)
    assert [p for _, p in rows] == [b"p0", b"p1", b"p2"]
    q.delete(rows[1][0])
    assert [p for _, p in q.after(rows[0][0], 10)] == [b"p2", b"p3", b"p4"]
    q.close()
    q = DiskQueue(path)  # a restart: what was not acknowledged is still there, in order
    assert len(q) == 4 and [p for _, p in q.after(0, 10)] == [b"p0", b"p2", b"p3", b"p4"]
    assert q.new_stream_id() == 3
    q.close()


def test_disk_queue_cap_drops_oldest(tmp_path):
    q = DiskQueue(tmp_path / "q.db", max_packets=10)
    dropped = sum(q.put(bytes([i])) for i in range(25))
    assert dropped == 15 and q.dropped == 15 and len(q) == 10
    assert [p[0] for _, p in q.after(0, 100)] == list(range(15, 25))
    q.close()
    assert DiskQueue(tmp_path / "q.db").dropped == 15


def test_disk_queue_bad_path_is_config_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot open"):
        DiskQueue(tmp_path / "file" / "q.db")


# --- observability ------------------------------------------------------------------------------
def test_stats_json_atomic_and_rates(tmp_path):
    s = AgentStats(frames=250, payload_bytes=100, payload_bytes_no_dtx=400, audio_seconds=10,
                   encoder_seconds=0.05)
    snap = s.snapshot()
    assert snap["bitrate"] == 80.0 and snap["bitrate_no_dtx"] == 320.0
    assert snap["encoder_rtf"] == 0.005
    path = tmp_path / "s" / "stats.json"
    write_json_atomic(path, snap)
    assert json.loads(path.read_text())["frames"] == 250
    assert os.listdir(path.parent) == ["stats.json"]
    assert "event=status frames=250" in s.status_line()


def test_json_log_lines():
    rec = logging.LogRecord("gacflow.edge", logging.INFO, __file__, 1, "event=x a=1 b=two", (),
                            None)
    out = json.loads(JsonFormatter().format(rec))
    assert out["event"] == "x" and out["a"] == 1 and out["b"] == "two"
    assert out["level"] == "info"


# --- no torch on the edge ----------------------------------------------------------------------
def test_edge_never_imports_torch():
    code = (
        "import sys\n"
        "import gacflow.edge.agent, gacflow.edge.cli, gacflow.edge.publisher\n"
        "import gacflow.edge.vad, gacflow.edge.sources, gacflow.edge.encoder\n"
        "from gacflow.edge.vad import make_vad\n"
        "make_vad('auto')\n"
        "from gacflow.edge.cli import parser; parser().format_help()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'silero_vad'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_example_toml_is_valid():
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "edge" / "gacflow-edge.toml"
    values = config.read_toml(str(example))
    assert values["batch_seconds"] == 5.0 and values["dtx"] is True
    cfg = config.validate(config.EdgeConfig(**{**values, "ca_file": ""}))
    assert config.broker_address(cfg.broker)[2] is True


def test_backend_choice(tmp_path, bundle_dir):
    from gacflow.bundle import Bundle
    from gacflow.edge.encoder import choose_backend
    from gacflow.errors import BundleError

    b = Bundle.load(bundle_dir)
    if b.has("encoder.int8.onnx"):
        assert choose_backend(b, "auto") == "onnx"
    else:
        with pytest.raises(BundleError, match="no usable INT8 encoder"):
            choose_backend(b, "auto")
    if not b.has("encoder.int8.tflite"):
        with pytest.raises(BundleError, match="encoder.int8.tflite"):
            choose_backend(b, "tflite")


def test_no_dtx_estimate_counts_the_same_packets():
    """bitrate_no_dtx equals bitrate when DTX marked nothing (it once used plain packing
    without voice codes, so a status line could show DTX "costing" bits), and is larger
    by the silent frames' tokens when it did."""
    from types import SimpleNamespace

    from gacflow.bitstream import Packet
    from gacflow.edge.agent import EdgeAgent

    stub = SimpleNamespace(entropy=None, rate=None, _packet_log=None, stats=AgentStats(),
                           queue=SimpleNamespace(put=lambda data: 0, max_packets=1),
                           publisher=SimpleNamespace(wake=lambda: None))
    tokens = np.arange(25, dtype=np.int64) % 1024
    EdgeAgent._enqueue(stub, [Packet(1, 0, 0, tokens, 10, voice=bytes(9))])
    s = stub.stats
    assert s.payload_bytes == s.payload_bytes_no_dtx and s.active_frames == 25
    quiet = tokens.copy()
    quiet[5:15] = SILENT
    EdgeAgent._enqueue(stub, [Packet(1, 1, 25, quiet, 10)])
    added = s.payload_bytes_no_dtx - s.payload_bytes
    assert added == (10 * 10 + 7) // 8 and s.active_frames == 40 and s.frames == 50
