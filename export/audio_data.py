"""Real speech for calibration and validation, as per-utterance token-frame mel sequences.

Calibration and validation both walk utterances frame by frame, carrying the conv state,
exactly as the device does, so the activation ranges the quantizer sees include the
states' real distribution. Sources: a corpus shard (`valid.npy` + `corpus.json`, whole
files of a held-out speaker) or any folder of audio files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gacflow.audio import read_audio
from gacflow.errors import AudioError, ConfigError
from gacflow.features import log_mel
from gacflow.spec import MELS_PER_TOKEN, SAMPLE_RATE

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}
DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"
RECOMMENDED_CALIBRATION_SECONDS = 300.0
MIN_CALIBRATION_SECONDS = 60.0  # below this the INT8 activation ranges are a guess


def corpus_utterances(corpus: Path, split: str) -> list[np.ndarray]:
    """Whole files of one split of a corpus folder (int16 shard + corpus.json)."""
    meta = json.loads((corpus / "corpus.json").read_text())
    shard = np.load(corpus / f"{split}.npy", mmap_mode="r")
    return [np.asarray(shard[f["offset"]: f["offset"] + f["samples"]], np.float32) / 32768.0
            for f in meta["splits"][split]["files"]]


def folder_utterances(folder: Path) -> list[np.ndarray]:
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ConfigError(f"{folder}: no .wav/.flac/.ogg files for calibration or validation")
    out = []
    for p in files:
        try:
            out.append(read_audio(p))
        except AudioError:
            continue  # an unreadable file should not stop an export; the rest still count
    if not out:
        raise ConfigError(f"{folder}: none of the audio files could be read")
    return out


def take_seconds(utts: list[np.ndarray], seconds: float, seed: int = 0,
                 min_seconds: float = 1.0) -> list[np.ndarray]:
    """A reproducible random pick of whole utterances totalling about `seconds`."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(utts))
    picked, total = [], 0.0
    for i in order:
        u = utts[i]
        if len(u) < min_seconds * SAMPLE_RATE:
            continue
        picked.append(u)
        total += len(u) / SAMPLE_RATE
        if total >= seconds:
            break
    return picked


def total_seconds(utts: list[np.ndarray]) -> float:
    return sum(len(u) for u in utts) / SAMPLE_RATE


def calibration_warning(seconds: float) -> str | None:
    """One line when too little calibration audio was found for trustworthy INT8 ranges."""
    if seconds >= MIN_CALIBRATION_SECONDS:
        return None
    return (f"warning: only {seconds:.0f} s of calibration audio "
            f"({RECOMMENDED_CALIBRATION_SECONDS:.0f} s recommended); INT8 ranges may be poor")


def utterance_mels(wav: np.ndarray) -> np.ndarray:
    """[T, 4, 80] token-frame log-mels of one utterance (what the device feeds the encoder)."""
    mel = log_mel(wav)
    return mel.reshape(-1, MELS_PER_TOKEN, mel.shape[-1]).astype(np.float32)


def load_utterances(source: Path | None, split: str, seconds: float, seed: int) -> list[np.ndarray]:
    """Utterances from a folder of audio, a corpus folder's `split` (calibration: train,
    validation: valid), or the default corpus's when `source` is None."""
    if source is None:
        if not (DEFAULT_CORPUS / f"{split}.npy").is_file():
            raise ConfigError(f"no {split} audio: pass a folder (default corpus "
                              f"{DEFAULT_CORPUS} is missing)")
        utts = corpus_utterances(DEFAULT_CORPUS, split)
    elif (Path(source) / "corpus.json").is_file():  # a corpus folder: its own split
        utts = corpus_utterances(Path(source), split)
    elif Path(source).is_dir():
        utts = folder_utterances(Path(source))
    else:
        raise ConfigError(f"{source}: not a folder of audio files")
    return take_seconds(utts, seconds, seed)
