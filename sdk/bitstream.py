"""Packets: a compact header plus bit-packed tokens; the unit sent over MQTT and stored in .gac.

Layout (big-endian, 11 bytes of header):

    byte 0      version:3 | mode:2 | eos:1 | dtx:1 | voice:1
    byte 1      token width - 1:4 | reserved:4
    byte 2      stream id (0-255; a device starts a new stream per session)
    bytes 3-4   sequence number (wraps at 2**16)
    bytes 5-7   index of the first frame in the stream (wraps at 2**24, ~186 h at 25 Hz)
    bytes 8-9   frame count
    byte 10     check byte: low 8 bits of CRC-32 over the rest of the packet
    [voice only] code length in bytes (1-32), then the packed voice code (sdk/voice.py):
                the stream's speaker summary, sent in a few packets per stream, not all
    [dtx only]  activity bitmap, one bit per frame (1 = speech, token follows)
    tokens      active frames x width bits, MSB first, zero-padded to a byte

A packet's length follows from its header, so packets can be concatenated (as in .gac)
and a truncated, oversized or altered packet is detected, not misread.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from .errors import BitstreamError
from .spec import MODE_IDS, MODE_NAMES

VERSION = 1
HEADER_BYTES = 11
MAX_FRAMES = 0xFFFF
MAX_VOICE_BYTES = 32
SILENT = -1  # token value of a DTX (not transmitted) frame


@dataclass
class Packet:
    """Frames of one stream: tokens[i] is frame first_frame+i, or SILENT under DTX."""

    stream_id: int
    seq: int
    first_frame: int
    tokens: np.ndarray
    width: int
    mode: str = "275"
    eos: bool = False
    version: int = field(default=VERSION)
    voice: bytes | None = None  # packed voice code, when this packet carries one

    @property
    def frame_count(self) -> int:
        return int(len(self.tokens))

    @property
    def has_dtx(self) -> bool:
        return bool(np.any(np.asarray(self.tokens) == SILENT))


def pack_bits(values: np.ndarray, width: int) -> bytes:
    """Pack unsigned integers of `width` bits (1-16), MSB first, into bytes."""
    v = np.asarray(values, dtype=np.int64)
    if not 1 <= width <= 16:
        raise BitstreamError(f"token width must be 1-16 bits, got {width}")
    if v.size and (v.min() < 0 or v.max() >= (1 << width)):
        raise BitstreamError(f"token out of range for {width}-bit width")
    shifts = np.arange(width - 1, -1, -1, dtype=np.int64)
    bits = ((v[:, None] >> shifts) & 1).astype(np.uint8).ravel()
    return np.packbits(bits).tobytes()


def unpack_bits(data: bytes, count: int, width: int) -> np.ndarray:
    """Inverse of `pack_bits` for `count` values."""
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[: count * width]
    if len(bits) < count * width:
        raise BitstreamError("packet truncated: fewer token bits than the header announces")
    weights = (1 << np.arange(width - 1, -1, -1, dtype=np.int64))
    return bits.reshape(count, width).astype(np.int64) @ weights


def _check_byte(data: bytes) -> int:
    return zlib.crc32(data) & 0xFF


def _check_header(buf: bytes) -> None:
    """Validate the fixed fields of an 11-byte header."""
    if len(buf) < HEADER_BYTES:
        raise BitstreamError(f"packet truncated: {len(buf)} bytes, header needs {HEADER_BYTES}")
    version = buf[0] >> 5
    if version != VERSION:
        raise BitstreamError(f"unsupported packet version {version} (this build reads {VERSION})")
    if (buf[0] >> 3) & 0x03 not in MODE_NAMES:
        raise BitstreamError(f"unknown mode id {(buf[0] >> 3) & 0x03} in packet header")
    if buf[1] & 0x0F:
        raise BitstreamError("packet header has reserved bits set")
    count = struct.unpack(">H", buf[8:10])[0]
    if count == 0 and not buf[0] & 0x04:
        raise BitstreamError("packet announces zero frames without end-of-stream")


def encode_packet(p: Packet) -> bytes:
    """Serialise a packet; raises BitstreamError on fields out of range."""
    tokens = np.asarray(p.tokens, dtype=np.int64)
    if p.mode not in MODE_IDS:
        raise BitstreamError(f"unknown mode {p.mode!r}")
    for name, value, hi in (
        ("stream id", p.stream_id, 0xFF),
        ("frame count", len(tokens), MAX_FRAMES),
    ):
        if not 0 <= value <= hi:
            raise BitstreamError(f"{name} {value} out of range 0..{hi}")
    active = tokens != SILENT
    dtx = not bool(active.all())
    voice = p.voice is not None
    if voice and not 1 <= len(p.voice) <= MAX_VOICE_BYTES:
        raise BitstreamError(f"voice code must be 1-{MAX_VOICE_BYTES} bytes, got {len(p.voice)}")
    b0 = ((VERSION << 5) | (MODE_IDS[p.mode] << 3) | (int(p.eos) << 2) | (int(dtx) << 1)
          | int(voice))
    if not 1 <= p.width <= 16:
        raise BitstreamError(f"token width must be 1-16 bits, got {p.width}")
    b1 = (p.width - 1) << 4
    head = bytes([b0, b1, p.stream_id]) + struct.pack(">H", p.seq & 0xFFFF)
    head += (p.first_frame & 0xFFFFFF).to_bytes(3, "big") + struct.pack(">H", len(tokens))
    body = bytes([len(p.voice)]) + p.voice if voice else b""
    if dtx:
        body += np.packbits(active.astype(np.uint8)).tobytes()
    body += pack_bits(tokens[active], p.width)
    return head + bytes([_check_byte(head + body)]) + body


def decode_packet(data: bytes) -> Packet:
    """Parse exactly one packet; any malformation raises BitstreamError."""
    p, used = read_packet(data, 0)
    if used != len(data):
        raise BitstreamError(
            f"packet oversized: {len(data)} bytes, header announces {used}"
        )
    return p


def read_packet(data: bytes, offset: int) -> tuple[Packet, int]:
    """Parse the packet starting at `offset`; return it and the offset just past it."""
    buf = bytes(data[offset : offset + HEADER_BYTES])
    _check_header(buf)
    b0, b1 = buf[0], buf[1]
    dtx = bool(b0 & 0x02)
    mode_id = (b0 >> 3) & 0x03
    width = (b1 >> 4) + 1
    count = struct.unpack(">H", buf[8:10])[0]
    pos = offset + HEADER_BYTES
    nvoice = 0
    if b0 & 0x01:
        if len(data) <= pos:
            raise BitstreamError("packet truncated before its voice code")
        nvoice = data[pos]
        if not 1 <= nvoice <= MAX_VOICE_BYTES:
            raise BitstreamError(f"voice code length {nvoice} out of range 1..{MAX_VOICE_BYTES}")
        nvoice += 1  # the length byte itself
    nmap = (count + 7) // 8 if dtx else 0
    if dtx:
        raw = bytes(data[pos + nvoice : pos + nvoice + nmap])
        if len(raw) < nmap:
            raise BitstreamError("packet truncated inside the DTX bitmap")
        active = np.unpackbits(np.frombuffer(raw, np.uint8))[:count].astype(bool)
    else:
        active = np.ones(count, dtype=bool)
    n_active = int(active.sum())
    length = HEADER_BYTES + nvoice + nmap + (n_active * width + 7) // 8
    end = offset + length
    if len(data) < end:
        raise BitstreamError(f"packet truncated: {len(data) - offset} bytes, needs {length}")
    body = bytes(data[pos:end])
    if _check_byte(buf[:10] + body) != buf[10]:
        raise BitstreamError("packet corrupt: check byte mismatch")
    values = unpack_bits(body[nvoice + nmap :], n_active, width)
    tokens = np.full(count, SILENT, dtype=np.int64)
    tokens[active] = values
    packet = Packet(
        stream_id=buf[2],
        seq=struct.unpack(">H", buf[3:5])[0],
        first_frame=int.from_bytes(buf[5:8], "big"),
        tokens=tokens,
        width=width,
        mode=MODE_NAMES[mode_id],
        eos=bool(b0 & 0x04),
        version=b0 >> 5,
        voice=body[1:nvoice] if nvoice else None,
    )
    return packet, end
