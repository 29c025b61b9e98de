"""Tux Paint's spoken stamp descriptions: ~13 voices, one per language, 44.1 kHz, clean.

`tuxpaint-stamps-default` (GPL-2+) is fetched with `apt-get download` and unpacked into the
cache folder (no dependencies pulled). A language's `*_desc_<lang>.ogg` clips are one
speaker (English: `*_desc.ogg`); sex is estimated from median F0 at staging.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from . import Speaker, Utterance
from .debs import unpacked

PACKAGE = "tuxpaint-stamps-default"
LICENCE = "GPL-2+ (Tux Paint stamps, New Breed Software and contributors)"
MIN_FILES = 40  # languages with fewer clips than this are left out (a handful of words)
PATTERN = re.compile(r"_desc(?:_([a-z]{2}))?\.ogg$")


def speakers(cache: Path) -> list[Speaker]:
    root = unpacked(PACKAGE, cache)
    by_lang: dict[str, list[Path]] = {}
    for p in sorted(root.rglob("*.ogg")):
        m = PATTERN.search(p.name)
        if m:
            by_lang.setdefault(m.group(1) or "en", []).append(p)
    return [Speaker(f"tuxpaint_{lang}", "tuxpaint", LICENCE, lang,
                    utterances=lambda files=files: _files(files))
            for lang, files in sorted(by_lang.items()) if len(files) >= MIN_FILES]


def _files(files: list[Path]) -> Iterator[Utterance]:
    import soundfile as sf

    for p in files:
        try:
            wav, sr = sf.read(p, dtype="float32", always_2d=True)
        except RuntimeError:
            continue
        yield Utterance(p.stem, wav.mean(axis=1), sr)
