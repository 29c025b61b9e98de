"""`gacflow demo` end to end on a short clip: broker, agent, receiver, report."""

from __future__ import annotations

import re

import soundfile as sf

from gacflow.audio import write_wav
from gacflow.cloud.demo import run_demo


def test_demo_runs_and_reports(tmp_path, speech, capsys):
    clip = tmp_path / "clip.wav"
    write_wav(clip, speech[: 16000 * 4])
    assert run_demo(["--input", str(clip), "--out", str(tmp_path / "demo")]) == 0
    text = capsys.readouterr().out
    wav = re.search(r"decoded WAV\s+(\S+)", text).group(1)
    audio, sr = sf.read(wav)
    assert sr == 16000 and abs(len(audio) - 4 * 16000) <= 640
    payload = float(re.search(r"payload\s+(\d+) bit/s", text).group(1))
    wire = float(re.search(r"wire \(MQTT\)\s+(\d+) bit/s", text).group(1))
    assert 0 < payload < wire
    assert re.search(r"STOI\s+0\.\d+", text)
