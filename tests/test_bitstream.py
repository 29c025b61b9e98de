"""Packet header + bit-packed tokens: round trips for every width, and every kind of damage."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gacflow.bitstream import (
    HEADER_BYTES,
    SILENT,
    Packet,
    decode_packet,
    encode_packet,
    pack_bits,
    read_packet,
    unpack_bits,
)
from gacflow.errors import BitstreamError, GacflowError


@st.composite
def packets(draw):
    width = draw(st.integers(1, 16))
    n = draw(st.integers(0, 300))
    eos = draw(st.booleans()) or n == 0
    values = draw(st.lists(st.integers(0, (1 << width) - 1), min_size=n, max_size=n))
    tokens = np.array(values, dtype=np.int64)
    if n and draw(st.booleans()):
        mask = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        tokens[mask] = SILENT
    return Packet(
        stream_id=draw(st.integers(0, 255)),
        seq=draw(st.integers(0, 0xFFFF)),
        first_frame=draw(st.integers(0, 0xFFFFFF)),
        tokens=tokens,
        width=width,
        mode=draw(st.sampled_from(["275", "175"])),
        eos=eos,
    )


@given(packets())
@settings(max_examples=300, deadline=None)
def test_packet_round_trip(p: Packet) -> None:
    q = decode_packet(encode_packet(p))
    assert (q.stream_id, q.seq, q.first_frame, q.width, q.mode, q.eos) == (
        p.stream_id, p.seq, p.first_frame, p.width, p.mode, p.eos)
    np.testing.assert_array_equal(q.tokens, p.tokens)


@given(st.integers(1, 16), st.data())
@settings(max_examples=100, deadline=None)
def test_pack_bits_round_trip(width: int, data) -> None:
    vals = np.array(data.draw(st.lists(st.integers(0, (1 << width) - 1), max_size=200)), np.int64)
    packed = pack_bits(vals, width)
    assert len(packed) == (len(vals) * width + 7) // 8
    np.testing.assert_array_equal(unpack_bits(packed, len(vals), width), vals)


def test_payload_is_exactly_header_plus_bits() -> None:
    """v2: 2 fixed bytes, stream id 8 bits, g4(125) 11, g(seq 4) 5, g(0) 1 (the first
    frame is 4 x 125), width flag 1, then 10 bits per token, padded to a byte."""
    p = Packet(3, 4, 500, np.arange(125) % 1024, width=10)
    assert len(encode_packet(p)) == HEADER_BYTES + (8 + 11 + 5 + 1 + 1 + 125 * 10 + 7) // 8


def _good() -> bytes:
    return encode_packet(Packet(1, 2, 3, np.arange(50) % 64, width=6, mode="175"))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda b: b[:5], "truncated"),
        (lambda b: b[:-1], "truncated"),
        (lambda b: b + b"\x00", "oversized"),
        (lambda b: bytes([(b[0] & 0x1F) | (3 << 5)]) + b[1:], "version"),
        (lambda b: b[:12] + bytes([b[12] ^ 0xFF]) + b[13:], "corrupt"),
        (lambda b: b"", "truncated"),
    ],
)
def test_damaged_packets_raise_one_clear_error(mutate, message) -> None:
    with pytest.raises(BitstreamError, match=message):
        decode_packet(mutate(_good()))


@given(st.binary(max_size=400))
@settings(max_examples=500, deadline=None)
def test_garbage_never_escapes_as_another_exception(blob: bytes) -> None:
    try:
        decode_packet(blob)
    except GacflowError:
        pass


def test_concatenated_packets_are_self_delimiting() -> None:
    a = encode_packet(Packet(0, 0, 0, np.array([1, SILENT, 3]), width=4))
    b = encode_packet(Packet(0, 1, 3, np.array([5, 6]), width=4, eos=True))
    p1, off = read_packet(a + b, 0)
    p2, end = read_packet(a + b, off)
    assert end == len(a + b) and p2.eos and list(p1.tokens) == [1, SILENT, 3]


@pytest.mark.parametrize("bad", [dict(width=17), dict(width=0), dict(stream_id=256)])
def test_out_of_range_fields_refused(bad) -> None:
    fields = dict(stream_id=0, seq=0, first_frame=0, tokens=np.array([1]), width=4) | bad
    with pytest.raises(BitstreamError):
        encode_packet(Packet(**fields))


def test_token_wider_than_width_refused() -> None:
    with pytest.raises(BitstreamError, match="out of range"):
        encode_packet(Packet(0, 0, 0, np.array([16]), width=4))
