"""Entropy coding of tokens: the arithmetic coder, the context model, coded packets and files."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gacflow import container
from gacflow.arith import ArithmeticDecoder, ArithmeticEncoder
from gacflow.bitstream import SILENT, Packet, decode_packet, encode_packet, read_packet
from gacflow.bundle import Bundle
from gacflow.entropy import TOTAL, EntropyModel
from gacflow.errors import BitstreamError, BundleError, GacflowError
from gacflow.spec import TokenLayout
from gacflow.tokens import Tokens

LAYOUT = TokenLayout()


def sticky_tokens(rng: np.random.Generator, n: int, keep: float = 0.7) -> np.ndarray:
    """A 275-mode token sequence whose digits keep their previous value with p=`keep`,
    like real speech tokens (and unlike uniform noise)."""
    digits = rng.integers(0, 4, size=(n, 5))
    for t in range(1, n):
        same = rng.random(5) < keep
        digits[t, same] = digits[t - 1, same]
    return digits @ (4 ** np.arange(4, -1, -1))


@pytest.fixture(scope="module")
def model() -> EntropyModel:
    rng = np.random.default_rng(0)
    return EntropyModel.fit([sticky_tokens(rng, 400) for _ in range(20)], LAYOUT)


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_arithmetic_coder_round_trip(data) -> None:
    """Any symbols against any tables (skewed ones too) decode back exactly."""
    n_sym = data.draw(st.integers(2, 9))
    counts = data.draw(st.lists(st.integers(1, 5000), min_size=n_sym, max_size=n_sym))
    cum = [0, *np.cumsum(counts).tolist()]
    symbols = data.draw(st.lists(st.integers(0, n_sym - 1), max_size=400))
    enc = ArithmeticEncoder()
    for s in symbols:
        enc.encode(cum[s], cum[s + 1], cum[-1])
    dec = ArithmeticDecoder(enc.finish())
    assert [dec.decode(cum) for _ in symbols] == symbols


def test_fitted_tables_code_sticky_tokens_in_fewer_bits(model: EntropyModel) -> None:
    tokens = sticky_tokens(np.random.default_rng(1), 500)
    for mode, toks, plain in (("275", tokens, 10), ("175", tokens // 16, 6)):
        code = model.encode(toks, mode)
        ideal = model.code_bits(toks, mode)
        assert ideal < 0.85 * plain * len(toks)
        assert len(code) * 8 <= ideal + 16  # the coder is within a few bits of the ideal
        np.testing.assert_array_equal(model.decode(code, np.ones(len(toks), bool), mode), toks)


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_model_round_trip_with_dtx_gaps(model: EntropyModel, data) -> None:
    seed = data.draw(st.integers(0, 2**31))
    n = data.draw(st.integers(0, 200))
    mode = data.draw(st.sampled_from(["275", "175"]))
    tokens = sticky_tokens(np.random.default_rng(seed), n)
    if mode == "175":
        tokens = tokens // 16
    silent = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), bool)
    tokens[silent] = SILENT
    back = model.decode(model.encode(tokens, mode), tokens != SILENT, mode)
    np.testing.assert_array_equal(back, tokens)


def test_manifest_round_trip_and_damage(model: EntropyModel) -> None:
    raw = model.to_manifest()
    again = EntropyModel.from_manifest(raw, LAYOUT)
    assert again.tag == model.tag and again.digest == model.digest
    for bad in (
        {**raw, "format": "other/9"},
        {**raw, "levels": [4, 4, 4]},
        {**raw, "counts": raw["counts"][:-8]},
        {**raw, "counts": "not base64!"},
        {**raw, "digest": "0" * 16},
    ):
        with pytest.raises(BundleError):
            EntropyModel.from_manifest(bad, LAYOUT)
    zeros = tuple(np.zeros_like(c) for c in model.counts)
    with pytest.raises(BundleError, match=f"sum to {TOTAL}"):
        EntropyModel(LAYOUT, zeros)


def test_coded_packets_are_shorter_and_read_back(model: EntropyModel) -> None:
    tokens = sticky_tokens(np.random.default_rng(2), 125)
    tokens[40:60] = SILENT
    plain = encode_packet(Packet(4, 7, 250, tokens, width=10, voice=b"\x01\x02"))
    coded = encode_packet(Packet(4, 7, 250, tokens, width=10, voice=b"\x01\x02"), model)
    assert len(coded) < 0.9 * len(plain)
    p = decode_packet(coded, model)
    assert p.coded and not decode_packet(plain, model).coded
    assert (p.stream_id, p.seq, p.first_frame, p.width, p.voice) == (4, 7, 250, 10, b"\x01\x02")
    np.testing.assert_array_equal(p.tokens, tokens)
    # concatenated, as in .gac files and packet logs
    second = encode_packet(Packet(4, 8, 375, tokens[::-1].copy(), width=10, eos=True), model)
    first, end = read_packet(coded + second, 0, model)
    last, stop = read_packet(coded + second, end, model)
    assert stop == len(coded + second) and last.eos
    np.testing.assert_array_equal(last.tokens, tokens[::-1])


def test_noise_like_tokens_stay_plain(model: EntropyModel) -> None:
    """A packet is coded only when that is shorter: worst case is the plain packet."""
    tokens = np.random.default_rng(3).integers(0, 1024, 50)
    plain = encode_packet(Packet(0, 0, 0, tokens, width=10))
    sent = encode_packet(Packet(0, 0, 0, tokens, width=10), model)
    assert len(sent) <= len(plain)
    np.testing.assert_array_equal(decode_packet(sent, model).tokens, tokens)


def test_coded_packet_needs_the_senders_tables(model: EntropyModel) -> None:
    tokens = sticky_tokens(np.random.default_rng(4), 100)
    coded = encode_packet(Packet(0, 0, 0, tokens, width=10), model)
    with pytest.raises(BitstreamError, match="no entropy model"):
        decode_packet(coded)
    rng = np.random.default_rng(9)
    other = EntropyModel.fit([rng.integers(0, 1024, 300)], LAYOUT)
    assert other.tag != model.tag
    with pytest.raises(BitstreamError, match="entropy tables"):
        decode_packet(coded, other)


def test_damaged_coded_packets_raise_bitstream_errors_only(model: EntropyModel) -> None:
    """Truncation, extension and bit flips of a coded packet: one clear error, no traceback
    from the coder (a flip the check byte misses may decode to other valid tokens)."""
    tokens = sticky_tokens(np.random.default_rng(5), 80)
    data = encode_packet(Packet(1, 2, 3, tokens, width=10), model)
    for cut in range(len(data)):
        with pytest.raises(BitstreamError):
            decode_packet(data[:cut], model)
    with pytest.raises(BitstreamError):
        decode_packet(data + b"\0", model)
    rng = np.random.default_rng(6)
    for _ in range(300):
        bad = bytearray(data)
        bad[rng.integers(len(bad))] ^= 1 << int(rng.integers(8))
        try:
            p = decode_packet(bytes(bad), model)
        except BitstreamError:
            continue
        assert p.tokens.min() >= SILENT and p.tokens.max() < 1 << p.width


def test_gac_file_with_coded_packets(model: EntropyModel) -> None:
    tokens = Tokens(sticky_tokens(np.random.default_rng(7), 750), "275", "codec-x", 480000)
    plain, coded = container.dumps(tokens, 10), container.dumps(tokens, 10, model)
    assert len(coded) < 0.9 * len(plain)
    back, info = container.loads(coded, model)
    np.testing.assert_array_equal(back.ids, tokens.ids)
    assert info.bytes == len(coded)
    with pytest.raises(GacflowError, match="entropy"):
        container.loads(coded)


def test_shipped_bundle_codes_real_speech(speech: np.ndarray) -> None:
    """The shipped tables, on speech they were not fitted on, beat plain packing in both
    modes, and the round trip through packets is exact."""
    pytest.importorskip("torch")
    from gacflow.model import Codec

    bundle = Bundle.load()
    assert bundle.entropy is not None
    codec = Codec.from_bundle()
    for mode, plain in (("275", 10), ("175", 6)):
        tokens = codec.encode(speech, mode)
        data = encode_packet(Packet(0, 0, 0, tokens.ids, width=plain, mode=mode),
                             bundle.entropy)
        assert len(data) * 8 < 0.95 * plain * len(tokens)
        np.testing.assert_array_equal(decode_packet(data, bundle.entropy).tokens, tokens.ids)
