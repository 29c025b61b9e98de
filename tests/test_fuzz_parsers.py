"""Hypothesis fuzz of the parsers a device's bytes reach: packets (entropy-coded and plain,
alone and concatenated), the .gac container, and the receiver's stream table. Whatever
the bytes, the only exception is the documented `BitstreamError` (a `GacflowError`).

Only public entry points and round-trip-made inputs are used (no byte offsets), so the
tests hold when the header format changes.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gacflow import container
from gacflow.bitstream import SILENT, Packet, decode_packet, encode_packet, read_packet
from gacflow.bundle import Bundle
from gacflow.errors import BitstreamError
from gacflow.tokens import Tokens

BUNDLE = Bundle.load(verify=False)
ENTROPY = BUNDLE.entropy
LAYOUT = BUNDLE.layout
# CI runs a quick pass; GACFLOW_FUZZ_EXAMPLES=5000 for a long one
FUZZ = settings(max_examples=int(os.environ.get("GACFLOW_FUZZ_EXAMPLES", "120")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def valid_packets(draw) -> Packet:
    """A packet the agent could send: mode codebook tokens, DTX frames, maybe a voice code."""
    mode = draw(st.sampled_from(["275", "175"]))
    m = LAYOUT.mode(mode)
    n = draw(st.integers(0, 60))
    ids = np.array(draw(st.lists(st.integers(0, m.codebook_size - 1), min_size=n, max_size=n)),
                   np.int64)
    if n and draw(st.booleans()):
        ids[np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)))] = SILENT
    return Packet(draw(st.integers(0, 255)), draw(st.integers(0, 0xFFFF)),
                  draw(st.integers(0, 0xFFFFFF)), ids, m.bits, mode,
                  eos=draw(st.booleans()) or n == 0)


def damage(data: bytes, draw) -> bytes:
    """Flip, overwrite, cut, insert or splice: what a link or a hostile device produces."""
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "drop"]))
        if not b:
            b = bytearray(draw(st.binary(max_size=16)))
            continue
        i = draw(st.integers(0, len(b) - 1))
        if op == "flip":
            b[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            b[i] = draw(st.integers(0, 255))
        elif op == "cut":
            del b[i:]
        elif op == "insert":
            b[i:i] = draw(st.binary(min_size=1, max_size=8))
        else:
            del b[i]
    return bytes(b)


def only_bitstream_errors(fn, *args):
    try:
        return fn(*args)
    except BitstreamError:
        return None


@given(valid_packets(), st.booleans(), st.data())
@FUZZ
def test_damaged_packets_raise_only_bitstream_error(p, coded, data):
    entropy = ENTROPY if coded else None
    blob = encode_packet(p, entropy)
    assert decode_packet(blob, entropy).seq == p.seq  # the undamaged one parses
    bad = damage(blob, data.draw)
    only_bitstream_errors(decode_packet, bad, entropy)
    only_bitstream_errors(decode_packet, bad, None if coded else ENTROPY)  # wrong tables
    only_bitstream_errors(read_packet, bad + blob, 0, entropy)


@given(st.lists(valid_packets(), min_size=1, max_size=4), st.data())
@FUZZ
def test_a_damaged_packet_sequence_raises_only_bitstream_error(ps, data):
    blob = b"".join(encode_packet(p, ENTROPY) for p in ps)
    bad = damage(blob, data.draw)
    offset = 0
    try:
        while offset < len(bad):
            _, offset = read_packet(bad, offset, ENTROPY)
    except BitstreamError:
        pass


@given(st.binary(max_size=300))
@FUZZ
def test_random_bytes_with_the_bundles_tables(blob):
    only_bitstream_errors(decode_packet, blob, ENTROPY)
    only_bitstream_errors(container.loads, blob, ENTROPY)


@given(st.integers(0, 120), st.sampled_from(["275", "175"]), st.booleans(), st.data())
@FUZZ
def test_damaged_gac_files_raise_only_bitstream_error(n, mode, coded, data):
    m = LAYOUT.mode(mode)
    rng = np.random.default_rng(n)
    t = Tokens(rng.integers(0, m.codebook_size, n), mode, BUNDLE.codec_id, n * 640)
    entropy = ENTROPY if coded else None
    blob = container.dumps(t, m.bits, entropy)
    back, _ = container.loads(blob, entropy)
    np.testing.assert_array_equal(back.ids, t.ids)
    only_bitstream_errors(container.loads, damage(blob, data.draw), entropy)


@given(st.lists(st.one_of(valid_packets().map(lambda p: encode_packet(p, ENTROPY)),
                          st.binary(max_size=80)), min_size=1, max_size=12), st.data())
@FUZZ
def test_the_stream_table_raises_only_bitstream_error(blobs, data):
    """What the receiver does with a device's packets, without the decoder."""
    from gacflow.cloud.streams import StreamTable

    table = StreamTable(LAYOUT, voice=BUNDLE.voice)
    now = 1000.0
    for blob in blobs:
        if data.draw(st.booleans()):
            blob = damage(blob, data.draw)
        now += 0.05
        try:
            table.route("dev", decode_packet(blob, ENTROPY), now, None)
        except BitstreamError:
            pass
        table.tick(now)
    table.finish_all(now + 60)


def test_the_documented_error_is_a_gacflow_error():
    from gacflow.errors import GacflowError

    assert issubclass(BitstreamError, GacflowError)
    with pytest.raises(BitstreamError):
        decode_packet(b"", ENTROPY)
