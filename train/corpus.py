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
from gacflow.fileio import atomic_path
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
    """Decode every source into one int16 shard per split and write corpus.json.

    Resumable: each split is decoded append-only into `<split>.partial.pcm` with one JSON
    line per source in `<split>.partial.jsonl`; a rerun with the same sources and seed skips
    what is already there. Memory stays at one file (LibriTTS-sized folders fit).
    """
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"seed": seed, "sample_rate": SAMPLE_RATE, "splits": {}}
    for split, sources in splits.items():
        order = list(sources)
        random.Random(seed).shuffle(order)
        records = _decode_split(out, split, order)
        entries = [r for r in records if not r.get("skipped")]
        samples = sum(e["samples"] for e in entries)
        _finish_shard(out, split, samples)
        manifest["splits"][split] = {
            "files": entries,
            "skipped": len(records) - len(entries),
            "seconds": round(samples / SAMPLE_RATE, 1),
            "speakers": sorted({e["speaker"] for e in entries}),
        }
    with atomic_path(out / "corpus.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=1))
    for split in splits:
        for suffix in (".partial.pcm", ".partial.jsonl"):
            (out / f"{split}{suffix}").unlink(missing_ok=True)
    return manifest


def _resume_records(log: Path, order: list[Source]) -> list[dict]:
    """Records of an interrupted run over the same sources in the same order, else none."""
    records = []
    if log.is_file():
        for line in log.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                break  # a line torn by the interruption: decode that file again
    if len(records) > len(order) or any(
            r["path"] != str(s.path) for r, s in zip(records, order, strict=False)):
        return []
    return records


def _decode_split(out: Path, split: str, order: list[Source]) -> list[dict]:
    """Append each source's int16 PCM to the partial shard; one progress line per source."""
    from tqdm import tqdm

    raw, log = out / f"{split}.partial.pcm", out / f"{split}.partial.jsonl"
    records = _resume_records(log, order)
    offset = sum(r["samples"] for r in records if not r.get("skipped"))
    if offset * 2 > (raw.stat().st_size if raw.is_file() else 0):
        records, offset = [], 0  # the audio those lines describe is gone: start over
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    with raw.open("ab") as pcm_file, log.open("a") as log_file:
        pcm_file.truncate(offset * 2)  # drop audio written after the last complete line
        for s in tqdm(order[len(records):], desc=f"corpus {split}", unit="file",
                      initial=len(records), total=len(order)):
            rec: dict = {"path": str(s.path)}
            try:
                wav = load_any(s.path)
            except (AudioError, OSError, ValueError):
                wav = np.zeros(0, np.float32)
            if len(wav) < MIN_SECONDS * SAMPLE_RATE:
                rec["skipped"] = True
            else:
                pcm = (np.clip(wav, -1, 1) * 32767).astype("<i2")
                pcm_file.write(pcm.tobytes())
                pcm_file.flush()
                rec.update(speaker=s.speaker, licence=s.licence, offset=offset,
                           samples=len(pcm))
                rec.update({k: v for k, v in (("text", s.text), ("phonemes", s.phonemes)) if v})
                offset += len(pcm)
            records.append(rec)
            log_file.write(json.dumps(rec) + "\n")
            log_file.flush()
    return records


def _finish_shard(out: Path, split: str, samples: int, chunk: int = 1 << 24) -> None:
    """Copy the partial PCM into `<split>.npy` in chunks (atomically)."""
    raw = out / f"{split}.partial.pcm"
    with atomic_path(out / f"{split}.npy") as tmp:
        if samples == 0:
            with tmp.open("wb") as f:
                np.save(f, np.zeros(0, np.int16))
            return
        shard = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int16, shape=(samples,))
        for start in range(0, samples, chunk):
            n = min(chunk, samples - start)
            shard[start: start + n] = np.fromfile(raw, dtype="<i2", count=n, offset=start * 2)
        shard.flush()
        del shard


def default_splits(extra: list[Path] | None = None, valid_extra: list[Path] | None = None,
                   recorded: bool = True) -> dict[str, list[Source]]:
    """Recorded voices (three to train, one held out), plus folders for either split.

    Without the recorded voices (`recorded=False`, e.g. LibriTTS only) and with no held-out
    folder, the last speaker of the `extra` folders (by name) becomes the validation
    speaker, so validation is still a voice training never hears.
    """
    splits: dict[str, list[Source]] = {"train": [], "valid": []}
    if recorded:
        splits = {"train": asterisk_sources(TRAIN_VOICES),
                  "valid": asterisk_sources(VALID_VOICES)}
    elif not extra:
        raise ConfigError("without the recorded voices, name training folders with --extra")
    for root in extra or []:
        splits["train"] += folder_sources(root)
    for root in valid_extra or []:
        splits["valid"] += folder_sources(root)
    if not splits["valid"]:
        speakers = sorted({s.speaker for s in splits["train"]})
        if len(speakers) < 2:
            raise ConfigError("no validation speaker: give --valid-extra, or put each "
                              "speaker in its own sub-folder (at least two)")
        held = speakers[-1]
        splits["valid"] = [s for s in splits["train"] if s.speaker == held]
        splits["train"] = [s for s in splits["train"] if s.speaker != held]
    return splits


def voice_splits(roots: list[Path], valid: list[str], exclude: list[str],
                 extra: list[Path] | None = None) -> dict[str, list[Source]]:
    """Splits from staged voice folders (train/sources): whole speakers are held out.

    `valid` speakers form the validation split (used for choices while training);
    `exclude` speakers are left out entirely: the report set, scored once at the end.
    """
    from .sources import load_manifest

    speakers = {sid: (Path(root), info) for root in roots
                for sid, info in load_manifest(root)["speakers"].items()}
    unknown = sorted((set(valid) | set(exclude)) - set(speakers))
    if unknown:
        raise ConfigError(f"no such speaker(s) {unknown} in the speakers.json of "
                          f"{', '.join(map(str, roots))}")
    if not valid:
        raise ConfigError("name at least one validation speaker (--valid-speakers)")
    splits: dict[str, list[Source]] = {"train": [], "valid": []}
    for sid, (root, info) in sorted(speakers.items()):
        if sid in exclude:
            continue
        files = sorted(p for p in (root / sid).glob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        split = "valid" if sid in valid else "train"
        splits[split] += [Source(p, sid, info["licence"], _side_text(p, ".txt")) for p in files]
    for folder in extra or []:
        splits["train"] += folder_sources(folder)
    return splits
