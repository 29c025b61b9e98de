"""`--input mic` through the real PyAudio, PortAudio and ALSA libraries, no sound card.

This machine's kernel has no sound support at all (no /proc/asound, no module tree, so
the snd-aloop loopback card cannot be loaded). ALSA's user-space plugins need no kernel:
an `.asoundrc` (in a temporary HOME) defines the PCM `gacflow_test_mic`, a `file` plugin
whose `infile` is raw speech and whose slave is the `null` PCM. PortAudio lists it among
its ALSA devices and captures from it like from a microphone (without a clock: the null
PCM delivers as fast as it is read). Everything from PortAudio up is what runs on a Pi:
device listing, selection by name, opening at 16 kHz mono 16-bit, 20 ms reads, the
agent publishing to a real mosquitto, SIGTERM ending the stream. The fake-card tests of
the same path are in tests/test_edge_mic.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gacflow.bitstream import read_packet
from gacflow.bundle import Bundle

pyaudio = pytest.importorskip(
    "pyaudio", reason="PyAudio is not installed (./run setup installs portaudio19-dev and "
    "gacflow[mic])")

SECONDS = 3
FRAMES = SECONDS * 25
ASOUNDRC = """\
pcm.gacflow_test_mic {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{infile}"
    format "raw"
    hint {{ show on description "gacflow test microphone (ALSA file plugin)" }}
}}
"""


@pytest.fixture
def alsa_home(tmp_path: Path, speech: np.ndarray) -> tuple[dict, np.ndarray]:
    """A HOME whose .asoundrc defines the file-plugin microphone; (env, the PCM it plays)."""
    pcm = (np.clip(speech[: SECONDS * 16000], -1, 1) * 32767).astype("<i2")
    pcm.tofile(tmp_path / "speech.raw")
    (tmp_path / ".asoundrc").write_text(ASOUNDRC.format(infile=tmp_path / "speech.raw"))
    env = dict(os.environ, HOME=str(tmp_path), OMP_NUM_THREADS="1")
    return env, pcm


def agent(*args: str) -> list[str]:
    return [sys.executable, "-m", "gacflow.edge.cli", *args]


def tokens(path: Path) -> np.ndarray:
    data, pos, out = path.read_bytes(), 0, []
    entropy = Bundle.load().entropy
    while pos < len(data):
        p, pos = read_packet(data, pos, entropy)
        out.append(np.asarray(p.tokens))
    return np.concatenate(out)


def test_portaudio_lists_the_alsa_device(alsa_home) -> None:
    env, _ = alsa_home
    out = subprocess.run(agent("--list-devices"), capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    names = [line.split("\t")[1] for line in out.stdout.splitlines() if "\t" in line]
    assert "gacflow_test_mic" in names, out.stdout


def test_unknown_device_name_is_one_line(alsa_home, tmp_path: Path) -> None:
    env, _ = alsa_home
    out = subprocess.run(agent("--input", "mic", "--input-device", "no-such-microphone",
                               "--queue", str(tmp_path / "q.db"), "--broker",
                               "mqtt://127.0.0.1:1"), capture_output=True, text=True, env=env,
                         timeout=60)
    fatal = [ln for ln in out.stderr.splitlines() if ln.startswith("gacflow-edge:")]
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(fatal) == 1 and "--list-devices" in fatal[0]


def test_mic_capture_through_alsa_matches_file_input(alsa_home, broker, tmp_path: Path) -> None:
    """Tokens from the ALSA device equal the same PCM read from a WAV file; all delivered."""
    env, pcm = alsa_home
    stats = tmp_path / "mic.json"
    common = ["--broker", broker.url, "--no-dtx", "--threads", "1", "--status-interval", "0.2",
              "--log-level", "warning"]
    proc = subprocess.Popen(
        agent("--input", "mic", "--input-device", "gacflow_test", "--device-id", "alsa-mic",
              "--queue", str(tmp_path / "mic.db"), "--packet-log", str(tmp_path / "mic.bin"),
              "--stats-json", str(stats), *common),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if stats.exists() and json.loads(stats.read_text())["frames"] >= FRAMES + 25:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    final = json.loads(stats.read_text())
    assert final["eos_sent"] and final["acked"] == final["packets"] and final["queue_depth"] == 0

    sf.write(tmp_path / "same.wav", pcm, 16000, subtype="PCM_16")  # the very same samples
    done = subprocess.run(
        agent("--input", str(tmp_path / "same.wav"), "--device-id", "alsa-file",
              "--queue", str(tmp_path / "file.db"), "--packet-log", str(tmp_path / "file.bin"),
              *common), capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    from_mic, from_file = tokens(tmp_path / "mic.bin"), tokens(tmp_path / "file.bin")
    assert len(from_file) == FRAMES and len(from_mic) >= FRAMES + 25
    np.testing.assert_array_equal(from_mic[:FRAMES], from_file)
