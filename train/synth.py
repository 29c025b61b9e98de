"""Synthetic English speech with known text and phonemes (espeak-ng), for training and WER.

Robotic but instant, exact phoneme transcripts, and many voice variants (male and female)
to widen the speaker range that three recorded voices cannot give. Writes
`<out>/<voice>/<id>.wav` (16 kHz) with `<id>.txt` (text) and `<id>.phn` (espeak phonemes),
so the folder works both as training data and as an eval set with transcripts.
Kokoro and festival voices (DATA.md) plug in as further synthesizers with the same layout.
"""

from __future__ import annotations

import io
import json
import random
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from gacflow.audio import resample, write_wav
from gacflow.errors import ConfigError
from gacflow.spec import SAMPLE_RATE

FORTUNES = Path("/usr/share/games/fortunes")
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4")
FALLBACK_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "A small device on the roof sends a few hundred bits every second.",
    "The weather station reports rain in the north and wind along the coast.",
    "Turn left at the second light and the office is on your right.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese.",
)


def espeak() -> str:
    exe = shutil.which("espeak-ng")
    if not exe:
        raise ConfigError("espeak-ng is not installed (apt-get install espeak-ng)")
    return exe


def fortune_texts(limit: int, seed: int) -> list[str]:
    """Sentences of 4-30 words from Debian's fortunes, else a small built-in list."""
    texts = []
    for f in sorted(FORTUNES.glob("*")) if FORTUNES.is_dir() else []:
        if f.suffix or not f.is_file():
            continue
        for chunk in f.read_text(errors="ignore").split("\n%\n"):
            line = " ".join(chunk.split())
            if re.fullmatch(r"[A-Za-z ,.;:'?!-]+", line) and 4 <= len(line.split()) <= 30:
                texts.append(line)
    if not texts:
        texts = list(FALLBACK_TEXTS)
    random.Random(seed).shuffle(texts)
    return (texts * (limit // len(texts) + 1))[:limit]


def synthesize(text: str, voice: str, speed: int = 160, pitch: int = 50) -> np.ndarray:
    """espeak-ng -> 16 kHz float32."""
    import soundfile as sf

    wav = subprocess.run([espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch),
                          "--stdout", text], capture_output=True, check=True).stdout
    data, sr = sf.read(io.BytesIO(wav), dtype="float32")
    return resample(data, sr, SAMPLE_RATE)


def phonemes(text: str, voice: str) -> str:
    out = subprocess.run([espeak(), "-q", "-x", "-v", voice, text],
                         capture_output=True, text=True, check=True).stdout
    return " ".join(out.split())


def build_synthetic(out: Path, count: int, seed: int = 0) -> dict:
    """Write `count` utterances over random voice/variant/speed/pitch; returns the manifest."""
    from tqdm import tqdm

    rng = random.Random(seed)
    items = []
    for i, text in enumerate(tqdm(fortune_texts(count, seed), desc="espeak-ng", unit="utt")):
        voice = f"{rng.choice(VOICES)}+{rng.choice(VARIANTS)}"
        speed, pitch = rng.randint(130, 190), rng.randint(25, 75)
        folder = out / voice.replace("+", "_")
        stem = folder / f"{i:05d}"
        if not (stem.with_suffix(".wav")).exists():  # resumable
            write_wav(stem.with_suffix(".wav"), synthesize(text, voice, speed, pitch))
            stem.with_suffix(".txt").write_text(text + "\n")
            stem.with_suffix(".phn").write_text(phonemes(text, voice) + "\n")
        items.append({"id": i, "voice": voice, "speed": speed, "pitch": pitch, "text": text})
    manifest = {"synthesizer": "espeak-ng", "seed": seed, "licence": "generated (espeak-ng GPL-3 "
                "program; output unrestricted)", "items": items}
    (out / "synth.json").write_text(json.dumps(manifest, indent=1))
    return manifest
