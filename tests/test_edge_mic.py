"""The microphone path of gacflow-edge (`--input mic`, `--list-devices`) without a sound card.

This machine has no sound card and no PyAudio, so `FakePyAudio` is installed as the
`pyaudio` module (monkeypatch on sys.modules). It stands in for the sound card and its
driver ONLY: it emulates the part of PyAudio's API that edge/sources.py uses (PyAudio(),
get_device_count, get_device_info_by_index, open(...) -> stream.read(n,
exception_on_overflow=False) / stop_stream / close, terminate, paInt16) and its errors,
and its "microphone" plays real speech (the bundled sample) as 16-bit PCM. Everything
after the driver is the real code: MicSource, device listing and selection, the CLI, the
streaming INT8 encoder (ONNX Runtime, shipped bundle), and in the last test the whole
agent publishing to a real mosquitto.
"""

from __future__ import annotations

import json
import signal
import sys
import types

import numpy as np
import pytest
import soundfile as sf

from gacflow.audio import read_audio, write_wav
from gacflow.backends import encoder_runtime
from gacflow.bitstream import read_packet
from gacflow.bundle import Bundle
from gacflow.edge import cli
from gacflow.edge.sources import MicSource, list_devices, open_source
from gacflow.errors import AudioError, ConfigError
from gacflow.streaming import StreamingEncoder

ENTROPY = Bundle.load().entropy  # the shipped tables: the agent codes its packets

PA_INT16 = 8  # PyAudio's paInt16
DEVICES = [  # what PortAudio reports on a Raspberry Pi with a USB microphone and HDMI out
    {"name": "bcm2835 Headphones: - (hw:0,0)", "maxInputChannels": 0, "maxOutputChannels": 8,
     "defaultSampleRate": 44100.0},
    {"name": "USB PnP Sound Device: Audio (hw:1,0)", "maxInputChannels": 1,
     "maxOutputChannels": 0, "defaultSampleRate": 48000.0},
    {"name": "vc4-hdmi-0: MAI PCM i2s-hifi-0 (hw:2,0)", "maxInputChannels": 0,
     "maxOutputChannels": 2, "defaultSampleRate": 48000.0},
    {"name": "default", "maxInputChannels": 32, "maxOutputChannels": 32,
     "defaultSampleRate": 44100.0},
]


class FakeStream:
    """A capture stream that plays `pcm` (S16_LE mono), then room silence."""

    def __init__(self, card: FakePyAudio, pcm: bytes, kwargs: dict) -> None:
        self.card, self.pcm, self.kwargs = card, pcm, kwargs
        self.pos = 0
        self.reads: list[tuple[int, bool]] = []
        self.stopped = self.closed = False

    def read(self, num_frames: int, exception_on_overflow: bool = True) -> bytes:
        if self.closed:
            raise OSError(-9988, "Stream closed")
        self.reads.append((num_frames, exception_on_overflow))
        if self.card.fail_after_reads is not None and len(self.reads) > self.card.fail_after_reads:
            raise OSError(-9999, "Unanticipated host error")  # USB microphone pulled out
        want = num_frames * 2
        chunk = self.pcm[self.pos : self.pos + want]
        self.pos += len(chunk)
        if self.pos >= len(self.pcm) and self.card.on_exhausted is not None:
            self.card.on_exhausted()  # the test's "SIGTERM" once the recording is played
            self.card.on_exhausted = None
        return chunk + bytes(want - len(chunk))

    def stop_stream(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.closed = True


class FakePyAudio:
    """The sound card and driver: a module-like object with PyAudio's surface."""

    paInt16 = PA_INT16

    def __init__(self, pcm: bytes, devices: list[dict] = DEVICES) -> None:
        self.pcm, self.devices = pcm, devices
        self.instances = 0
        self.terminated = 0
        self.streams: list[FakeStream] = []
        self.fail_open: str | None = None
        self.fail_after_reads: int | None = None
        self.on_exhausted = None

    def module(self) -> types.ModuleType:
        mod = types.ModuleType("pyaudio")
        mod.paInt16 = PA_INT16
        card = self

        class PyAudio:
            def __init__(self) -> None:
                card.instances += 1

            def get_device_count(self) -> int:
                return len(card.devices)

            def get_device_info_by_index(self, index: int) -> dict:
                if not 0 <= index < len(card.devices):
                    raise OSError(-9996, "Invalid device index")
                return {"index": index, "hostApi": 0, **card.devices[index]}

            def open(self, rate, channels, format, input=False, output=False,  # noqa: A002
                     input_device_index=None, frames_per_buffer=1024, **kwargs) -> FakeStream:
                if card.fail_open:
                    raise OSError(-9997, card.fail_open)
                index = 3 if input_device_index is None else input_device_index
                if not input or not 0 <= index < len(card.devices):
                    raise OSError(-9996, "Invalid input device (no default output device)")
                if channels > card.devices[index]["maxInputChannels"]:
                    raise OSError(-9998, "Invalid number of channels")
                if format != PA_INT16:
                    raise ValueError("Invalid format")
                stream = FakeStream(card, card.pcm, dict(
                    rate=rate, channels=channels, format=format, input=input,
                    input_device_index=input_device_index,
                    frames_per_buffer=frames_per_buffer))
                card.streams.append(stream)
                return stream

            def terminate(self) -> None:
                card.terminated += 1

        mod.PyAudio = PyAudio
        return mod


@pytest.fixture(autouse=True)
def _restore_logging():
    """cli.main() sets up the agent's stdout logging; later tests must not inherit it."""
    import logging

    log = logging.getLogger("gacflow")
    saved = (log.handlers[:], log.level, log.propagate, logging.raiseExceptions)
    yield
    log.handlers[:], level, log.propagate, logging.raiseExceptions = saved
    log.setLevel(level)  # setLevel, not .level =, so the enabled-for cache is cleared


@pytest.fixture(scope="module")
def speech_file(tmp_path_factory, speech):
    """6 s of the bundled speech as a 16-bit WAV, and the same samples as raw PCM bytes."""
    path = tmp_path_factory.mktemp("mic") / "speech6s.wav"
    write_wav(path, speech[: 6 * 16000])
    pcm, sr = sf.read(str(path), dtype="int16")
    assert sr == 16000
    return path, pcm.astype("<i2").tobytes()


@pytest.fixture
def card(monkeypatch, speech_file) -> FakePyAudio:
    fake = FakePyAudio(speech_file[1])
    monkeypatch.setitem(sys.modules, "pyaudio", fake.module())
    return fake


@pytest.fixture(scope="module")
def bundle(bundle_dir) -> Bundle:
    b = Bundle.load(bundle_dir)
    if not b.has("encoder.int8.onnx"):
        pytest.skip("the shipped bundle has no encoder.int8.onnx")
    return b


def _capture(src: MicSource, card: FakePyAudio) -> list[np.ndarray]:
    """Every block the source yields until the recording has been played once."""
    card.on_exhausted = src.stop
    return list(src.blocks())


# -- devices ---------------------------------------------------------------------------------
def test_list_devices_shows_capture_devices_only(card, capsys):
    assert list_devices() == [(1, "USB PnP Sound Device: Audio (hw:1,0)", 1, 48000),
                              (3, "default", 32, 44100)]
    assert cli.main(["--list-devices"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["1\tUSB PnP Sound Device: Audio (hw:1,0)\t(inputs: 1, default rate: 48000 Hz)",
                     "3\tdefault\t(inputs: 32, default rate: 44100 Hz)"]
    assert card.terminated == card.instances == 2  # PortAudio released every time


def test_list_devices_without_any_microphone(monkeypatch, capsys):
    outputs_only = FakePyAudio(b"", devices=[d for d in DEVICES if not d["maxInputChannels"]])
    monkeypatch.setitem(sys.modules, "pyaudio", outputs_only.module())
    assert cli.main(["--list-devices"]) == 0
    assert capsys.readouterr().out == "no capture devices found\n"
    with pytest.raises(AudioError, match="no microphone found"):
        MicSource(320, "")


@pytest.mark.parametrize("wanted, index", [("usb pnp", 1), ("1", 1), ("3", 3), ("", None),
                                           ("DEFAULT", 3)])
def test_device_selection_by_name_or_index(card, wanted, index):
    src = MicSource(320, wanted)
    assert src.index == index
    _capture(src, card)
    (stream,) = card.streams
    assert stream.kwargs == dict(rate=16000, channels=1, format=PA_INT16, input=True,
                                 input_device_index=index, frames_per_buffer=320)
    assert stream.stopped and stream.closed and card.terminated == card.instances


@pytest.mark.parametrize("wanted, needle", [
    ("bluetooth", "input-device 'bluetooth': no capture device of that name"),
    ("0", "input-device 0: no capture device with that index"),  # an output-only device
    ("9", "input-device 9: no capture device with that index"),
])
def test_unknown_device_is_a_config_error(card, wanted, needle):
    with pytest.raises(ConfigError, match=needle):
        open_source("mic", 320, device=wanted)


def test_unknown_device_via_cli_is_one_line(card, tmp_path, bundle, capsys):
    rc = cli.main(["--input", "mic", "--input-device", "bluetooth", "--bundle", str(bundle.root),
                   "--queue", str(tmp_path / "q.db"), "--device-id", "mic-dev", "--no-dtx"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert "no capture device of that name (see --list-devices)" in err


def test_missing_pyaudio_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pyaudio", None)  # `import pyaudio` -> ImportError
    with pytest.raises(ConfigError, match="microphone input needs PyAudio"):
        open_source("mic", 320)
    assert cli.main(["--list-devices"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'gacflow[mic]'" in err and "arecord" in err


def test_device_errors_are_audio_errors(card):
    card.fail_open = "Invalid sample rate"
    src = MicSource(320, "usb")
    with pytest.raises(AudioError, match="cannot open microphone mic:1 at 16 kHz mono"):
        next(src.blocks())
    card.fail_open = None
    card.fail_after_reads = 10
    blocks = []
    with pytest.raises(AudioError, match="microphone mic:1 stopped delivering audio"):
        for block in MicSource(320, "usb").blocks():
            blocks.append(block)
    assert len(blocks) == 10 and card.streams[-1].closed
    assert card.terminated == card.instances  # released on both failures


# -- audio into the real encoder -----------------------------------------------------------
def test_mic_blocks_are_the_recorded_samples(card, speech_file):
    path, pcm = speech_file
    src = MicSource(320, "usb")
    blocks = _capture(src, card)
    assert all(len(b) == 320 and b.dtype == np.float32 for b in blocks)
    assert {r for r in card.streams[0].reads} == {(320, False)}  # never raise on overflow
    np.testing.assert_array_equal(np.concatenate(blocks), read_audio(path))


def test_mic_tokens_equal_file_tokens(card, speech_file, bundle):
    """The INT8 streaming encoder fed 20 ms microphone blocks gives exactly the tokens of
    the same PCM encoded from the file in one piece (it is chunking-invariant)."""
    path, _ = speech_file
    mode = bundle.layout.mode("275")
    enc = StreamingEncoder(encoder_runtime(bundle, "onnx"), bundle.layout, mode)
    mic = [enc.push(b) for b in _capture(MicSource(320, "usb"), card)] + [enc.flush()]
    mic_tokens = np.concatenate(mic)
    file_tokens = np.concatenate([enc.push(read_audio(path)), enc.flush()])
    assert len(mic_tokens) == 6 * 25
    np.testing.assert_array_equal(mic_tokens, file_tokens)
    assert len(np.unique(mic_tokens)) > 20  # real speech, not a constant token


def test_agent_streams_the_microphone_to_mosquitto(card, speech_file, bundle, broker,
                                                   tmp_path):
    """The whole agent on `--input mic`: stops like on SIGTERM when the recording ends."""
    from gacflow.edge.agent import EdgeAgent
    from gacflow.edge.config import EdgeConfig

    cfg = EdgeConfig(broker=broker.url, device_id="mic-dev", input="mic", input_device="usb",
                     bundle=str(bundle.root), backend="onnx", dtx=False, batch_seconds=0.2,
                     queue=str(tmp_path / "q.db"), packet_log=str(tmp_path / "p.bin"),
                     stats_json=str(tmp_path / "stats.json"), status_interval=1.0,
                     drain_timeout=10.0)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        agent = EdgeAgent(cfg)
        assert agent.source.name == "mic:1" and agent.source.live
        card.on_exhausted = agent.stop
        assert agent.run() == 0
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    data, packets, pos = (tmp_path / "p.bin").read_bytes(), [], 0
    while pos < len(data):
        p, pos = read_packet(data, pos, ENTROPY)
        packets.append(p)
    assert [p.seq for p in packets] == list(range(len(packets))) and packets[-1].eos
    got = np.concatenate([p.tokens for p in packets])
    enc = StreamingEncoder(encoder_runtime(bundle, "onnx"), bundle.layout,
                           bundle.layout.mode("275"))
    np.testing.assert_array_equal(got, np.concatenate([enc.push(read_audio(speech_file[0])),
                                                       enc.flush()]))
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["acked"] == len(packets) and stats["queue_depth"] == 0
