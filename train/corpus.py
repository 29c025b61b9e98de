"""Corpus builder: recorded speech from Debian's asterisk G.722 prompts, plus any folder.

Output is a folder of int16 .npy shards (one per split) with `corpus.json`: sources,
licences, durations and the seed. Validation holds whole files of a speaker that
training never hears (Russian, `ru_RU_f_IvrvoiceRU`), as DATA.md asks.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gacflow.audio import read_audio
from gacflow.errors import AudioError, ConfigError
from gacflow.spec import SAMPLE_RATE

ASTERISK_ROOT = Path("/usr/share/asterisk/sounds")
ASTERISK_LICENCE = "CC-BY-SA 3.0 (Asterisk core sound prompts, Digium/Sangoma voice talent)"
TRAIN_VOICES = ("es_MX_f_Allison", "fr_CA_f_June", "it_IT_m_Carlo")
VALID_VOICES = ("ru_RU_f_IvrvoiceRU",)
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}
MIN_SECONDS = 0.5


@dataclass
class Source:
    path: Path
    speaker: str
    licence: str
    text: str | None = None  # transcript, where a .txt sits next to the audio
    phonemes: str | None = None  # espeak-ng phonemes, where a .phn sits next to the audio


def decode_g722(path: Path) -> np.ndarray:
    """Asterisk .g722 (raw G.722 at 64 kbit/s) -> 16 kHz float32."""
    import G722

    data = path.read_bytes()
    pcm = np.asarray(G722.G722(SAMPLE_RATE, 64000).decode(data), dtype=np.int16)
    return pcm.astype(np.float32) / 32768.0


def load_any(path: Path) -> np.ndarray:
    return decode_g722(path) if path.suffix == ".g722" else read_audio(path, max_seconds=None)


def asterisk_sources(voices: tuple[str, ...]) -> list[Source]:
    missing = [v for v in voices if not (ASTERISK_ROOT / v).is_dir()]
    if missing:
        pkgs = " ".join(f"asterisk-core-sounds-{v[:2]}-g722" for v in missing)
        raise ConfigError(f"recorded voices {missing} are not installed under {ASTERISK_ROOT}; "
                          f"run: sudo apt-get install {pkgs}")
    out = []
    for v in voices:
        out += [Source(p, v, ASTERISK_LICENCE) for p in sorted((ASTERISK_ROOT / v).rglob("*.g722"))]
    return out


def _side_text(audio: Path, suffix: str) -> str | None:
    side = audio.with_suffix(suffix)
    return side.read_text(encoding="utf-8").strip() if side.is_file() else None


def folder_sources(root: Path) -> list[Source]:
    """Any folder of WAV/FLAC/OGG; the speaker is the first sub-folder name (LibriTTS style).

    Transcripts (`.txt`) and phonemes (`.phn`) next to a file go into the manifest, and a
    `synth.json` from `gacflow-train synth` supplies the licence.
    """
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ConfigError(f"{root}: no WAV/FLAC/OGG files found")
    licence = "user-provided"
    if (root / "synth.json").is_file():
        licence = json.loads((root / "synth.json").read_text()).get("licence", licence)
    return [
        Source(p, p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else "x",
               licence, _side_text(p, ".txt"), _side_text(p, ".phn"))
        for p in files
    ]


def build(out: Path, splits: dict[str, list[Source]], seed: int = 0) -> dict:
    """Decode every source, concatenate per split into int16 shards, write corpus.json."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"seed": seed, "sample_rate": SAMPLE_RATE, "splits": {}}
    for split, sources in splits.items():
        rng = random.Random(seed)
        sources = list(sources)
        rng.shuffle(sources)
        pieces, entries, skipped, offset = [], [], 0, 0
        for s in tqdm(sources, desc=f"corpus {split}", unit="file"):
            try:
                wav = load_any(s.path)
            except (AudioError, OSError, ValueError):
                skipped += 1
                continue
            if len(wav) < MIN_SECONDS * SAMPLE_RATE:
                skipped += 1
                continue
            pcm = (np.clip(wav, -1, 1) * 32767).astype(np.int16)
            entry = {"path": str(s.path), "speaker": s.speaker, "licence": s.licence,
                     "offset": offset, "samples": len(pcm)}
            entry.update({k: v for k, v in (("text", s.text), ("phonemes", s.phonemes)) if v})
            entries.append(entry)
            pieces.append(pcm)
            offset += len(pcm)
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.int16)
        np.save(out / f"{split}.npy", audio)
        manifest["splits"][split] = {
            "files": entries,
            "skipped": skipped,
            "seconds": round(len(audio) / SAMPLE_RATE, 1),
            "speakers": sorted({e["speaker"] for e in entries}),
        }
    (out / "corpus.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def default_splits(extra: list[Path] | None = None,
                   valid_extra: list[Path] | None = None) -> dict[str, list[Source]]:
    """Recorded voices (three to train, one held out), plus folders for either split."""
    splits = {"train": asterisk_sources(TRAIN_VOICES), "valid": asterisk_sources(VALID_VOICES)}
    for root in extra or []:
        splits["train"] += folder_sources(root)
    for root in valid_extra or []:
        splits["valid"] += folder_sources(root)
    return splits
