"""Audio input of any rate, channel count and container comes out 16 kHz mono."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gacflow.audio import read_audio, write_wav


@pytest.mark.parametrize("fmt,sr,ch", [("WAV", 8000, 1), ("FLAC", 44100, 2), ("OGG", 48000, 2),
                                        ("WAV", 22050, 6)])
def test_formats_rates_channels(tmp_path: Path, fmt: str, sr: int, ch: int) -> None:
    t = np.arange(sr) / sr
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, np.repeat(tone[:, None], ch, axis=1), sr, format=fmt)
    wav = read_audio(path)
    assert wav.dtype == np.float32 and abs(len(wav) - 16000) <= 2
    spectrum = np.abs(np.fft.rfft(wav))
    assert abs(np.argmax(spectrum) * 16000 / len(wav) - 440) < 5


def test_write_then_read(tmp_path: Path, speech: np.ndarray) -> None:
    write_wav(tmp_path / "a" / "b.wav", speech)
    back = read_audio(tmp_path / "a" / "b.wav")
    assert np.max(np.abs(back - speech)) < 1e-3
