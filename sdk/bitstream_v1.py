"""Version 1 packets (11-byte header), kept so that streams and .gac files written before
version 2 still decode; docs/bitstream.md describes both. New packets are version 2.

Layout (big-endian, 11 bytes of header):

    byte 0      version:3 | mode:2 | eos:1 | dtx:1 | voice:1
    byte 1      token width - 1:4 | coded:1 | reserved:3
    byte 2      stream id
    bytes 3-4   sequence number
    bytes 5-7   index of the first frame in the stream
    bytes 8-9   frame count
    byte 10     check byte: low 8 bits of CRC-32 over the rest of the packet
    [voice only] code length in bytes (1-32), then the packed voice code
    [dtx only]  activity bitmap, one bit per frame (1 = speech, token follows)
    tokens      active frames x width bits, MSB first, zero-padded to a byte; or, when
                coded: the entropy model's tag (1 byte), the code's length in bytes
                (LEB128 varint), then the arithmetic code of the frames
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from .bitstream import MAX_VOICE_BYTES, Packet, pack_bits, unpack_bits
from .entropy import EntropyModel
from .errors import BitstreamError
from .spec import MODE_IDS, MODE_NAMES, SILENT

VERSION = 1
HEADER_BYTES = 11
MAX_FRAMES = 0xFFFF
CODED = 0x08  # byte 1: the tokens are entropy-coded


def _check_byte(data: bytes) -> int:
    return zlib.crc32(data) & 0xFF


def _check_header(buf: bytes) -> None:
    """Validate the fixed fields of an 11-byte header."""
    if len(buf) < HEADER_BYTES:
        raise BitstreamError(f"packet truncated: {len(buf)} bytes, header needs {HEADER_BYTES}")
    if (buf[0] >> 3) & 0x03 not in MODE_NAMES:
        raise BitstreamError(f"unknown mode id {(buf[0] >> 3) & 0x03} in packet header")
    if buf[1] & 0x07:
        raise BitstreamError("packet header has reserved bits set")
    count = struct.unpack(">H", buf[8:10])[0]
    if count == 0 and not buf[0] & 0x04:
        raise BitstreamError("packet announces zero frames without end-of-stream")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    for i in range(pos, min(pos + 4, len(data))):
        n |= (data[i] & 0x7F) << shift
        shift += 7
        if not data[i] & 0x80:
            return n, i + 1
    raise BitstreamError("packet truncated or corrupt in its code length")


def encode_packet_v1(p: Packet, entropy: EntropyModel | None = None) -> bytes:
    """Serialise a packet; raises BitstreamError on fields out of range. With an entropy
    model the tokens are arithmetic-coded whenever that is shorter than plain packing."""
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
    payload = pack_bits(tokens[active], p.width)
    coded = False
    if entropy is not None and active.any():
        if entropy.layout.mode(p.mode).bits != p.width:
            raise BitstreamError(f"token width {p.width} is not mode {p.mode}'s "
                                 f"{entropy.layout.mode(p.mode).bits} bits")
        code = entropy.encode(tokens, p.mode)
        framed = bytes([entropy.tag]) + _varint(len(code)) + code
        if len(framed) < len(payload):
            payload, coded = framed, True
    b1 = ((p.width - 1) << 4) | (CODED if coded else 0)
    head = bytes([b0, b1, p.stream_id]) + struct.pack(">H", p.seq & 0xFFFF)
    head += (p.first_frame & 0xFFFFFF).to_bytes(3, "big") + struct.pack(">H", len(tokens))
    body = bytes([len(p.voice)]) + p.voice if voice else b""
    if dtx:
        body += np.packbits(active.astype(np.uint8)).tobytes()
    body += payload
    return head + bytes([_check_byte(head + body)]) + body


def decode_packet_v1(data: bytes, entropy: EntropyModel | None = None) -> Packet:
    """Parse exactly one packet; any malformation raises BitstreamError. `entropy`: the
    sender's entropy model (the bundle's), needed only for coded packets."""
    p, used = read_packet_v1(data, 0, entropy)
    if used != len(data):
        raise BitstreamError(
            f"packet oversized: {len(data)} bytes, header announces {used}"
        )
    return p


def read_packet_v1(data: bytes, offset: int, entropy: EntropyModel | None = None
                ) -> tuple[Packet, int]:
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
    coded = bool(b1 & CODED)
    if coded:
        tag_at = pos + nvoice + nmap
        n_code, code_at = _read_varint(data, tag_at + 1)
        length = code_at - offset + n_code
    else:
        length = HEADER_BYTES + nvoice + nmap + (n_active * width + 7) // 8
    end = offset + length
    if len(data) < end:
        raise BitstreamError(f"packet truncated: {len(data) - offset} bytes, needs {length}")
    body = bytes(data[pos:end])
    if _check_byte(buf[:10] + body) != buf[10]:
        raise BitstreamError("packet corrupt: check byte mismatch")
    mode = MODE_NAMES[mode_id]
    if coded:
        tokens = _decode_coded(data[tag_at], data[code_at:end], active, mode, width, entropy)
    else:
        tokens = np.full(count, SILENT, dtype=np.int64)
        tokens[active] = unpack_bits(body[nvoice + nmap :], n_active, width)
    packet = Packet(
        stream_id=buf[2],
        seq=struct.unpack(">H", buf[3:5])[0],
        first_frame=int.from_bytes(buf[5:8], "big"),
        tokens=tokens,
        width=width,
        mode=mode,
        eos=bool(b0 & 0x04),
        version=b0 >> 5,
        voice=body[1:nvoice] if nvoice else None,
        coded=coded,
    )
    return packet, end


def _decode_coded(tag: int, code: bytes, active: np.ndarray, mode: str, width: int,
                  entropy: EntropyModel | None) -> np.ndarray:
    if entropy is None:
        raise BitstreamError("packet is entropy-coded but no entropy model was given: decode "
                             "it with the bundle of the codec that sent it")
    entropy = getattr(entropy, "legacy", entropy)  # a token LM keeps the v1 tables
    if entropy is None or tag != entropy.tag:
        have = f"{entropy.tag:02x}" if entropy is not None else "none"
        raise BitstreamError(f"version 1 packet was coded with entropy tables {tag:02x}, this "
                             f"bundle has {have}: decode it with the sender's bundle")
    if entropy.layout.mode(mode).bits != width:
        raise BitstreamError(f"coded packet of mode {mode} announces {width}-bit tokens")
    return entropy.decode(bytes(code), active, mode)
