"""Debian's festival voices: a dozen real speakers' diphone/HTS/unit-selection voices.

Each voice reads English sentences from Debian's fortunes through its own letter-to-sound
rules (foreign-accented, but the timbre is the speaker's), at random speaking rates.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from . import Speaker, Utterance

LICENCE = "generated with festival and Debian festvox voices (free to use and redistribute)"
PER_VOICE = 30  # sentences per voice (~1.5 min each; festival renders ~1.3x real time)


def speakers() -> list[Speaker]:
    from gacflow.train.synth_festival import ALL_VOICES

    return [Speaker(f"festvox_{name}", "festvox", LICENCE, "en", sex, kind="synthetic",
                    utterances=lambda name=name, i=i: _sentences(name, i))
            for i, (name, (_f, _pkg, sex)) in enumerate(sorted(ALL_VOICES.items()))]


def _sentences(voice: str, seed: int) -> Iterator[Utterance]:
    from gacflow.train.synth import RenderError, fortune_texts
    from gacflow.train.synth_festival import STRETCH, FestivalEngine

    engine = FestivalEngine()
    rng = random.Random(seed)
    texts = fortune_texts(PER_VOICE, seed=1000 + seed, words=(6, 24))
    for i, text in enumerate(texts):
        try:
            wav = engine.render(text, {"voice": voice, "stretch": rng.uniform(*STRETCH)})
        except RenderError:
            continue
        yield Utterance(f"{voice}_{i:04d}", wav, 16000, text)
