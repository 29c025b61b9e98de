"""The v2 bitstream and the token LM (issue 23): property round trips of random token
streams (DTX runs, both modes, voice codes, coded and plain), self-delimiting packets,
damage, old (v1) packets and files, and the budget a short stream pays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_entropy import sticky_tokens

from gacflow import container
from gacflow.bitio import BitReader, BitWriter
from gacflow.bitstream import SILENT, Packet, decode_packet, encode_packet, read_packet
from gacflow.bundle import Bundle
from gacflow.edge.packetizer import Packetizer, RateControl
from gacflow.entropy import EntropyModel
from gacflow.errors import BitstreamError, BundleError, GacflowError
from gacflow.spec import TokenLayout
from gacflow.tokenlm import TokenLM, load_entropy
from gacflow.tokens import Tokens

LAYOUT = TokenLayout()


sticky = sticky_tokens  # 275-mode tokens that change like speech tokens (test_entropy.py)


@pytest.fixture(scope="module")
def lm() -> TokenLM:
    rng = np.random.default_rng(0)
    seqs = [sticky(rng, 300) for _ in range(20)]
    return TokenLM.fit(seqs, LAYOUT, min_count=2, legacy=EntropyModel.fit(seqs, LAYOUT))


@st.composite
def streams(draw):
    """A token stream with silent (DTX) runs, as the agent's DtxGate makes them."""
    seed = draw(st.integers(0, 2**31))
    n = draw(st.integers(0, 260))
    mode = draw(st.sampled_from(["275", "175"]))
    tokens = sticky(np.random.default_rng(seed), n)
    if mode == "175":
        tokens = LAYOUT.base_tokens(tokens)
    cut = 0
    while cut < n and draw(st.booleans()):
        a = draw(st.integers(cut, n))
        b = draw(st.integers(a, min(n, a + 80)))
        tokens[a:b] = SILENT
        cut = b
    return tokens, mode


@given(streams(), st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(0, (1 << 24) - 1),
       st.booleans(), st.one_of(st.none(), st.binary(min_size=1, max_size=32)))
@settings(max_examples=150, deadline=None)
def test_random_streams_round_trip_coded_and_plain(lm, stream, sid, seq, first, eos, voice):
    tokens, mode = stream
    eos = eos or not len(tokens)
    width = LAYOUT.mode(mode).bits
    p = Packet(sid, seq, first, tokens, width, mode, eos=eos, voice=voice)
    for model in (None, lm):
        data = encode_packet(p, model)
        q = decode_packet(data, model)
        assert (q.stream_id, q.seq, q.first_frame, q.mode, q.eos, q.voice, q.version) == (
            sid, seq, first, mode, eos, voice, 2)
        np.testing.assert_array_equal(q.tokens, tokens)
        tail = encode_packet(Packet(sid, (seq + 1) & 0xFFFF, 0, tokens[::-1].copy(), width,
                                    mode, eos=True), model)
        one, end = read_packet(data + tail, 0, model)  # self-delimiting, coded or not
        two, stop = read_packet(data + tail, end, model)
        assert end == len(data) and stop == len(data + tail) and two.eos
        np.testing.assert_array_equal(two.tokens, tokens[::-1])


@given(streams())
@settings(max_examples=40, deadline=None)
def test_gac_files_round_trip_random_streams(lm, stream) -> None:
    tokens, mode = stream
    t = Tokens(tokens, mode, "codec-x", len(tokens) * 640 - 17 if len(tokens) else None,
               voice=b"\x01" * 8)
    for model in (None, lm):
        back, info = container.loads(container.dumps(t, LAYOUT.mode(mode).bits, model), model,
                                     "codec-x")
        np.testing.assert_array_equal(back.ids, tokens)
        assert (back.mode, back.codec_id, back.num_samples, back.voice) == (
            mode, "codec-x", t.num_samples, t.voice)


def test_a_packet_costs_what_the_budget_says() -> None:
    """docs/bitstream.md: a 1 s packet with delta 0 has 2 bytes + 8 + 7 + g(seq) + 1 + 1
    header bits; the voice code adds 1 + 64; an all-silent packet is its header and runs."""
    tokens = np.arange(25) % 1024
    bits = 16 + 8 + 7 + 5 + 1 + 1 + 250  # seq 4 -> g(4) = 5 bits
    assert len(encode_packet(Packet(0, 4, 100, tokens, 10))) == (bits + 7) // 8
    with_voice = encode_packet(Packet(0, 4, 100, tokens, 10, voice=bytes(8)))
    assert len(with_voice) == (bits + 65 + 7) // 8
    quiet = encode_packet(Packet(0, 4, 100, np.full(25, SILENT), 10))
    assert len(quiet) == (16 + 8 + 7 + 5 + 1 + 1 + 1 + 1 + 7) // 8  # one run: g(0)


def test_v1_packets_and_files_still_decode(lm) -> None:
    tokens = sticky(np.random.default_rng(3), 120)
    tokens[30:40] = SILENT
    p = Packet(5, 9, 360, tokens, 10, voice=b"\xaa\xbb")
    for model in (None, lm.legacy):
        old = encode_packet(p, model, version=1)
        assert len(old) > len(encode_packet(p, lm))
        q = decode_packet(old, lm)  # a token LM decodes v1 with the tables it kept
        assert q.version == 1 and q.voice == b"\xaa\xbb"
        np.testing.assert_array_equal(q.tokens, tokens)
    t = Tokens(tokens, "275", "codec-old", 120 * 640, voice=b"\x01\x02")
    old_file = container.dumps_v1(t, 10, lm.legacy)
    back, info = container.loads(old_file, lm)
    assert back.codec_id == "codec-old" and info.bytes == len(old_file)
    np.testing.assert_array_equal(back.ids, tokens)
    other = TokenLM.fit([sticky(np.random.default_rng(9), 300)], LAYOUT)  # no v1 tables
    with pytest.raises(BitstreamError, match="version 1 packet"):
        container.loads(old_file, other)


def test_unknown_versions_are_refused_by_name() -> None:
    data = encode_packet(Packet(0, 0, 0, np.arange(5), 10, eos=True))
    with pytest.raises(BitstreamError, match="unsupported packet version 5 .*1 and 2"):
        decode_packet(bytes([(data[0] & 0x1F) | (5 << 5)]) + data[1:])
    gac = container.dumps(Tokens(np.arange(5), "275", "c"), 10)
    with pytest.raises(BitstreamError, match=r"\.gac version 3 .*1 and 2"):
        container.loads(bytes([0xA3]) + gac[1:])
    with pytest.raises(BitstreamError, match="version 7"):
        container.loads(b"GAC\x07" + bytes(40))


def test_coded_packets_need_the_senders_model(lm) -> None:
    """The model's tag is in the check byte, not on the wire: other tables fail it."""
    tokens = sticky(np.random.default_rng(4), 100)
    coded = encode_packet(Packet(0, 0, 0, tokens, 10), lm)
    with pytest.raises(BitstreamError, match="no entropy model"):
        decode_packet(coded)
    other = TokenLM.fit([sticky(np.random.default_rng(8), 300, 0.3)], LAYOUT)
    with pytest.raises(BitstreamError, match="entropy tables other than"):
        decode_packet(coded, other)


def test_damage_is_one_bitstream_error(lm) -> None:
    tokens = sticky(np.random.default_rng(5), 60)
    tokens[10:20] = SILENT
    data = encode_packet(Packet(1, 2, 120, tokens, 10, voice=bytes(8)), lm)
    for cut in range(len(data)):
        with pytest.raises(BitstreamError):
            decode_packet(data[:cut], lm)
    rng = np.random.default_rng(6)
    for _ in range(200):
        bad = bytearray(data)
        bad[rng.integers(len(bad))] ^= 1 << int(rng.integers(8))
        try:
            decode_packet(bytes(bad), lm)
        except BitstreamError:
            continue


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_garbage_never_escapes_as_another_exception(lm, blob: bytes) -> None:
    for model in (None, lm):
        try:
            decode_packet(blob, model)
        except GacflowError:
            pass
        try:
            container.loads(blob, model)
        except GacflowError:
            pass


@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 6)), max_size=30))
def test_bit_writer_and_reader_agree(values) -> None:
    w = BitWriter()
    for v, k in values:
        w.golomb(v, k)
    r = BitReader(w.to_bytes())
    assert [r.golomb(k) for _, k in values] == [v for v, _ in values]


def test_token_lm_manifest_round_trip_and_damage(lm) -> None:
    raw = lm.to_manifest()
    again = load_entropy(raw, LAYOUT)
    assert isinstance(again, TokenLM) and again.digest == lm.digest
    assert again.legacy is not None and again.legacy.digest == lm.legacy.digest
    for bad in ({**raw, "prior": raw["prior"][:-8]}, {**raw, "static": "bm90IHpsaWI="},
                {**raw, "digest": "0" * 16}, {**raw, "levels": [4, 4]}, {**raw, "inc": 0}):
        with pytest.raises(BundleError):
            load_entropy(bad, LAYOUT)


def test_the_token_lm_adapts_and_beats_the_v1_tables(lm) -> None:
    """A stream unlike the training tokens: the adaptive model learns it as it goes."""
    tokens = sticky(np.random.default_rng(11), 750, keep=0.9)
    assert lm.code_bits(tokens, "275") < 0.95 * lm.legacy.code_bits(tokens, "275")
    bits = lm.encode_bits(tokens, "275")
    assert len(bits) <= lm.code_bits(tokens, "275") + 4  # the coder ends in a few bits


def test_rate_control_holds_the_average() -> None:
    rng = np.random.default_rng(12)
    rc = RateControl(200, LAYOUT)
    pk = Packetizer(0, LAYOUT.mode("275"), 1.0, hold_frames=1)  # as the agent runs it
    sent = [rc.encode(p) for p in pk.push(rng.integers(0, 1024, 750)) + [pk.finish()]]
    bits = sum(8 * len(d) for d, _ in sent)
    assert bits / 30 <= 200 and {p.mode for _, p in sent} == {"175", "275"}
    for data, p in sent:
        np.testing.assert_array_equal(decode_packet(data).tokens, p.tokens)


def test_held_packetizer_folds_the_end_into_the_last_packet() -> None:
    pk = Packetizer(0, LAYOUT.mode("275"), 1.0, hold_frames=1)
    out = pk.push(np.zeros(75, np.int64))
    assert [p.frame_count for p in out] == [25, 25]
    last = pk.finish()
    assert last.eos and last.frame_count == 25 and last.first_frame == 50


def test_shipped_bundle_files_beat_their_budget_on_real_speech(speech: np.ndarray) -> None:
    """The shipped token LM on the sample (an unseen voice): a 4 s file within 275 / 175
    bit/s, all bytes counted, and the decoded tokens are the encoded ones."""
    pytest.importorskip("torch")
    from gacflow.model import Codec

    bundle = Bundle.load()
    codec = Codec.from_bundle()
    assert isinstance(bundle.entropy, TokenLM)
    for mode in ("275", "175"):
        tokens = codec.encode(speech[: 4 * 16000], mode)
        data = container.dumps(tokens, LAYOUT.mode(mode).bits, bundle.entropy)
        assert len(data) * 8 / 4 <= int(mode)
        back = container.loads(data, bundle.entropy, bundle.codec_id)[0]
        np.testing.assert_array_equal(back.ids, tokens.ids)
        assert back.voice == tokens.voice and back.codec_id == bundle.codec_id
