"""Clips to evaluate: a folder of audio files (optional `.txt` transcripts) or a corpus shard.

Only clips with speech count: intelligibility, speaker and MOS metrics are defined for
speech, and a prompt library holds silence files and sound effects too (STOI of a silent
reference is noise; the anchors and our codec would be compared on nothing).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gacflow.audio import read_audio
from gacflow.errors import AudioError, ConfigError
from gacflow.spec import SAMPLE_RATE

if TYPE_CHECKING:
    from gacflow.edge.vad import FrameVad

AUDIO_SUFFIXES = {".wav", ".flac"}
CORPUS_PREFIX = "corpus:"
DEFAULT_CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"
MIN_SPEECH = 0.2  # a clip needs this fraction of its 40 ms frames voiced (VAD) to count


@dataclass
class Clip:
    """One reference utterance: 16 kHz mono float32, with its transcript when known."""

    name: str
    wav: np.ndarray
    text: str | None = None

    @property
    def seconds(self) -> float:
        return len(self.wav) / SAMPLE_RATE


@dataclass
class ClipFilter:
    """Decides which files are usable clips, and counts the others for the report."""

    min_seconds: float = 1.0
    min_speech: float = MIN_SPEECH
    unreadable: int = 0
    short: int = 0
    no_speech: int = 0
    _vad: FrameVad | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_speech <= 1.0:
            raise ConfigError(f"--min-speech {self.min_speech:g}: want a fraction in 0..1")

    def usable(self, wav: np.ndarray) -> bool:
        if len(wav) < self.min_seconds * SAMPLE_RATE:
            self.short += 1
            return False
        if self.min_speech > 0 and self.speech_fraction(wav) < self.min_speech:
            self.no_speech += 1
            return False
        return True

    def speech_fraction(self, wav: np.ndarray) -> float:
        """Share of the clip's 40 ms frames the edge's VAD (silero, else energy) calls speech."""
        if self._vad is None:
            from gacflow.edge.vad import make_vad

            self._vad = make_vad("auto")
        self._vad.reset()
        voiced = self._vad.push(wav)
        return float(voiced.mean()) if len(voiced) else 0.0

    def skipped(self) -> str:
        """What was left out and why, e.g. '3 without speech (silero VAD: ...)'; '' if nothing."""
        vad = self._vad.name if self._vad else "no"
        parts = [f"{n} {what}" for n, what in (
            (self.unreadable, "unreadable"),
            (self.short, f"shorter than {self.min_seconds:g} s"),
            (self.no_speech, f"without speech ({vad} VAD: < {self.min_speech:.0%} of frames "
                             "voiced)"))
            if n]
        return ", ".join(parts)


def load_clips(spec: str, max_files: int | None = None, keep: ClipFilter | None = None,
               skip: int = 0) -> list[Clip]:
    """`DIR` or `corpus:SPLIT[@CORPUS_DIR]` -> clips (`max_files` usable ones after `skip`).

    `skip` leaves out the first usable clips, so a second, disjoint set of the same speaker
    can choose checkpoints while the first set reports. `keep` says what is usable (default:
    at least `min_seconds` long and voiced) and counts what it left out.
    """
    keep = keep or ClipFilter()
    if max_files is not None:
        max_files += skip
    if spec.startswith(CORPUS_PREFIX):
        split, _, root = spec[len(CORPUS_PREFIX):].partition("@")
        corpus = Path(root or os.environ.get("GACFLOW_CORPUS", DEFAULT_CORPUS))
        clips = corpus_clips(corpus, split or "valid", max_files, keep)
    else:
        clips = folder_clips(Path(spec), max_files, keep)
    if not clips:
        raise ConfigError(f"no usable clips in {spec} ({keep.skipped() or 'none found'})")
    if skip >= len(clips):
        raise ConfigError(f"--skip-files {skip} leaves none of the {len(clips)} usable clips "
                          f"in {spec}")
    return clips[skip:]


def folder_clips(root: Path, max_files: int | None, keep: ClipFilter) -> list[Clip]:
    """Every WAV/FLAC under `root`, sorted by path; unreadable, too-short and unvoiced files
    are skipped (and counted, so a folder with none usable says what to fix)."""
    if not root.is_dir():
        raise ConfigError(f"data folder not found: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    clips: list[Clip] = []
    for path in files:
        if max_files is not None and len(clips) >= max_files:
            break
        try:
            wav = read_audio(path)
        except AudioError:
            keep.unreadable += 1
            continue
        if not keep.usable(wav):
            continue
        txt = path.with_suffix(".txt")
        text = txt.read_text(encoding="utf-8", errors="replace").strip() if txt.is_file() else None
        clips.append(Clip(str(path.relative_to(root)), wav, text or None))
    if not clips:
        raise ConfigError(f"no usable clips in {root} ({len(files)} WAV/FLAC files: "
                          f"{keep.skipped() or 'none'}; --min-seconds and --min-speech set "
                          "the limits)")
    return clips


def corpus_clips(corpus: Path, split: str, max_files: int | None,
                 keep: ClipFilter) -> list[Clip]:
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
        if e["samples"] < keep.min_seconds * SAMPLE_RATE:
            continue  # not counted: corpus shards hold many short prompts by design
        pcm = np.asarray(shard[e["offset"]: e["offset"] + e["samples"]], dtype=np.float32)
        wav = pcm / 32768.0
        if keep.usable(wav):
            clips.append(Clip(f"{e.get('speaker', split)}/{Path(e['path']).stem}", wav))
    return clips
