"""Packets: a compact header plus coded tokens; the unit sent over MQTT and stored in .gac.

Version 2 (written since issue 23; docs/bitstream.md has the byte-by-byte budget):

    byte 0      version:3 (= 2) | mode:1 | eos:1 | dtx:1 | voice:1 | coded:1
    byte 1      check byte: low 8 bits of CRC-32 over the entropy model's tag (coded
                packets only: other tables fail the check) and every other byte
    then bits, MSB first, no alignment between fields ("g(x)": exp-Golomb, 2*log2(x+1)+1
    bits: 0 costs 1 bit, 25 costs 9; "g4(x)": order 4, g(x >> 4) then 4 bits: 25 costs 7):
                stream id:8 | g4(frame count) | g(sequence number) |
                g(zigzag(first frame - sequence number x frame count)), the difference
                taken modulo 2**24 into -2**23..2**23-1 and zigzagged (0, -1, 1, -2 ->
                0, 1, 2, 3): 1 bit when every packet before had this one's length |
                width flag:1 (0: the mode's width, 10 or 6 bits; 1: width - 1:4 follows)
    [voice]     g(zigzag(code bytes - 8)): 1 bit for the shipped 8-byte code, then the
                packed voice code (sdk/voice.py)
    [dtx]       activity: first frame active:1, g(runs - 1), g(run - 1) for every run but
                the last (1 = speech, token follows)
    tokens      active frames x width bits; or, when coded, the arithmetic code of the
                active frames (sdk/entropy.py / sdk/tokenlm.py), which ends itself
    padding     zero bits to a whole byte

A packet's length follows from its content (the arithmetic decoder knows where the code
ends), so packets can be concatenated (as in .gac and packet logs) and a truncated,
oversized or altered packet is detected, not misread. A packet is sent coded only when
that is shorter. Version 1 packets (11-byte header, sdk/bitstream_v1.py) still decode.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from .bitio import BitReader, BitWriter
from .errors import BitstreamError
from .spec import MODE_IDS, MODE_NAMES, SILENT, TokenLayout

VERSION = 2
READS = (1, 2)  # packet versions this build decodes
HEADER_BYTES = 2  # the fixed bytes of a v2 packet; the rest of its header is bits
MAX_FRAMES = 0xFFFF
MAX_VOICE_BYTES = 32
VOICE_BYTES = 8  # the shipped envelope code's size: its length costs 1 bit
COUNT_K = 4  # frame counts are exp-Golomb of order 4 (25 frames: 7 bits)
FRAME_WRAP = 1 << 24  # first-frame indices wrap here (~186 h at 25 Hz)
SEQ_WRAP = 1 << 16
_WIDTHS = {m.name: m.bits for m in TokenLayout().modes.values()}  # the mode's usual width


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
    coded: bool = False  # read back: the tokens came entropy-coded

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


def _check_byte(context: bytes, data: bytes) -> int:
    return zlib.crc32(data, zlib.crc32(context)) & 0xFF


def _plain_bits(values: np.ndarray, width: int) -> list[int]:
    shifts = np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((np.asarray(values, np.int64)[:, None] >> shifts) & 1).ravel().tolist()


def _zigzag(v: int) -> int:
    return 2 * v if v >= 0 else -2 * v - 1


def _unzigzag(z: int) -> int:
    return z // 2 if z % 2 == 0 else -(z + 1) // 2


def _runs(active: np.ndarray) -> list[int]:
    edges = np.flatnonzero(np.diff(active.astype(np.int8))) + 1
    bounds = [0, *edges.tolist(), len(active)]
    return [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def encode_packet(p: Packet, entropy=None, version: int = VERSION) -> bytes:
    """Serialise a packet; raises BitstreamError on fields out of range. With an entropy
    model (sdk/entropy.py, sdk/tokenlm.py) the tokens are arithmetic-coded whenever that
    is shorter than plain packing. `version=1` writes the old layout (tests, tools)."""
    if version == 1:
        from .bitstream_v1 import encode_packet_v1

        return encode_packet_v1(p, entropy)
    tokens = np.asarray(p.tokens, dtype=np.int64)
    if p.mode not in MODE_IDS:
        raise BitstreamError(f"unknown mode {p.mode!r}")
    for name, value, hi in (("stream id", p.stream_id, 0xFF),
                            ("frame count", len(tokens), MAX_FRAMES),
                            ("sequence number", p.seq, SEQ_WRAP - 1),
                            ("first frame", p.first_frame, FRAME_WRAP - 1)):
        if not 0 <= value <= hi:
            raise BitstreamError(f"{name} {value} out of range 0..{hi}")
    if not 1 <= p.width <= 16:
        raise BitstreamError(f"token width must be 1-16 bits, got {p.width}")
    active = tokens != SILENT
    live = tokens[active]
    if live.size and (live.min() < 0 or live.max() >= (1 << p.width)):
        raise BitstreamError(f"token out of range for {p.width}-bit width")
    voice = p.voice is not None
    if voice and not 1 <= len(p.voice) <= MAX_VOICE_BYTES:
        raise BitstreamError(f"voice code must be 1-{MAX_VOICE_BYTES} bytes, got {len(p.voice)}")
    dtx = not bool(active.all())
    n = len(tokens)
    w = BitWriter()
    w.write(p.stream_id, 8)
    w.golomb(n, COUNT_K)
    w.gamma(p.seq)
    w.gamma(_zigzag((p.first_frame - p.seq * n + FRAME_WRAP // 2) % FRAME_WRAP
                    - FRAME_WRAP // 2))
    w.flag(p.width != _WIDTHS[p.mode])
    if p.width != _WIDTHS[p.mode]:
        w.write(p.width - 1, 4)
    if voice:
        w.gamma(_zigzag(len(p.voice) - VOICE_BYTES))
        w.extend(np.unpackbits(np.frombuffer(p.voice, np.uint8)).tolist())
    if dtx:
        runs = _runs(active)
        w.flag(active[0])
        w.gamma(len(runs) - 1)
        for r in runs[:-1]:
            w.gamma(r - 1)
    payload = _plain_bits(live, p.width)
    coded = False
    if entropy is not None and live.size:
        if entropy.layout.mode(p.mode).bits != p.width:
            raise BitstreamError(f"token width {p.width} is not mode {p.mode}'s "
                                 f"{entropy.layout.mode(p.mode).bits} bits")
        code = entropy.encode_bits(tokens, p.mode)
        if len(code) < len(payload):
            payload, coded = code, True
    w.extend(payload)
    body = w.to_bytes()
    b0 = ((VERSION << 5) | (MODE_IDS[p.mode] << 4) | (int(p.eos) << 3) | (int(dtx) << 2)
          | (int(voice) << 1) | int(coded))
    context = bytes([entropy.tag]) if coded else b""
    return bytes([b0, _check_byte(context, bytes([b0]) + body)]) + body


def decode_packet(data: bytes, entropy=None) -> Packet:
    """Parse exactly one packet; any malformation raises BitstreamError. `entropy`: the
    sender's entropy model (the bundle's), needed only for coded packets."""
    p, used = read_packet(data, 0, entropy)
    if used != len(data):
        raise BitstreamError(f"packet oversized: {len(data)} bytes, header announces {used}"
                             + (_other_tables(entropy) if p.coded else ""))
    return p


def _other_tables(entropy) -> str:
    """What to add to an error about a coded packet: the tables may be the cause."""
    return (f" (or it was coded with entropy tables other than this bundle's "
            f"{entropy.tag:02x}: decode it with the sender's bundle)")


def packet_version(data: bytes, offset: int = 0) -> int:
    """The version field of the packet at `offset` (top 3 bits of its first byte)."""
    if len(data) <= offset:
        raise BitstreamError(f"packet truncated: {max(0, len(data) - offset)} bytes")
    return data[offset] >> 5


def read_packet(data: bytes, offset: int, entropy=None) -> tuple[Packet, int]:
    """Parse the packet starting at `offset`; return it and the offset just past it. A
    packet the bundle's token model cannot read is tried with the models it replaced
    (`previous`, kept by `gacflow-train lm-fit`), so a refit loses no stored file."""
    try:
        return _read_packet(data, offset, entropy)
    except BitstreamError as first:
        for old in getattr(entropy, "previous", ()):
            try:
                return _read_packet(data, offset, old)
            except BitstreamError:
                continue
        raise first


def _read_packet(data: bytes, offset: int, entropy=None) -> tuple[Packet, int]:
    version = packet_version(data, offset)
    if version == 1:
        from .bitstream_v1 import read_packet_v1

        return read_packet_v1(data, offset, entropy)
    if version != VERSION:
        raise BitstreamError(f"unsupported packet version {version} (this build reads "
                             f"versions {' and '.join(map(str, READS))})")
    if len(data) < offset + HEADER_BYTES + 1:
        raise BitstreamError(f"packet truncated: {len(data) - offset} bytes")
    b0, check = data[offset], data[offset + 1]
    mode = MODE_NAMES[(b0 >> 4) & 1]
    eos, dtx, has_voice, coded = (bool(b0 & m) for m in (8, 4, 2, 1))
    r = BitReader(data[offset:], HEADER_BYTES * 8)
    stream_id = r.read(8)
    n = r.golomb(COUNT_K, limit=16)
    if n > MAX_FRAMES:
        raise BitstreamError(f"packet corrupt: frame count {n} over {MAX_FRAMES}")
    if n == 0 and not eos:
        raise BitstreamError("packet announces zero frames without end-of-stream")
    seq = r.gamma(limit=16)
    delta = _unzigzag(r.gamma(limit=24))
    if seq >= SEQ_WRAP or not -FRAME_WRAP // 2 <= delta < FRAME_WRAP // 2:
        raise BitstreamError("packet corrupt: sequence number or frame index out of range")
    width = r.read(4) + 1 if r.flag() else _WIDTHS[mode]
    voice = None
    if has_voice:
        nvoice = _unzigzag(r.gamma("voice code", limit=6)) + VOICE_BYTES
        if not 1 <= nvoice <= MAX_VOICE_BYTES:
            raise BitstreamError(f"voice code length {nvoice} out of range 1..{MAX_VOICE_BYTES}")
        voice = bytes(r.read(8, "voice code") for _ in range(nvoice))
    active = np.ones(n, dtype=bool)
    if dtx:
        first = r.flag("DTX runs")
        count = r.gamma("DTX runs", limit=16) + 1
        pos, value = 0, first
        for _ in range(count - 1):
            run = r.gamma("DTX runs", limit=16) + 1
            if pos + run >= n:
                raise BitstreamError("packet corrupt: DTX runs longer than the packet")
            active[pos : pos + run] = value
            pos, value = pos + run, not value
        if pos >= n and n:
            raise BitstreamError("packet corrupt: DTX runs longer than the packet")
        active[pos:] = value
    n_active = int(active.sum())
    if coded:
        if entropy is None:
            raise BitstreamError("packet is entropy-coded but no entropy model was given: "
                                 "decode it with the bundle of the codec that sent it")
        if entropy.layout.mode(mode).bits != width:
            raise BitstreamError(f"coded packet of mode {mode} announces {width}-bit tokens")
        if not n_active:
            raise BitstreamError("packet corrupt: coded without active frames")
        try:
            tokens, end_bit = entropy.decode_bits(r.bits, r.pos, active, mode)
        except BitstreamError as exc:
            raise BitstreamError(f"{exc}{_other_tables(entropy)}") from exc
    else:
        values = np.asarray([r.read(width, "tokens") for _ in range(n_active)], np.int64)
        tokens = np.full(n, SILENT, dtype=np.int64)
        tokens[active] = values
        end_bit = r.pos
    length = (end_bit + 7) // 8
    if length > r.size // 8:
        raise BitstreamError(f"packet truncated: {len(data) - offset} bytes, needs {length}"
                             + (_other_tables(entropy) if coded else ""))
    end = offset + length
    body = bytes(data[offset + HEADER_BYTES : end])
    context = bytes([entropy.tag]) if coded else b""
    if _check_byte(context, bytes([b0]) + body) != check:
        hint = _other_tables(entropy) if coded else ""
        raise BitstreamError(f"packet corrupt: check byte mismatch{hint}")
    packet = Packet(stream_id=stream_id, seq=seq, first_frame=(seq * n + delta) % FRAME_WRAP,
                    tokens=tokens, width=width, mode=mode, eos=eos, version=VERSION,
                    voice=voice, coded=coded)
    return packet, end
