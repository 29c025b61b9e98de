"""Synthetic speech with known text and phonemes, for training and WER.

Two synthesizers write the same layout, `<out>/<voice>/<id>.wav` (16 kHz mono) with
`<id>.txt` (text) and `<id>.phn` (espeak-ng phonemes) plus a `synth.json` manifest, so a
folder works both as training data and as an eval set with transcripts:

- `espeak` (default): robotic but instant, exact phonemes, many male/female variants to widen
  the speaker range that three recorded voices cannot give; English by default, or any
  language Debian ships fortunes for (`language`), so phone-level training signals are
  not English-only.
- `kokoro` (`synth_kokoro.py`): natural-sounding neural TTS (Kokoro-82M, int8 ONNX), about
  real time on CPU; the eval set for a meaningful ASR word error rate.
- `festival` (`synth_festival.py`): Debian's festival with a female HTS and a male diphone
  US voice, at random speaking rates.
"""

from __future__ import annotations

import io
import json
import random
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np

from gacflow.audio import resample, write_wav
from gacflow.errors import ConfigError
from gacflow.spec import SAMPLE_RATE

ENGINES = ("espeak", "kokoro", "festival")
FORTUNES = Path("/usr/share/games/fortunes")
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp")
# Languages other than English: Debian's fortunes-<lang> folders.
LANGUAGES = ("en", "es", "de", "ru", "pl", "cs")
# fortunes-it and fortunes-br also put these files in the English folder; the English
# reader skips them, so installing those packs never changes an English set.
NOT_ENGLISH = frozenset({"adams", "banner", "computer", "definizioni", "formiche", "italia",
                         "itatrek", "jackfr", "leggi", "luke", "luttazzi", "norm",
                         "paolotedeschi", "zuse", "brasil"})
PUNCTUATION = set(" ,.;:'?!-")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4")
FALLBACK_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "A small device on the roof sends a few hundred bits every second.",
    "The weather station reports rain in the north and wind along the coast.",
    "Turn left at the second light and the office is on your right.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese.",
)


class RenderError(Exception):
    """The engine could not speak this one sentence (it crashed or wrote no audio); the
    generator substitutes the next sentence. Missing installs stay ConfigErrors."""


def espeak() -> str:
    exe = shutil.which("espeak-ng")
    if not exe:
        raise ConfigError("espeak-ng is not installed (apt-get install espeak-ng)")
    return exe


def fortune_texts(limit: int, seed: int, words: tuple[int, int] = (4, 30),
                  exclude: frozenset[str] = frozenset(), spare: int = 0,
                  language: str = "en") -> list[str]:
    """`limit` + `spare` sentences of `words` (min, max) words from Debian's fortunes, else a
    built-in list; sentences in `exclude` (another set's texts, e.g. the WER evaluation set)
    are left out. Spares stand in for sentences an engine cannot render."""
    if language != "en":
        return _foreign_texts(limit + spare, seed, words, exclude, language)
    lo, hi = words
    texts = []
    files = [f for f in sorted(FORTUNES.glob("*"))  # none when fortunes is not installed
             if not f.suffix and f.is_file() and f.name not in NOT_ENGLISH]
    for line in _fortune_lines(files):
        if re.fullmatch(r"[A-Za-z ,.;:'?!-]+", line) and lo <= len(line.split()) <= hi:
            texts.append(line)
    if not texts:
        texts = [t for t in FALLBACK_TEXTS if lo <= len(t.split()) <= hi] or list(FALLBACK_TEXTS)
        if limit > len(texts):
            raise ConfigError(f"{FORTUNES} not found: without Debian's fortunes only "
                              f"{len(texts)} built-in sentences exist, too few for {limit} "
                              "utterances (apt-get install fortunes)")
    random.Random(seed).shuffle(texts)
    # after the shuffle, so the sets made before this filter keep their sentences
    texts = [t for t in texts if is_prose(t) and t not in exclude]
    if not texts:
        raise ConfigError("every candidate sentence is excluded")
    return _cycled(texts, limit + spare)


def _foreign_texts(n: int, seed: int, words: tuple[int, int], exclude: frozenset[str],
                   language: str) -> list[str]:
    """Sentences of Debian's fortunes-<language> (letters of any script and plain
    punctuation only; the offensive sections left out), shuffled with `seed`."""
    check_language(language)
    folder = FORTUNES / language
    lo, hi = words
    files = sorted(f for f in folder.rglob("*") if f.is_file()
                   and "off" not in f.relative_to(folder).parts
                   and f.suffix not in (".dat", ".u8")) if folder.is_dir() else []
    texts = sorted({line for line in _fortune_lines(files)
                    if lo <= len(line.split()) <= hi and is_prose(line)
                    and all(c.isalpha() or c in PUNCTUATION for c in line)} - exclude)
    if not texts:
        raise ConfigError(f"no {language} sentences in {folder} "
                          f"(apt-get install fortunes-{language})")
    random.Random(seed).shuffle(texts)
    return _cycled(texts, n)


def _fortune_lines(files: list[Path]) -> Iterator[str]:
    """Each fortune of these files on one line, its "-- Author" attribution dropped."""
    for f in files:
        for chunk in f.read_text(errors="ignore").split("\n%\n"):
            yield " ".join(chunk.split()).split(" -- ")[0]


def check_language(language: str) -> None:
    if language not in LANGUAGES:
        raise ConfigError(f"unknown language {language!r} (choose from {', '.join(LANGUAGES)})")


def is_prose(line: str) -> bool:
    """A sentence, not a dangling attribution: it starts with a letter ("-- Gifts for
    Children" is the tail of a quotation, and reads as an option to command-line tools)."""
    return line[:1].isalpha()


def excluded_texts(folders: list[Path]) -> frozenset[str]:
    """The texts of earlier `synth` folders (their synth.json), so a training set can be
    generated that shares no sentence with an evaluation set."""
    texts: set[str] = set()
    for folder in folders:
        manifest = folder / "synth.json"
        try:
            items = json.loads(manifest.read_text())["items"]
            texts.update(str(item["text"]) for item in items)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"--exclude {folder}: no readable synth.json ({exc})") from exc
    return frozenset(texts)


def synthesize(text: str, voice: str, speed: int = 160, pitch: int = 50) -> np.ndarray:
    """espeak-ng -> 16 kHz float32."""
    import soundfile as sf

    # text on stdin: a sentence starting with "-" must not read as an option
    run = subprocess.run([espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch),
                          "--stdout", "--stdin"], input=text.encode(), capture_output=True)
    try:
        if run.returncode != 0:
            raise RuntimeError(run.stderr.decode(errors="replace").strip() or "no output")
        data, sr = sf.read(io.BytesIO(run.stdout), dtype="float32")
    except RuntimeError as exc:  # soundfile's read errors are RuntimeErrors too
        raise RenderError(f"espeak-ng ({voice}) failed on {text!r}: {exc}") from exc
    if not data.size:
        raise RenderError(f"espeak-ng ({voice}) wrote no audio for {text!r}")
    return resample(data, sr, SAMPLE_RATE)


def phonemes(text: str, voice: str) -> str:
    run = subprocess.run([espeak(), "-q", "-x", "-v", voice, "--stdin"], input=text,
                         capture_output=True, text=True)
    if run.returncode != 0 or not run.stdout.split():
        raise RenderError(f"espeak-ng ({voice}) gave no phonemes for {text!r}")
    # "(en)" / "(ru)" mark a switch of language for a foreign word: not phonemes
    return " ".join(re.sub(r"\([a-z-]+\)", "", run.stdout).split())


class Engine(Protocol):
    """A synthesizer: picks each utterance's voice settings, then renders text at 16 kHz."""

    name: str  # progress bar and manifest "synthesizer"
    words: tuple[int, int]  # text length (min, max words) that suits the engine
    manifest: dict  # extra manifest fields (licence, model, ...)

    def plan(self, index: int, rng: random.Random) -> dict:
        """Settings of utterance `index` ("voice" plus engine knobs), drawn in a fixed order."""
        ...

    def render(self, text: str, plan: dict) -> np.ndarray:
        """16 kHz mono float32 speech of `text` with `plan`'s settings."""
        ...

    def phoneme_voice(self, plan: dict) -> str:
        """The espeak-ng voice whose phonemes go in the `.phn` file."""
        ...


class EspeakEngine:
    """espeak-ng over random accents, variants, speeds and pitches."""

    name = "espeak-ng"
    words = (4, 30)

    def __init__(self, language: str = "en") -> None:
        self.language = language
        self.voices = VOICES if language == "en" else (language,)
        self.manifest = {"licence": "generated (espeak-ng GPL-3 program; output unrestricted)"}
        if language != "en":
            self.manifest["language"] = language

    def plan(self, index: int, rng: random.Random) -> dict:
        voice = f"{rng.choice(self.voices)}+{rng.choice(VARIANTS)}"
        return {"voice": voice, "speed": rng.randint(130, 190), "pitch": rng.randint(25, 75)}

    def render(self, text: str, plan: dict) -> np.ndarray:
        return synthesize(text, plan["voice"], plan["speed"], plan["pitch"])

    def phoneme_voice(self, plan: dict) -> str:
        return plan["voice"]


def make_engine(name: str, threads: int = 1, language: str = "en") -> Engine:
    """`espeak`, `kokoro` or `festival` (ConfigError saying what to install when missing);
    only espeak-ng speaks languages other than English."""
    check_language(language)
    if language != "en" and name != "espeak":
        raise ConfigError(f"the {name} voices speak English only; use --engine espeak "
                          f"for {language}")
    if name == "espeak":
        espeak()
        return EspeakEngine(language)
    if name == "kokoro":
        from .synth_kokoro import KokoroEngine

        return KokoroEngine(threads=threads)
    if name == "festival":
        from .synth_festival import FestivalEngine

        return FestivalEngine()
    raise ConfigError(f"unknown synthesizer {name!r} (choose from {', '.join(ENGINES)})")


def _cycled(texts: list[str], n: int) -> list[str]:
    return (list(texts) * (n // len(texts) + 1))[:n]


def build_synthetic(out: Path, count: int, seed: int = 0, engine: str | Engine = "espeak",
                    texts: list[str] | None = None, threads: int = 1,
                    exclude: frozenset[str] = frozenset(), language: str = "en") -> dict:
    """Write `count` utterances (resumable: finished ones are kept); returns the manifest.

    `texts` overrides the fortune sentences (cycled to `count`); the same seed gives the
    same texts, voices and settings. `exclude` leaves sentences out (`excluded_texts`).
    A sentence the engine cannot render is listed under "skipped" and the item takes the
    next sentence, so one odd line never stops a long run; many failures are an error.
    """
    from tqdm import tqdm

    eng = make_engine(engine, threads, language) if isinstance(engine, str) else engine
    espeak()  # the .phn files need it whatever the engine
    max_skips = max(20, count // 20)
    if texts is not None:
        if not texts:
            raise ConfigError("no texts to synthesize")
        pool = _cycled(texts, count + max_skips)
    else:  # a prefix of the longer list: sets made before substitution keep their texts
        pool = fortune_texts(count, seed, eng.words, exclude, spare=max_skips,
                             language=getattr(eng, "language", "en"))
    candidates = iter(pool)
    rng = random.Random(seed)
    items: list[dict] = []
    skipped: list[dict] = []
    for i in tqdm(range(count), desc=eng.name, unit="utt"):
        plan = eng.plan(i, rng)
        stem = out / plan["voice"].replace("+", "_") / f"{i:05d}"
        for text in candidates:
            if _finished(stem, text):
                break
            try:
                audio, phn = eng.render(text, plan), phonemes(text, eng.phoneme_voice(plan))
            except RenderError as exc:
                skipped.append({"id": i, "voice": plan["voice"], "text": text,
                                "reason": str(exc)})
                if len(skipped) > max_skips:
                    raise ConfigError(f"{eng.name} failed on {len(skipped)} sentences "
                                      f"(last: {exc}); is the engine working?") from exc
                continue
            stem.parent.mkdir(parents=True, exist_ok=True)
            stem.with_suffix(".txt").write_text(text + "\n")
            stem.with_suffix(".phn").write_text(phn + "\n")
            write_wav(stem.with_suffix(".wav"), audio)  # last: the wav marks a finished item
            break
        items.append({"id": i, **plan, "text": text})
    manifest = {"synthesizer": eng.name, "seed": seed, **eng.manifest, "items": items,
                "skipped": skipped}
    out.mkdir(parents=True, exist_ok=True)
    (out / "synth.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _finished(stem: Path, text: str) -> bool:
    """An earlier run wrote this item with this text (the wav is written last)."""
    if not (stem.with_suffix(".wav").exists() and stem.with_suffix(".phn").exists()):
        return False
    try:
        return stem.with_suffix(".txt").read_text().strip() == text
    except OSError:
        return False
