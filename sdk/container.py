"""The .gac file: a 4-byte header followed by concatenated packets (sdk/bitstream.py).

Version 2 (docs/bitstream.md has the budget): byte 0 is 0xA0 | version (magic nibble
0xA, version 2); bytes 1-3 hold 24 bits: a 13-bit reference to the codec (the top bits
of SHA-256 of its id: the receiver resolves it against the bundle it holds) | length
known:1 | padding samples of the last frame:10 (original length = frames x 640 -
padding). One v2 packet follows (stream id 0, sequence 0, first frame 0, eos set),
entropy-coded with the bundle's token model when that is shorter; it carries the frame
count, the mode, the voice code and the check byte. Version 1 files (b"GAC", a 16-byte
header with the full codec id) still decode.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .bitstream import MAX_FRAMES, Packet, encode_packet, read_packet
from .errors import BitstreamError
from .fileio import atomic_write_bytes
from .spec import FRAME_RATE, FRAME_SAMPLES, MODE_IDS, MODE_NAMES, SAMPLE_RATE
from .tokens import Tokens

MAGIC = 0xA0  # high nibble of byte 0
VERSION = 2
READS = (1, 2)
HEADER_BYTES = 4
REF_BITS = 13
LEGACY_MAGIC = b"GAC"
LEGACY_VERSION = 1
FILE_PACKET_FRAMES = MAX_FRAMES  # one packet up to 43 min: the fewest header bits
_FIXED = struct.Struct(">3sBHBIIB")  # version 1 header


def codec_ref(codec_id: str) -> int:
    """The 13-bit reference a v2 file stores instead of the codec id."""
    return int.from_bytes(hashlib.sha256(codec_id.encode()).digest()[:2], "big") >> (
        16 - REF_BITS)


def unknown_codec(ref: int) -> str:
    """What a file's codec id reads as when the reader does not hold that codec."""
    return f"<unknown codec, reference {ref:04x}>"


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


def dumps(tokens: Tokens, width: int, entropy=None) -> bytes:
    """Serialise tokens as a v2 .gac byte string (entropy-coded with `entropy`, if given)."""
    n = len(tokens)
    pad = 0
    if tokens.num_samples is not None:
        pad = n * FRAME_SAMPLES - int(tokens.num_samples)
        if not 0 <= pad < FRAME_SAMPLES:
            raise BitstreamError(f"{tokens.num_samples} samples do not fit {n} frames")
    known = tokens.num_samples is not None
    fields = (codec_ref(tokens.codec_id) << 11) | (int(known) << 10) | pad
    out = [bytes([MAGIC | VERSION]) + fields.to_bytes(3, "big")]
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


def dumps_v1(tokens: Tokens, width: int, entropy=None) -> bytes:
    """The version 1 file (tests of old-file reading; tools that need the old layout)."""
    cid = tokens.codec_id.encode("ascii")
    if len(cid) > 255:
        raise BitstreamError("codec id longer than 255 bytes")
    n = len(tokens)
    head = _FIXED.pack(LEGACY_MAGIC, LEGACY_VERSION, SAMPLE_RATE, MODE_IDS[tokens.mode], n,
                       tokens.num_samples or 0, len(cid))
    out = [head, cid]
    for seq, start in enumerate(range(0, max(n, 1), FILE_PACKET_FRAMES)):
        chunk = tokens.ids[start : start + FILE_PACKET_FRAMES]
        out.append(encode_packet(
            Packet(0, seq, start, chunk, width=width, mode=tokens.mode,
                   eos=start + FILE_PACKET_FRAMES >= n, voice=tokens.voice if seq == 0 else None),
            entropy, version=1))
    return b"".join(out)


def loads(data: bytes, entropy=None, codec_id: str | None = None) -> tuple[Tokens, GacInfo]:
    """Parse a .gac byte string; any malformation raises BitstreamError. `entropy`: the
    bundle's model, needed when the packets are coded; `codec_id`: the codec the reader
    holds, which a v2 file's 13-bit reference is resolved against."""
    if data[:3] == LEGACY_MAGIC:
        return _loads_v1(data, entropy)
    if len(data) < 1 or data[0] & 0xF0 != MAGIC:
        raise BitstreamError("not a .gac file (bad magic)")
    version = data[0] & 0x0F
    if version != VERSION:
        raise BitstreamError(f"unsupported .gac version {version} (this build reads versions "
                             f"{' and '.join(map(str, READS))}; a newer gacflow wrote it)")
    if len(data) < HEADER_BYTES:
        raise BitstreamError(".gac file truncated in its header")
    fields = int.from_bytes(data[1:HEADER_BYTES], "big")
    ref, known, pad = fields >> 11, bool(fields >> 10 & 1), fields & 0x3FF
    if pad >= FRAME_SAMPLES or (pad and not known):
        raise BitstreamError(".gac header corrupt (padding out of range)")
    cid = codec_id if codec_id is not None and codec_ref(codec_id) == ref else unknown_codec(ref)
    ids, mode, voice, packets = _read_packets(data, HEADER_BYTES, entropy, None)
    n = len(ids)
    n_samples = n * FRAME_SAMPLES - pad if known else None
    tokens = Tokens(ids, mode, cid, n_samples, voice)
    return tokens, GacInfo(cid, mode, SAMPLE_RATE, n, n_samples or 0, len(data), packets)


def _read_packets(data: bytes, pos: int, entropy, frames: int | None
                  ) -> tuple[np.ndarray, str, bytes | None, int]:
    """The packets from `pos` to the end: token ids, mode, latest voice code, count."""
    chunks, filled, packets, voice, mode, ended = [], 0, 0, None, None, False
    while pos < len(data):
        if ended:
            raise BitstreamError(".gac file has data after its end-of-stream packet")
        p, pos = read_packet(data, pos, entropy)
        if p.first_frame != filled or (frames is not None and filled + p.frame_count > frames):
            raise BitstreamError(".gac packets out of order or beyond the announced frame count")
        if mode is not None and p.mode != mode:
            raise BitstreamError(".gac packet mode differs from the file's")
        mode = p.mode
        chunks.append(p.tokens)
        voice = p.voice if p.voice is not None else voice  # the latest code wins
        filled += p.frame_count
        packets += 1
        ended = p.eos
    if mode is None or (frames is None and not ended):
        raise BitstreamError(".gac file truncated: its end-of-stream packet is missing")
    ids = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
    return ids, mode, voice, packets


def _loads_v1(data: bytes, entropy) -> tuple[Tokens, GacInfo]:
    """A version 1 file: b"GAC" | version | rate | mode | frames | samples | codec id."""
    if len(data) < _FIXED.size:
        raise BitstreamError(".gac file truncated in its header")
    magic, version, sr, mode_id, n, n_samples, cid_len = _FIXED.unpack(data[: _FIXED.size])
    if version != LEGACY_VERSION:
        raise BitstreamError(f"unsupported .gac version {version} (this build reads versions "
                             f"{' and '.join(map(str, READS))})")
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
    if pos == len(data):
        raise BitstreamError(f".gac file truncated: 0 of {n} frames present")
    ids, mode, voice, packets = _read_packets(data, pos, entropy, n)
    if len(ids) != n:
        raise BitstreamError(f".gac file truncated: {len(ids)} of {n} frames present")
    if mode != MODE_NAMES[mode_id]:
        raise BitstreamError(".gac packet mode differs from the file header")
    tokens = Tokens(ids, mode, cid, n_samples or None, voice)
    return tokens, GacInfo(cid, mode, sr, n, n_samples, len(data), packets)


def write(path: str | Path, tokens: Tokens, width: int, entropy=None) -> int:
    """Write a .gac file atomically; returns its size in bytes."""
    data = dumps(tokens, width, entropy)
    atomic_write_bytes(path, data)
    return len(data)


def read(path: str | Path, entropy=None, codec_id: str | None = None
         ) -> tuple[Tokens, GacInfo]:
    """Read and validate a .gac file (`codec_id`: the reader's codec, see `loads`)."""
    from .errors import GacflowError

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise GacflowError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return loads(data, entropy, codec_id)
