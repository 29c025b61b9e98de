"""The neural token model (sdk/tokennet.py, issue 23): exact integer inference, so what
one machine codes another decodes; random streams with DTX runs round-trip in both modes;
the manifest keeps it bit for bit; a damaged net is refused; training beats the tables
on streams with more than one frame of memory."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_bitstream_v2 import sticky, streams

from gacflow.bitstream import Packet, decode_packet, encode_packet
from gacflow.errors import BitstreamError, BundleError
from gacflow.spec import SILENT, TokenLayout
from gacflow.tokenlm import NeuralTokenLM, TokenLM, load_entropy
from gacflow.tokennet import counts_from_logits

pytest.importorskip("torch")
LAYOUT = TokenLayout()


def second_order(rng: np.random.Generator, n: int) -> np.ndarray:
    """Tokens that follow a pattern two frames long: a table of one frame cannot see it."""
    size = LAYOUT.mode("275").codebook_size
    out = np.zeros(n, np.int64)
    out[:2] = rng.integers(0, size, 2)
    for t in range(2, n):
        out[t] = (out[t - 2] * 7 + 3) % size if rng.random() < 0.8 else rng.integers(0, size)
    return out


@pytest.fixture(scope="module")
def models() -> tuple[TokenLM, NeuralTokenLM]:
    from gacflow.train.lm_fit import fit_neural

    rng = np.random.default_rng(0)
    seqs = [second_order(rng, 200) for _ in range(30)] + [sticky(rng, 200) for _ in range(30)]
    tables = TokenLM.fit(seqs, LAYOUT, min_count=2)
    return tables, fit_neural(seqs, [f"v{k % 12}" for k in range(len(seqs))], tables)


@given(st.lists(st.integers(-4000, 4000), min_size=2, max_size=8), st.sampled_from([64, 4096]))
def test_counts_from_logits_are_positive_and_sum_to_the_total(logits, total):
    c = counts_from_logits(logits, total)
    assert sum(c) == total and min(c) >= 1 and len(c) == len(logits)


@given(streams())
@settings(max_examples=60, deadline=None)
def test_random_streams_round_trip_through_packets(models, stream):
    tokens, mode = stream
    lm = models[1]
    width = LAYOUT.mode(mode).bits
    p = Packet(3, 7, 175, tokens, width, mode, eos=not len(tokens))
    back = decode_packet(encode_packet(p, lm), lm)
    assert np.array_equal(back.tokens, tokens) and back.mode == mode


def test_the_net_codes_patterns_the_tables_cannot_see(models):
    tables, lm = models
    test = [second_order(np.random.default_rng(99), 300) for _ in range(4)]
    net_bits = sum(lm.code_bits(s, "275") for s in test)
    assert net_bits < 0.9 * sum(tables.code_bits(s, "275") for s in test)
    s = test[0].copy()
    s[50:60] = SILENT  # a gap restarts the history, as the receiver sees it
    bits = lm.encode_bits(s, "275")
    out, end = lm.decode_bits(bits, 0, s != SILENT, "275")
    assert np.array_equal(out, s) and end == len(bits)


def test_the_manifest_keeps_the_net_and_refuses_a_damaged_one(models):
    lm = models[1]
    raw = lm.to_manifest()
    again = load_entropy(raw, LAYOUT)
    assert isinstance(again, NeuralTokenLM) and again.digest == lm.digest
    s = second_order(np.random.default_rng(5), 120)
    assert again.encode_bits(s, "275") == lm.encode_bits(s, "275")
    bad = {**raw, "net": {**raw["net"], "layers": {**raw["net"]["layers"]}}}
    bad["net"]["layers"]["w1"] = {**raw["net"]["layers"]["w1"], "data": "AAAA"}
    with pytest.raises(BundleError, match="w1"):
        load_entropy(bad, LAYOUT)
    changed = {**raw, "mix": [1, 1, 5] if list(raw["mix"]) != [1, 1, 5] else [1, 1, 3]}
    with pytest.raises(BundleError, match="digest"):
        load_entropy(changed, LAYOUT)
    with pytest.raises(BundleError, match="mixture weights"):
        load_entropy({**raw, "mix": [1, 2], "digest": None}, LAYOUT)


def test_packets_of_a_replaced_model_still_read_after_a_refit(models):
    """lm-fit keeps the models it replaces (`previous`): a stored packet coded with the
    old one decodes, a packet of the new one too, and both refuse damage."""
    from gacflow.train.lm_fit import kept_models

    tables, lm = models
    s = sticky(np.random.default_rng(8), 90)
    old_packet = encode_packet(Packet(0, 0, 0, s, 10, eos=True), tables)
    raw = {**lm.to_manifest(), "previous": kept_models(tables.to_manifest())}
    now = load_entropy(raw, LAYOUT)
    back = decode_packet(old_packet, now)
    assert back.coded and np.array_equal(back.tokens, s)
    new_packet = encode_packet(Packet(0, 0, 0, s, 10, eos=True), now)
    assert np.array_equal(decode_packet(new_packet, now).tokens, s)
    with pytest.raises(BitstreamError):
        decode_packet(old_packet, lm)  # without the kept model: refused, not misread
    damaged = bytearray(old_packet)
    damaged[len(damaged) // 2] ^= 0x10
    with pytest.raises(BitstreamError):
        decode_packet(bytes(damaged), now)


def test_lm_fit_cli_fits_the_net_keeps_the_old_model_and_still_reads_its_files(
        tmp_path, speech, bundle_dir):
    """`gacflow-train lm-fit` end to end on folders of WAVs: a neural section with the
    replaced model kept, and a .gac written before the refit still decodes after it."""
    import shutil

    from gacflow import container
    from gacflow.audio import write_wav
    from gacflow.bundle import Bundle
    from gacflow.model import Codec
    from gacflow.train.cli import main

    bundle = tmp_path / "bundle"
    shutil.copytree(bundle_dir, bundle)
    for k in range(12):  # 12 "speakers" of 1.5 s each, and one held-out folder
        folder = tmp_path / "data" / f"v{k}"
        folder.mkdir(parents=True)
        write_wav(folder / "a.wav", speech[k * 24000:(k + 1) * 24000])
    (tmp_path / "held").mkdir()
    write_wav(tmp_path / "held" / "b.wav", speech[-48000:])
    codec = Codec.from_bundle(bundle)
    before = codec.encode(speech[:64000], "275")
    old_file = tmp_path / "old.gac"
    container.write(old_file, before, 10, codec.entropy)
    main(["lm-fit", "--bundle", str(bundle), "--data", str(tmp_path / "data"),
          "--held-out", str(tmp_path / "held")])
    refit = Bundle.load(bundle).entropy
    assert isinstance(refit, NeuralTokenLM) and refit.tag != codec.entropy.tag
    assert refit.previous[0].digest == codec.entropy.digest  # kept, newest first
    tokens, _ = container.read(old_file, refit, codec.codec_id)
    assert np.array_equal(tokens.ids, before.ids)
