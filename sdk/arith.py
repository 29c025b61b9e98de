"""A binary arithmetic coder over integer frequency tables.

Integer-only (32-bit state in Python ints), so an ARM edge device and an x86 receiver
produce and read exactly the same bits. Symbols are coded against cumulative counts that
sum to `total` (at most 2**16 here, far below the 2**30 the 32-bit state allows), and
every symbol must have a count of at least 1.

The stream ends with the two bits that pin the final interval: after them the decoder
may read anything (zeros past the end, or the next packet's bytes) and still decodes the
same symbols, because every continuation of those bits lies inside the final interval.
The decoder mirrors the encoder's renormalisations, so once it has read the last symbol
it knows exactly how many bits the encoder wrote (`ArithmeticDecoder.end`): a v2 packet
needs no length field for its code (docs/bitstream.md). The v1 packet's byte form
(`finish`) drops trailing zero bytes instead and carries the length.
"""

from __future__ import annotations

from bisect import bisect_right

import numpy as np

from .errors import BitstreamError

_BITS = 32
_FULL = (1 << _BITS) - 1
_HALF = 1 << (_BITS - 1)
_QUARTER = 1 << (_BITS - 2)


class ArithmeticEncoder:
    """Code symbols one by one with `encode`, then take the bytes with `finish`."""

    def __init__(self) -> None:
        self._low, self._high, self._pending = 0, _FULL, 0
        self._bits: list[int] = []

    def encode(self, cum_low: int, cum_high: int, total: int) -> None:
        """Narrow the interval to the symbol whose counts span [cum_low, cum_high)."""
        span = self._high - self._low + 1
        self._high = self._low + span * cum_high // total - 1
        self._low = self._low + span * cum_low // total
        while True:
            if self._high < _HALF:
                self._emit(0)
            elif self._low >= _HALF:
                self._emit(1)
                self._low -= _HALF
                self._high -= _HALF
            elif self._low >= _QUARTER and self._high < _HALF + _QUARTER:
                self._pending += 1
                self._low -= _QUARTER
                self._high -= _QUARTER
            else:
                return
            self._low <<= 1
            self._high = (self._high << 1) | 1

    def _emit(self, bit: int) -> None:
        self._bits.append(bit)
        self._bits.extend([1 - bit] * self._pending)
        self._pending = 0

    def finish_bits(self) -> list[int]:
        """End the code: two bits (plus pending ones) pin the final interval."""
        self._pending += 1
        self._emit(0 if self._low < _QUARTER else 1)
        return self._bits

    def finish(self) -> bytes:
        """Byte form (v1 packets): trailing zero bytes dropped, the decoder reads zeros."""
        return np.packbits(np.asarray(self.finish_bits(), np.uint8)).tobytes().rstrip(b"\0")


class ArithmeticDecoder:
    """Read back what `ArithmeticEncoder` wrote, given the same tables in the same order."""

    def __init__(self, data: bytes | list[int], start: int = 0) -> None:
        """`data`: bytes, or a list of bits (0/1) read from bit `start` on."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            data = np.unpackbits(np.frombuffer(bytes(data), np.uint8)).tolist()
        self._bits = data
        self._start = start
        self._pos = start
        self._low, self._high, self._value = 0, _FULL, 0
        for _ in range(_BITS):
            self._value = (self._value << 1) | self._next_bit()

    @property
    def end(self) -> int:
        """Bit position just past what the encoder wrote for the symbols decoded so far
        (once the last one is decoded: the end of the code)."""
        return self._pos - _BITS + 2

    def _next_bit(self) -> int:
        pos = self._pos
        self._pos += 1
        return int(self._bits[pos]) if pos < len(self._bits) else 0

    def decode(self, cumulative: list[int]) -> int:
        """The next symbol; `cumulative` = [0, c0, c0+c1, ..., total] of its table."""
        total = cumulative[-1]
        span = self._high - self._low + 1
        target = ((self._value - self._low + 1) * total - 1) // span
        sym = bisect_right(cumulative, target) - 1
        if not 0 <= sym < len(cumulative) - 1:
            raise BitstreamError("entropy-coded payload is corrupt")
        self._high = self._low + span * cumulative[sym + 1] // total - 1
        self._low = self._low + span * cumulative[sym] // total
        while True:
            if self._high < _HALF:
                pass
            elif self._low >= _HALF:
                self._low -= _HALF
                self._high -= _HALF
                self._value -= _HALF
            elif self._low >= _QUARTER and self._high < _HALF + _QUARTER:
                self._low -= _QUARTER
                self._high -= _QUARTER
                self._value -= _QUARTER
            else:
                return sym
            self._low <<= 1
            self._high = (self._high << 1) | 1
            self._value = (self._value << 1) | self._next_bit()
