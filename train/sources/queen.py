"""Flight of the Amazon Queen's acted dialogue: ~4.6 h, 11 kHz MP3, many voices.

The CD version ships as one resource archive, `queen.1c` (Debian `flight-of-the-amazon-
queen`, freeware: redistribution and modification allowed). Its table (after a 15-byte
`QTBL` header) lists 21-byte entries: a 12-byte NUL-padded name, a bundle byte, a
big-endian offset and size. Speech entries are `*.SB`, each an MP3 stream. Names say who
speaks: `..J1.SB` lines and `JO*` comments are Joe (the hero, male); `..P1.SB` lines are
the other party of the dialogue file named by the first two characters, so each dialogue
file's P lines are one speaker. Cut-scene lines (several speakers, unlabelled) are left
out. Narrowband and MP3-coloured: training material, never a wideband quality set.
"""

from __future__ import annotations

import io
import re
import struct
from collections.abc import Iterator
from pathlib import Path

from gacflow.errors import ConfigError

from . import Speaker, Utterance
from .debs import unpacked

PACKAGE = "flight-of-the-amazon-queen"
LICENCE = "freeware, redistribution and modification allowed (Flight of the Amazon Queen)"
TABLE_START = 15
ENTRY = struct.Struct(">12sBII")  # name, bundle, offset, size
LINE = re.compile(r"^(..)....([JP])\d\.SB$")
MIN_LINES = 25  # a dialogue partner with fewer lines is not worth a speaker


def archive(cache: Path) -> Path:
    path = unpacked(PACKAGE, cache) / "usr/share/scummvm/flight-of-the-amazon-queen/queen.1c"
    if not path.is_file():
        raise ConfigError(f"{path}: not found in {PACKAGE}")
    return path


def entries(data: bytes) -> list[tuple[str, int, int]]:
    """(name, offset, size) of every table entry."""
    if data[:4] != b"QTBL":
        raise ConfigError("queen.1c: not a Queen resource table (no QTBL header)")
    out, pos = [], TABLE_START
    while pos + ENTRY.size <= len(data):
        raw, _bundle, offset, size = ENTRY.unpack_from(data, pos)
        name = raw.split(b"\0")[0]
        if not name or not all(32 < c < 127 for c in name):
            break
        out.append((name.decode(), offset, size))
        pos += ENTRY.size
    return out


def speaker_of(name: str) -> str | None:
    if name.startswith("JO") and name.endswith(".SB"):
        return "queen_joe"
    m = LINE.match(name)
    if not m:
        return None
    return "queen_joe" if m.group(2) == "J" else f"queen_npc{m.group(1).lower()}"


def speakers(cache: Path) -> list[Speaker]:
    path = archive(cache)
    by_speaker: dict[str, list[tuple[str, int, int]]] = {}
    for e in entries(path.read_bytes()):
        who = speaker_of(e[0])
        if who:
            by_speaker.setdefault(who, []).append(e)
    return [Speaker(who, "queen", LICENCE, "en", "m" if who == "queen_joe" else "?",
                    utterances=lambda lines=lines: _lines(path, lines))
            for who, lines in sorted(by_speaker.items()) if len(lines) >= MIN_LINES]


def _lines(path: Path, lines: list[tuple[str, int, int]]) -> Iterator[Utterance]:
    import soundfile as sf

    with path.open("rb") as f:
        for name, offset, size in lines:
            f.seek(offset)
            try:
                wav, sr = sf.read(io.BytesIO(f.read(size)), dtype="float32", always_2d=True)
            except RuntimeError:
                continue
            yield Utterance(name.split(".")[0], wav.mean(axis=1), sr)
