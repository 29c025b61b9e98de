"""The .gac file: a small header followed by concatenated packets.

Header (big-endian): b"GAC" | version:u8 | sample rate:u16 (Hz) | mode:u8 |
frame count:u32 | sample count:u32 | codec id length:u8 | codec id (ASCII).
Packets of at most `FILE_PACKET_FRAMES` frames follow (usually one: header bits count),
entropy-coded when the bundle has an entropy model (reading them then needs that bundle).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bitstream import MAX_FRAMES, Packet, encode_packet, read_packet
from .entropy import EntropyModel
from .errors import BitstreamError
from .fileio import atomic_write_bytes
from .spec import FRAME_RATE, MODE_IDS, MODE_NAMES, SAMPLE_RATE
from .tokens import Tokens

MAGIC = b"GAC"
VERSION = 1
FILE_PACKET_FRAMES = MAX_FRAMES  # one packet up to 43 min: the fewest header bits
_FIXED = struct.Struct(">3sBHBIIB")


@dataclass
class GacInfo:
    """What `gacflow info` reports about a .gac file."""

    codec_id: str
    mode: str
    sample_rate: int
    frames: int
    num_samples: int
    bytes: int
    packets: int

    @property
    def duration(self) -> float:
        return self.frames / FRAME_RATE

    @property
    def bitrate(self) -> float:
        """Bit/s of the whole file, headers included."""
        return self.bytes * 8 / self.duration if self.frames else 0.0


def dumps(tokens: Tokens, width: int, entropy: EntropyModel | None = None) -> bytes:
    """Serialise tokens as a .gac byte string (entropy-coded with `entropy`, if given)."""
    cid = tokens.codec_id.encode("ascii")
    if len(cid) > 255:
        raise BitstreamError("codec id longer than 255 bytes")
    n = len(tokens)
    head = _FIXED.pack(
        MAGIC, VERSION, SAMPLE_RATE, MODE_IDS[tokens.mode], n, tokens.num_samples or 0, len(cid)
    )
    out = [head, cid]
    starts = range(0, max(n, 1), FILE_PACKET_FRAMES)
    for seq, start in enumerate(starts):
        chunk = tokens.ids[start : start + FILE_PACKET_FRAMES]
        last = start + FILE_PACKET_FRAMES >= n
        voice = tokens.voice if seq == 0 else None
        out.append(encode_packet(
            Packet(0, seq, start, chunk, width=width, mode=tokens.mode, eos=last, voice=voice),
            entropy,
        ))
    return b"".join(out)


def loads(data: bytes, entropy: EntropyModel | None = None) -> tuple[Tokens, GacInfo]:
    """Parse a .gac byte string; any malformation raises BitstreamError. `entropy`: the
    bundle's model, needed when the packets are coded."""
    if len(data) < _FIXED.size or data[:3] != MAGIC:
        raise BitstreamError("not a .gac file (bad magic)")
    magic, version, sr, mode_id, n, n_samples, cid_len = _FIXED.unpack(data[: _FIXED.size])
    if version != VERSION:
        raise BitstreamError(f"unsupported .gac version {version} (this build reads {VERSION})")
    if mode_id not in MODE_NAMES:
        raise BitstreamError(f"unknown mode id {mode_id} in .gac header")
    if sr != SAMPLE_RATE:
        raise BitstreamError(f".gac sample rate {sr} Hz, expected {SAMPLE_RATE}")
    pos = _FIXED.size + cid_len
    if len(data) < pos:
        raise BitstreamError(".gac file truncated in its header")
    try:
        cid = data[_FIXED.size : pos].decode("ascii")
    except UnicodeDecodeError as exc:
        raise BitstreamError(".gac codec id is not ASCII") from exc
    ids = np.empty(n, dtype=np.int64)
    filled, packets, voice = 0, 0, None
    while pos < len(data):
        p, pos = read_packet(data, pos, entropy)
        if p.first_frame != filled or filled + p.frame_count > n:
            raise BitstreamError(".gac packets out of order or beyond the announced frame count")
        if p.mode != MODE_NAMES[mode_id]:
            raise BitstreamError(".gac packet mode differs from the file header")
        ids[filled : filled + p.frame_count] = p.tokens
        voice = p.voice if p.voice is not None else voice  # the latest code wins
        filled += p.frame_count
        packets += 1
    if filled != n:
        raise BitstreamError(f".gac file truncated: {filled} of {n} frames present")
    tokens = Tokens(ids, MODE_NAMES[mode_id], cid, n_samples or None, voice)
    return tokens, GacInfo(cid, tokens.mode, sr, n, n_samples, len(data), packets)


def write(path: str | Path, tokens: Tokens, width: int,
          entropy: EntropyModel | None = None) -> int:
    """Write a .gac file atomically; returns its size in bytes."""
    data = dumps(tokens, width, entropy)
    atomic_write_bytes(path, data)
    return len(data)


def read(path: str | Path, entropy: EntropyModel | None = None) -> tuple[Tokens, GacInfo]:
    """Read and validate a .gac file."""
    from .errors import GacflowError

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise GacflowError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return loads(data, entropy)
