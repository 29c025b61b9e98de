"""Audio in and out: any WAV/FLAC/OGG, any rate and channel count -> 16 kHz mono float32.

soundfile (libsndfile) reads, soxr resamples; both are imported on first use so that
`import gacflow` costs NumPy only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import AudioError
from .fileio import atomic_path
from .spec import SAMPLE_RATE

DEFAULT_MAX_SECONDS = 300.0  # longer inputs are refused: split them, or raise the limit


def resample(wav: np.ndarray, sr_in: int, sr_out: int = SAMPLE_RATE) -> np.ndarray:
    """High-quality band-limited resampling (soxr)."""
    if sr_in == sr_out:
        return np.asarray(wav, dtype=np.float32)
    import soxr

    return soxr.resample(np.asarray(wav, dtype=np.float32), sr_in, sr_out, quality="HQ").astype(
        np.float32
    )


def to_mono(data: np.ndarray) -> np.ndarray:
    """Average channels: [n] or [n, ch] -> [n]."""
    data = np.asarray(data, dtype=np.float32)
    return data.mean(axis=1) if data.ndim == 2 else data


def read_audio(
    path: str | os.PathLike, max_seconds: float | None = DEFAULT_MAX_SECONDS
) -> np.ndarray:
    """Read an audio file as 16 kHz mono float32 in [-1, 1]; AudioError on anything unusable."""
    import soundfile as sf

    p = Path(path)
    if not p.exists():
        raise AudioError(f"{p}: no such file")
    if p.is_dir():
        raise AudioError(f"{p}: is a directory, not an audio file")
    try:
        info = sf.info(str(p))
    except Exception as exc:  # libsndfile raises its own types, plus RuntimeError
        raise AudioError(f"{p}: not a readable audio file ({_short(exc)})") from exc
    if info.frames <= 0 or info.samplerate <= 0:
        raise AudioError(f"{p}: holds no audio")
    seconds = info.frames / info.samplerate
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(
            f"{p}: {seconds:.0f} s is longer than the {max_seconds:.0f} s limit "
            "(split the file or pass --max-seconds)"
        )
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=False)
    except Exception as exc:
        raise AudioError(f"{p}: could not decode audio ({_short(exc)})") from exc
    wav = resample(to_mono(data), sr)
    if wav.size == 0:
        raise AudioError(f"{p}: holds no audio")
    if not np.all(np.isfinite(wav)):
        raise AudioError(f"{p}: contains NaN or infinite samples")
    return np.clip(wav, -1.0, 1.0)


def write_wav(path: str | os.PathLike, wav: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM WAV atomically (temp file + rename)."""
    import soundfile as sf

    pcm = np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), pcm, sr, subtype="PCM_16", format="WAV")


def pcm16_to_float(raw: bytes) -> np.ndarray:
    """Little-endian signed 16-bit PCM bytes -> float32 in [-1, 1)."""
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


def _short(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
