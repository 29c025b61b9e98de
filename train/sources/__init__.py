"""Voice sources for the many-speaker corpus: each stages its speakers as WAV folders.

`gacflow-train voices --out data/voices` runs every source in `SOURCES` and writes
`<out>/<speaker>/*.wav` (each source's native rate: 8 kHz prompts stay narrowband) plus
`<out>/speakers.json`, the speaker manifest: source, licence, language, sex (and how it
is known), band and duration of every speaker. `gacflow-train corpus --voices <out>` then
builds the training shards from it, holding out whole speakers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from gacflow.errors import ConfigError
from gacflow.fileio import atomic_path


@dataclass
class Utterance:
    name: str  # file stem, unique within the speaker
    wav: np.ndarray  # float32 mono
    sample_rate: int
    text: str | None = None


@dataclass
class Speaker:
    """One voice of a source, and what the manifest records about it."""

    id: str  # folder name under the staging root, unique over all sources
    source: str
    licence: str
    language: str
    sex: str = "?"  # "f", "m" or "?" (then estimated from F0 at staging)
    sex_from: str = "source"  # "source" (package or file naming) or "median F0"
    kind: str = "recorded"  # recorded | synthetic
    utterances: Callable[[], Iterator[Utterance]] | None = field(default=None, repr=False)


SOURCES = ("asterisk", "asterisk8k", "tuxpaint", "queen", "festvox")


def speakers_of(name: str, cache: Path) -> list[Speaker]:
    """The speakers one source offers (ConfigError naming the package when missing)."""
    if name in ("asterisk", "asterisk8k"):
        from .asterisk import prompt_speakers, recorded_speakers

        return recorded_speakers() if name == "asterisk" else prompt_speakers()
    if name == "tuxpaint":
        from .tuxpaint import speakers

        return speakers(cache)
    if name == "queen":
        from .queen import speakers

        return speakers(cache)
    if name == "festvox":
        from .festvox import speakers

        return speakers()
    raise ConfigError(f"unknown voice source {name!r}; known: {', '.join(SOURCES)}")


def load_manifest(root: Path) -> dict:
    path = Path(root) / "speakers.json"
    if not path.is_file():
        raise ConfigError(f"{root}: no speakers.json (run `gacflow-train voices --out {root}`)")
    return json.loads(path.read_text())


def save_manifest(root: Path, manifest: dict) -> None:
    with atomic_path(Path(root) / "speakers.json") as tmp:
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def entry(speaker: Speaker, files: int, seconds: float, rate: int, sex: str,
          sex_from: str) -> dict:
    d = {k: v for k, v in asdict(speaker).items() if k not in ("utterances", "id")}
    d.update(files=files, seconds=round(seconds, 1), sample_rate=rate,
             band="narrow" if rate <= 11025 else "wide", sex=sex, sex_from=sex_from)
    return d
