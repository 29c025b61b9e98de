"""The `gacflow` CLI end to end, and one clear line for every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gacflow.bundle import Bundle


def gacflow(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "gacflow.cli.main", *args],
                       capture_output=True, text=True, timeout=300)
    if check:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def clip30(tmp_path_factory, speech: np.ndarray) -> Path:
    """30 s of speech at 44.1 kHz stereo: exercises resampling and downmix too."""
    from gacflow.audio import resample

    wav = resample(np.tile(speech, 2)[: 30 * 16000], 16000, 44100)
    path = tmp_path_factory.mktemp("clips") / "speech30.wav"
    sf.write(path, np.stack([wav, 0.5 * wav], axis=1), 44100)
    return path


@pytest.mark.parametrize("mode,limit", [("275", 275), ("175", 175)])
def test_round_trip_and_bitrate(clip30: Path, tmp_path: Path, mode: str, limit: int) -> None:
    gac, out = tmp_path / "x.gac", tmp_path / "y.wav"
    gacflow("encode", str(clip30), str(gac), "--mode", mode)
    gacflow("decode", str(gac), str(out))
    info = json.loads(gacflow("info", str(gac), "--json").stdout)
    assert info["mode"] == mode and info["frames"] == 750
    assert info["duration_s"] == pytest.approx(30.0)
    assert 0 < info["bitrate_bps"] <= limit
    wav, sr = sf.read(out)
    assert sr == 16000 and abs(len(wav) - 30 * 16000) <= 1


def test_info_tokens_lists_one_list_per_frame(clip30: Path, tmp_path: Path) -> None:
    gac = tmp_path / "x.gac"
    gacflow("encode", str(clip30), str(gac), "--mode", "175")
    info = json.loads(gacflow("info", str(gac), "--json", "--tokens").stdout)
    assert len(info["tokens"]) == 750
    assert all(isinstance(t, list) and 0 <= t[0] < 64 for t in info["tokens"])


def _bad_inputs(tmp: Path, speech: np.ndarray) -> dict[str, list[str]]:
    (tmp / "text.wav").write_text("this is not audio")
    sf.write(tmp / "empty.wav", np.zeros(0), 16000)
    sf.write(tmp / "long.wav", np.zeros(16000 * 600 + 16, np.int16), 16000, subtype="PCM_16")
    sf.write(tmp / "ok.wav", speech[:16000], 16000)
    (tmp / "corrupt.gac").write_bytes(b"GAC\x01" + bytes(range(40)))
    gacflow("encode", str(tmp / "ok.wav"), str(tmp / "ok.gac"))
    data = bytearray((tmp / "ok.gac").read_bytes())
    data[-3] ^= 0x10
    (tmp / "flipped.gac").write_bytes(bytes(data))
    from gacflow import container

    tokens, info = container.read(tmp / "ok.gac", Bundle.load().entropy)
    tokens.codec_id = "gacflow-other-deadbeef"
    container.write(tmp / "foreign.gac", tokens, 10)
    return {
        "missing file": ["encode", str(tmp / "nope.wav"), str(tmp / "o.gac")],
        "not audio": ["encode", str(tmp / "text.wav"), str(tmp / "o.gac")],
        "empty audio": ["encode", str(tmp / "empty.wav"), str(tmp / "o.gac")],
        "10-minute file": ["encode", str(tmp / "long.wav"), str(tmp / "o.gac")],
        "directory": ["encode", str(tmp), str(tmp / "o.gac")],
        "corrupt gac": ["decode", str(tmp / "corrupt.gac"), str(tmp / "o.wav")],
        "bit flip": ["decode", str(tmp / "flipped.gac"), str(tmp / "o.wav")],
        "wav as gac": ["info", str(tmp / "ok.wav")],
        "wrong codec": ["decode", str(tmp / "foreign.gac"), str(tmp / "o.wav")],
        "missing gac": ["info", str(tmp / "nope.gac")],
        "unwritable output": ["decode", str(tmp / "ok.gac"), "/proc/gacflow-test/o.wav"],
        "missing bundle": ["encode", str(tmp / "ok.wav"), str(tmp / "o.gac"),
                           "--bundle", str(tmp / "nobundle")],
    }


def test_bad_inputs_give_one_line_and_nonzero_exit(tmp_path: Path, speech: np.ndarray) -> None:
    for name, args in _bad_inputs(tmp_path, speech).items():
        p = gacflow(*args, check=False)
        lines = p.stderr.strip().splitlines()
        assert p.returncode != 0, name
        assert len(lines) == 1 and lines[0].startswith("gacflow: error:"), (name, p.stderr)
        assert "Traceback" not in p.stderr, name


def test_other_clis_answer_help() -> None:
    for mod in ("gacflow.edge.cli", "gacflow.cloud.cli", "gacflow.export.cli"):
        p = subprocess.run([sys.executable, "-m", mod, "--help"], capture_output=True, text=True)
        assert p.returncode == 0 and "usage" in p.stdout.lower(), mod
