"""`Tokens`: what the encoder produces and the decoder consumes, independent of transport."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bitstream import SILENT
from .spec import FRAME_RATE


@dataclass
class Tokens:
    """One token id per 25 Hz frame; SILENT (-1) marks a DTX frame (nothing sent)."""

    ids: np.ndarray
    mode: str
    codec_id: str
    num_samples: int | None = None  # original length, when known, to trim the decode
    voice: bytes | None = None  # packed voice code of the stream (sdk/voice.py), if sent

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids, dtype=np.int64).reshape(-1)

    def __len__(self) -> int:
        return int(len(self.ids))

    @property
    def duration(self) -> float:
        return len(self) / FRAME_RATE

    def as_lists(self) -> list[int | None]:
        """Token ids for JSON: None for DTX frames."""
        return [None if t == SILENT else int(t) for t in self.ids]
