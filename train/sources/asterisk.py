"""Asterisk's recorded prompt voices: four 16 kHz G.722 speakers and three 8 kHz sets.

The 8 kHz sets are real telephone-band recordings (es-co and fr-armelle are raw GSM 06.10,
decoded with sox; it-menardi is 8 kHz WAV): the narrowband microphones devices send.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gacflow.errors import ConfigError

from . import Speaker, Utterance

ROOT = Path("/usr/share/asterisk/sounds")
LICENCE = "CC-BY-SA 3.0 (Asterisk prompts, Digium/Sangoma and the voices' authors)"
RECORDED = {  # folder -> (package, language, sex)
    "es_MX_f_Allison": ("asterisk-core-sounds-es-g722", "es", "f"),
    "fr_CA_f_June": ("asterisk-core-sounds-fr-g722", "fr", "f"),
    "it_IT_m_Carlo": ("asterisk-core-sounds-it-g722", "it", "m"),
    "ru_RU_f_IvrvoiceRU": ("asterisk-core-sounds-ru-g722", "ru", "f"),
}
PROMPTS = {  # speaker id -> (package, folder under ROOT, language, sex)
    "es_CO_prompt": ("asterisk-prompt-es-co", "es", "es", "?"),
    "fr_FR_f_Armelle": ("asterisk-prompt-fr-armelle", "fr", "fr", "f"),
    "it_IT_f_Menardi": ("asterisk-prompt-it-menardi-wav", "it_IT_f_Menardi", "it", "f"),
}


def recorded_speakers() -> list[Speaker]:
    return [Speaker(v, "asterisk", LICENCE, lang, sex,
                    utterances=lambda v=v, pkg=pkg: _g722_files(v, pkg))
            for v, (pkg, lang, sex) in RECORDED.items()]


def prompt_speakers() -> list[Speaker]:
    return [Speaker(sid, "asterisk8k", LICENCE, lang, sex,
                    utterances=lambda folder=folder, pkg=pkg: _prompt_files(folder, pkg))
            for sid, (pkg, folder, lang, sex) in PROMPTS.items()]


def _need(folder: Path, package: str) -> None:
    if not folder.is_dir():
        raise ConfigError(f"{folder} is missing: apt-get install {package}")


def _g722_files(voice: str, package: str) -> Iterator[Utterance]:
    from gacflow.train.corpus import decode_g722

    _need(ROOT / voice, package)
    for p in sorted((ROOT / voice).rglob("*.g722")):
        yield Utterance(_stem(ROOT / voice, p), decode_g722(p), 16000)


def _prompt_files(folder: str, package: str) -> Iterator[Utterance]:
    """A prompt set's files: the voice folder, plus digits/letters/... in its language."""
    import soundfile as sf

    _need(ROOT / folder, package)
    roots = [ROOT / folder] + sorted(p for p in ROOT.glob(f"*/{folder}") if p.is_dir())
    for root in roots:
        for p in sorted(root.rglob("*")):
            if p.suffix == ".gsm":
                wav = _gsm(p)
            elif p.suffix == ".wav":
                wav, sr = sf.read(p, dtype="float32", always_2d=False)
                if sr != 8000:
                    continue
            else:
                continue
            yield Utterance(_stem(ROOT, p), np.asarray(wav, np.float32), 8000)


def _gsm(path: Path) -> np.ndarray:
    sox = shutil.which("sox")
    if not sox:
        raise ConfigError("sox is needed to decode the GSM prompt sets (apt-get install sox)")
    out = subprocess.run([sox, "-t", "gsm", str(path), "-t", "raw", "-e", "signed", "-b",
                          "16", "-c", "1", "-r", "8000", "-"], capture_output=True, check=True)
    return np.frombuffer(out.stdout, "<i2").astype(np.float32) / 32768.0


def _stem(root: Path, p: Path) -> str:
    return "_".join(p.relative_to(root).with_suffix("").parts)
