"""Constants both sides of the link must agree on.

This module is the single source of truth inside the code; a bundle's manifest
repeats the values it was trained with and `CodecSpec.from_manifest` checks that
they match what this sdk can run. Change a value here and every bundle built
before it is refused, by design.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import numpy as np

SAMPLE_RATE = 16_000  # Hz, mono, in and out
HOP = 160  # samples per feature (mel) frame: 10 ms
WIN = 400  # analysis window (25 ms), causal: a frame only sees past samples
N_FFT = 512
N_MELS = 80
MEL_FMIN = 0.0
MEL_FMAX = 8_000.0
MELS_PER_TOKEN = 4  # 4 x 10 ms mel frames per 40 ms token frame
FRAME_SAMPLES = HOP * MELS_PER_TOKEN  # 640 samples per token frame
FRAME_RATE = SAMPLE_RATE // FRAME_SAMPLES  # 25 token frames per second
LOG_FLOOR = 1e-5
SILENT = -1  # token value of a DTX frame (marked in the packet, nothing sent)


@dataclass(frozen=True)
class Mode:
    """One operating point: which FSQ groups a token carries and how wide it is."""

    name: str  # "275" or "175": the payload budget in bit/s
    levels: tuple[int, ...]  # FSQ levels of the dimensions this mode sends

    @property
    def codebook_size(self) -> int:
        size = 1
        for n in self.levels:
            size *= n
        return size

    @property
    def bits(self) -> int:
        """Bits per token frame on the wire (fixed width, bit-packed)."""
        return max(1, (self.codebook_size - 1).bit_length())

    @property
    def token_bitrate(self) -> float:
        return self.bits * FRAME_RATE


@dataclass(frozen=True)
class TokenLayout:
    """Nested FSQ layout: the 175 mode sends the base dims, 275 adds enhancement dims.

    Token id = mixed-radix number of the FSQ level indices, base dims most significant,
    so a 275-token's high bits are exactly its 175-token.
    """

    base_levels: tuple[int, ...] = (4, 4, 4)
    enh_levels: tuple[int, ...] = (4, 4)
    modes: dict[str, Mode] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.modes:
            object.__setattr__(
                self,
                "modes",
                {
                    "275": Mode("275", self.base_levels + self.enh_levels),
                    "175": Mode("175", self.base_levels),
                },
            )

    @property
    def all_levels(self) -> tuple[int, ...]:
        return self.base_levels + self.enh_levels

    def base_tokens(self, ids: np.ndarray) -> np.ndarray:
        """The 175-mode token ids inside 275-mode ids: their top bits (base digits most
        significant). Floor division keeps SILENT (-1) as it is."""
        return np.asarray(ids, dtype=np.int64) // prod(self.enh_levels)

    def mode(self, name: str | int) -> Mode:
        key = str(name)
        if key not in self.modes:
            from .errors import ConfigError

            raise ConfigError(f"unknown mode {name!r}; choose one of {sorted(self.modes)}")
        return self.modes[key]


# Mode ids on the wire (2 bits in the packet header).
MODE_IDS = {"275": 0, "175": 1}
MODE_NAMES = {v: k for k, v in MODE_IDS.items()}
DEFAULT_MODE = "275"
