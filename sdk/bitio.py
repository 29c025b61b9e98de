"""Bit-level writer and reader for the v2 packet (docs/bitstream.md).

Why bits, not bytes: at 1 s batching every byte of a packet costs 8 bit/s, so the v2
header packs its fields MSB first with no alignment between them, and small numbers in
an exp-Golomb code (0 costs 1 bit, 1-2 cost 3, 25 costs 9). Only the packet as a whole is
padded to a byte.
"""

from __future__ import annotations

import numpy as np

from .errors import BitstreamError


class BitWriter:
    """Collects bits MSB first; `to_bytes` pads with zeros to a whole byte."""

    def __init__(self) -> None:
        self.bits: list[int] = []

    def __len__(self) -> int:
        return len(self.bits)

    def write(self, value: int, width: int) -> None:
        """`value` as an unsigned `width`-bit field."""
        if value < 0 or value >> width:
            raise BitstreamError(f"value {value} does not fit {width} bits")
        self.bits.extend((value >> s) & 1 for s in range(width - 1, -1, -1))

    def flag(self, on: bool) -> None:
        self.bits.append(int(bool(on)))

    def gamma(self, value: int) -> None:
        """Exp-Golomb (order 0) code of `value` >= 0: 2*floor(log2(value+1))+1 bits."""
        if value < 0:
            raise BitstreamError(f"exp-Golomb code of a negative value {value}")
        n = value + 1
        self.bits.extend([0] * (n.bit_length() - 1))
        self.write(n, n.bit_length())

    def golomb(self, value: int, k: int) -> None:
        """Exp-Golomb code of order k: value >> k in `gamma`, then its low k bits."""
        self.gamma(value >> k)
        self.write(value & ((1 << k) - 1), k)

    def extend(self, bits: list[int]) -> None:
        self.bits.extend(bits)

    def to_bytes(self) -> bytes:
        return np.packbits(np.asarray(self.bits, np.uint8)).tobytes()


class BitReader:
    """Reads bits of `data` from bit `pos`; reading past the end is a truncation error,
    except through `bit_or_zero` (the arithmetic decoder's look-ahead)."""

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.bits = np.unpackbits(np.frombuffer(bytes(data), np.uint8)).tolist()
        self.pos = pos

    @property
    def size(self) -> int:
        return len(self.bits)

    def read(self, width: int, what: str = "header") -> int:
        end = self.pos + width
        if end > len(self.bits):
            raise BitstreamError(f"packet truncated in its {what}")
        value = 0
        for b in self.bits[self.pos : end]:
            value = (value << 1) | b
        self.pos = end
        return value

    def flag(self, what: str = "header") -> bool:
        return bool(self.read(1, what))

    def gamma(self, what: str = "header", limit: int = 32) -> int:
        """Inverse of `BitWriter.gamma`; more than `limit` leading zeros is corruption."""
        zeros = 0
        while not self.read(1, what):
            zeros += 1
            if zeros > limit:
                raise BitstreamError(f"packet corrupt in its {what} (bad number code)")
        return ((1 << zeros) | self.read(zeros, what)) - 1

    def golomb(self, k: int, what: str = "header", limit: int = 32) -> int:
        """Inverse of `BitWriter.golomb`."""
        high = self.gamma(what, limit)
        return (high << k) | self.read(k, what)

    def bit_or_zero(self, pos: int) -> int:
        return self.bits[pos] if pos < len(self.bits) else 0
