"""Clips to evaluate: a folder of audio files (optional `.txt` transcripts) or a corpus shard."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gacflow.audio import read_audio
from gacflow.errors import AudioError, ConfigError
from gacflow.spec import SAMPLE_RATE

AUDIO_SUFFIXES = {".wav", ".flac"}
CORPUS_PREFIX = "corpus:"
DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"


@dataclass
class Clip:
    """One reference utterance: 16 kHz mono float32, with its transcript when known."""

    name: str
    wav: np.ndarray
    text: str | None = None

    @property
    def seconds(self) -> float:
        return len(self.wav) / SAMPLE_RATE


def load_clips(spec: str, max_files: int | None = None, min_seconds: float = 1.0,
               skip: int = 0) -> list[Clip]:
    """`DIR` or `corpus:SPLIT[@CORPUS_DIR]` -> clips (`max_files` usable ones after `skip`).

    `skip` leaves out the first usable clips, so a second, disjoint set of the same speaker
    can choose checkpoints while the first set reports.
    """
    if max_files is not None:
        max_files += skip
    if spec.startswith(CORPUS_PREFIX):
        split, _, root = spec[len(CORPUS_PREFIX):].partition("@")
        corpus = Path(root or os.environ.get("GACFLOW_CORPUS", DEFAULT_CORPUS))
        clips = corpus_clips(corpus, split or "valid", max_files, min_seconds)
    else:
        clips = folder_clips(Path(spec), max_files, min_seconds)
    if not clips:
        raise ConfigError(f"no usable clips (>= {min_seconds} s) in {spec}")
    if skip >= len(clips):
        raise ConfigError(f"--skip-files {skip} leaves none of the {len(clips)} usable clips "
                          f"in {spec}")
    return clips[skip:]


def folder_clips(root: Path, max_files: int | None, min_seconds: float) -> list[Clip]:
    """Every WAV/FLAC under `root`, sorted by path; unreadable or too-short files are skipped
    (and counted, so a folder with none usable says what to fix)."""
    if not root.is_dir():
        raise ConfigError(f"data folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    clips: list[Clip] = []
    unreadable = short = 0
    for path in files:
        if max_files is not None and len(clips) >= max_files:
            break
        try:
            wav = read_audio(path)
        except AudioError:
            unreadable += 1
            continue
        if len(wav) < min_seconds * SAMPLE_RATE:
            short += 1
            continue
        txt = path.with_suffix(".txt")
        text = txt.read_text(encoding="utf-8", errors="replace").strip() if txt.is_file() else None
        clips.append(Clip(str(path.relative_to(root)), wav, text or None))
    if not clips:
        raise ConfigError(f"no usable clips (>= {min_seconds} s) in {root} ({len(files)} "
                          f"WAV/FLAC files: {unreadable} unreadable, {short} too short; "
                          "--min-seconds sets the limit)")
    return clips


def corpus_clips(corpus: Path, split: str, max_files: int | None,
                 min_seconds: float) -> list[Clip]:
    """Whole files of a corpus shard (`<split>.npy` int16 + `corpus.json` offsets)."""
    manifest_path, shard_path = corpus / "corpus.json", corpus / f"{split}.npy"
    if not manifest_path.is_file() or not shard_path.is_file():
        raise ConfigError(f"corpus split {split!r} not found in {corpus}")
    try:
        entries = json.loads(manifest_path.read_text())["splits"][split]["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{manifest_path}: no file list for split {split!r}") from exc
    shard = np.load(shard_path, mmap_mode="r")
    clips: list[Clip] = []
    for e in entries:
        if max_files is not None and len(clips) >= max_files:
            break
        if e["samples"] < min_seconds * SAMPLE_RATE:
            continue
        pcm = np.asarray(shard[e["offset"]: e["offset"] + e["samples"]], dtype=np.float32)
        clips.append(Clip(f"{e.get('speaker', split)}/{Path(e['path']).stem}", pcm / 32768.0))
    return clips
