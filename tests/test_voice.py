"""The voice code: statistic, quantizer, wire format, sending policy, decoder conditioning,
and the training recipe that fits its basis and trains a decoder to read it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from gacflow import container
from gacflow.bitstream import Packet, decode_packet, encode_packet, read_packet
from gacflow.bundle import Bundle
from gacflow.errors import BitstreamError, BundleError
from gacflow.features import log_mel
from gacflow.spec import FRAME_RATE, N_MELS, TokenLayout
from gacflow.streaming import StreamingEncoder
from gacflow.tokens import Tokens
from gacflow.train.cli import main as train_cli
from gacflow.voice import VoiceSpec, VoiceStats, fit_voice_spec, voice_statistic

LAYOUT = TokenLayout()


def _spec(dims: int = 8, bits: int = 3, seed: int = 0) -> VoiceSpec:
    rng = np.random.default_rng(seed)
    return fit_voice_spec(rng.normal(size=(64, N_MELS)), dims, bits)


def test_statistic_is_the_same_whatever_the_chunking_and_level(speech: np.ndarray) -> None:
    mel = log_mel(speech[: 3 * 16000])
    whole = voice_statistic(mel)
    stats = VoiceStats()
    for a in range(0, len(mel), 7):
        stats.push(mel[a : a + 7])
    assert np.allclose(stats.mean(), whole, atol=1e-9)
    # level is removed frame by frame; only bins pushed onto the log floor (this sample is
    # G.722, nearly empty above 7 kHz) move when the input gets 6 dB quieter
    quieter = voice_statistic(log_mel(speech[: 3 * 16000] * 0.5))
    assert np.abs(quieter - whole).mean() < 0.05
    assert VoiceStats().mean() is None


def test_a_basis_has_unit_variance_components_and_codes_round_trip() -> None:
    rng = np.random.default_rng(1)
    stats = rng.normal(size=(500, N_MELS)) * np.linspace(3, 0.1, N_MELS)
    spec = fit_voice_spec(stats, dims=4, bits=3)
    assert np.allclose(spec.basis @ spec.basis.T, np.eye(4), atol=1e-9)
    z = (stats - spec.mean) @ spec.basis.T / spec.scale
    assert np.allclose(z.std(axis=0, ddof=1), 1.0, atol=1e-6)
    idx = spec.quantize(stats[0])
    assert idx.shape == (4,) and idx.min() >= 0 and idx.max() < 8
    assert np.array_equal(spec.from_bytes(spec.to_bytes(idx)), idx)
    assert spec.payload_bytes == 2  # 12 bits
    assert np.array_equal(spec.dequantize(None), np.zeros(4))
    assert spec.dequantize(np.array([0, 7, 0, 7])).tolist() == [-1, 1, -1, 1]
    again = VoiceSpec.from_manifest(json.loads(json.dumps(spec.to_manifest())))
    assert np.array_equal(again.quantize(stats[3]), spec.quantize(stats[3]))
    with pytest.raises(BitstreamError, match="voice code has 3 bytes"):
        spec.from_bytes(b"abc")
    with pytest.raises(ValueError):
        fit_voice_spec(stats[:3], dims=4)


@pytest.mark.parametrize("raw", [{}, {"bits": 3}, {"mean": [0.0] * 3, "basis": [[0.0] * 3],
                                                  "scale": [1.0], "bits": 3, "range": 2}])
def test_a_malformed_voice_section_is_one_clear_bundle_error(raw: dict) -> None:
    with pytest.raises(BundleError, match="voice section"):
        VoiceSpec.from_manifest(raw)


@pytest.mark.parametrize("dtx", [False, True])
def test_packets_carry_a_voice_code_next_to_the_tokens(dtx: bool) -> None:
    tokens = np.arange(30, dtype=np.int64) % 1024
    if dtx:
        tokens[5:12] = -1
    p = Packet(3, 9, 100, tokens, width=10, voice=b"\x12\x34\x56")
    data = encode_packet(p)
    bare = encode_packet(Packet(3, 9, 100, tokens, width=10))
    assert len(data) * 8 - len(bare) * 8 in range(9 + 24 - 7, 9 + 24 + 8)  # g(zz(-5)) + 3 B
    q = decode_packet(data)
    assert q.voice == b"\x12\x34\x56" and np.array_equal(q.tokens, tokens)
    both = data + encode_packet(Packet(3, 10, 130, tokens, width=10))
    first, end = read_packet(both, 0)
    second, _ = read_packet(both, end)
    assert first.voice == b"\x12\x34\x56" and second.voice is None
    for cut in range(1, len(data)):
        with pytest.raises(BitstreamError):
            decode_packet(data[:cut])
    for at in range(2, 7):  # the bits around the voice code
        bad = bytearray(data)
        bad[at] ^= 0x04
        with pytest.raises(BitstreamError):
            decode_packet(bytes(bad))
    with pytest.raises(BitstreamError, match="voice code must be"):
        encode_packet(Packet(3, 9, 100, tokens, width=10, voice=b""))


def test_a_gac_file_keeps_the_voice_code() -> None:
    tokens = Tokens(np.arange(50) % 1024, "275", "codec-x", 32000, voice=b"\xab\xcd\xef")
    back, info = container.loads(container.dumps(tokens, 10))
    assert back.voice == b"\xab\xcd\xef" and np.array_equal(back.ids, tokens.ids)
    plain, _ = container.loads(container.dumps(Tokens(tokens.ids, "275", "codec-x"), 10))
    assert plain.voice is None


def test_the_packetizer_sends_the_code_first_on_change_and_as_a_refresh() -> None:
    from gacflow.edge.packetizer import VOICE_REFRESH, Packetizer

    code = [b"\x01"]
    pk = Packetizer(1, LAYOUT.mode("275"), 1.0, lambda: code[0])
    sent = []
    for second in range(75):
        if second in (2, 3, 4, 10):
            code[0] = bytes([second])
        for p in pk.push(np.zeros(FRAME_RATE, np.int64)):
            sent.append((p.first_frame // FRAME_RATE, p.voice))
    carried = [(t, v) for t, v in sent if v is not None]
    # the packet completing 2 s of audio; changes after gaps of 2, 4, 8 s (the changes at
    # 2 and 4 s wait, the latest code goes); then an unchanged refresh every 30 s
    assert carried[:4] == [(1, b"\x01"), (3, b"\x03"), (7, b"\x04"), (15, b"\x0a")]
    refresh = [t for t, _ in carried[4:]]
    assert refresh == [15 + VOICE_REFRESH // FRAME_RATE]
    short = Packetizer(1, LAYOUT.mode("275"), 1.0, lambda: b"\x07")
    few = short.push(np.zeros(30, np.int64)) + [short.finish()]  # 1.2 s: the eos carries it
    assert [p.voice for p in few] == [None, b"\x07"]
    assert sum(len(v) + 1 for _, v in carried) * 8 / 75 < 2  # bit/s the code costs here
    silent = Packetizer(1, LAYOUT.mode("275"), 1.0, lambda: None)
    assert all(p.voice is None for p in silent.push(np.zeros(100, np.int64)))


def test_a_voice_conditioned_decoder_starts_as_the_plain_one_and_hears_the_code() -> None:
    from gacflow.model.decoder import Decoder, DecoderConfig

    torch.manual_seed(0)
    plain = Decoder(DecoderConfig(dim=16, blocks_low=1, blocks_high=1), 5).eval()
    voiced = Decoder(DecoderConfig(dim=16, blocks_low=1, blocks_high=1, voice_dims=4), 5).eval()
    missing = voiced.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == ["voice_high.bias", "voice_high.weight", "voice_low.bias",
                               "voice_low.weight"]
    codes, enh = torch.rand(1, 10, 5) * 2 - 1, torch.ones(1, 10)
    v = torch.ones(1, 4)
    with torch.no_grad():
        assert torch.allclose(voiced(codes, enh, v), plain(codes, enh), atol=1e-6)
        torch.nn.init.normal_(voiced.voice_low.weight)
        assert not torch.allclose(voiced(codes, enh, v), voiced(codes, enh, -v), atol=1e-4)
        assert torch.allclose(voiced(codes, enh, None), voiced(codes, enh, torch.zeros(1, 4)))


def test_streaming_and_whole_file_encoding_agree_on_the_code(speech: np.ndarray) -> None:
    from gacflow.model import Codec

    codec = Codec.from_bundle()
    codec.voice = _spec()
    wav = speech[: 4 * 16000]
    whole = codec.encode(wav)
    enc = codec.streaming_encoder()
    for a in range(0, len(wav), 1234):
        enc.push(wav[a : a + 1234])
    assert whole.voice is not None and enc.voice_code() == whole.voice
    stats = VoiceStats()
    stats.push(log_mel(wav))
    assert codec.voice.to_bytes(codec.voice.quantize(stats.mean())) == whole.voice
    assert isinstance(enc, StreamingEncoder)


def test_the_receiver_keeps_the_latest_code_and_refuses_a_foreign_one() -> None:
    from gacflow.cloud.streams import StreamTable

    spec = _spec()
    table = StreamTable(LAYOUT, voice=spec)
    code = spec.to_bytes(np.arange(8) % 8)
    s, _ = table.route("d", Packet(1, 0, 0, np.zeros(25, np.int64), 10, voice=code), 0.0)
    table.route("d", Packet(1, 1, 25, np.zeros(25, np.int64), 10), 0.1)
    assert s.voice == code
    newer = spec.to_bytes(np.full(8, 7))
    table.route("d", Packet(1, 3, 75, np.zeros(25, np.int64), 10, voice=newer), 0.2)
    table.route("d", Packet(1, 2, 50, np.zeros(25, np.int64), 10, voice=code), 0.3)  # late
    assert s.voice == newer
    with pytest.raises(BitstreamError, match="voice code has 1 bytes"):
        table.route("d", Packet(1, 4, 100, np.zeros(25, np.int64), 10, voice=b"\x00"), 0.4)


def test_recipe_fits_a_basis_trains_a_voice_decoder_and_bundles_it(
        tmp_path: Path, speech: np.ndarray) -> None:
    """The shipped path: a bundle without voice, a voice decoder grown from it (encoder
    frozen), added to the bundle, which then carries the basis under a new codec id."""
    torch.set_num_threads(1)
    src = tmp_path / "wavs"
    for i, rate in enumerate((1.0, 0.8, 1.25, 0.9)):  # four "voices": resampled copies
        (src / f"s{i}").mkdir(parents=True)
        x = speech[: 6 * 16000]
        y = np.interp(np.arange(0, len(x), rate), np.arange(len(x)), x).astype(np.float32)
        sf.write(src / f"s{i}" / "a.flac", y[: 3 * 16000], 16000)
        sf.write(src / f"s{i}" / "b.flac", y[3 * 16000 : 6 * 16000], 16000)
    from gacflow.train.corpus import build, folder_sources

    corpus = tmp_path / "corpus"
    build(corpus, {"train": folder_sources(src), "valid": folder_sources(src)})
    basis = tmp_path / "voice.json"
    assert train_cli(["voice-fit", "--data", str(corpus), "--out", str(basis),
                      "--dims", "2"]) == 0
    common = ("steps = 2\nbatch = 2\nsegment_frames = 8\nvalid_every = 2\nwarmup = 1\n"
              "threads = 1\n[encoder]\ndim = 16\nhidden = 16\ndilations = [1, 2]\n"
              "[decoder]\ndim = 16\nblocks_low = 1\nblocks_high = 1\n")
    fit = ["fit", "--data", str(corpus)]
    (tmp_path / "plain.toml").write_text("gan_start = 0\ngan_crop_frames = 4\n" + common)
    assert train_cli(fit + ["--config", str(tmp_path / "plain.toml"), "--run",
                            str(tmp_path / "plain")]) == 0
    out = tmp_path / "bundle"
    assert train_cli(["bundle", str(tmp_path / "plain" / "ckpt.pt"), "--out", str(out)]) == 0
    plain_id = Bundle.load(out).codec_id

    (tmp_path / "no-basis.toml").write_text(common + "voice_dims = 2\n")
    assert train_cli(fit + ["--config", str(tmp_path / "no-basis.toml"),
                            "--run", str(tmp_path / "x")]) == 2
    (tmp_path / "v.toml").write_text(f'voice = "{basis}"\ninit_from = "{out}"\n'
                                     "freeze_encoder = true\n" + common + "voice_dims = 2\n")
    assert train_cli(fit + ["--config", str(tmp_path / "v.toml"), "--run",
                            str(tmp_path / "run")]) == 0
    ck = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=False)
    assert ck["voice"] == json.loads(basis.read_text())
    assert train_cli(["add-decoder", str(tmp_path / "run" / "ckpt.pt"), "--bundle", str(out),
                      "--size", "voiced", "--default"]) == 0
    b = Bundle.load(out)
    assert b.voice is not None and b.voice.dims == 2 and b.codec_id != plain_id

    from gacflow.model import Codec

    codec = Codec.from_bundle(out)
    tokens = codec.encode(speech[:16000])
    assert tokens.voice is not None and len(tokens.voice) == 1
    back, _ = container.loads(container.dumps(tokens, 10), codec_id=codec.codec_id)
    assert back.voice == tokens.voice
    assert np.isfinite(codec.decode(back)).all()
    assert np.isfinite(Codec.from_bundle(out, decoder="small").decode(back)).all()
    with pytest.raises(BitstreamError):
        codec.decode(Tokens(tokens.ids, "275", tokens.codec_id, voice=b"\x00\x00"))
    from gacflow.cli.main import main as gacflow_cli

    wav = tmp_path / "in.wav"
    sf.write(wav, speech[: 2 * 16000], 16000)
    gac = tmp_path / "x.gac"
    assert gacflow_cli(["encode", str(wav), str(gac), "--bundle", str(out)]) == 0
    assert container.read(gac, b.entropy)[0].voice == codec.encode(speech[: 2 * 16000]).voice
    assert gacflow_cli(["decode", str(gac), str(tmp_path / "x.wav"), "--bundle", str(out)]) == 0

    # an adapter run: only the voice layers learn, from a checkpoint (discriminators too)
    (tmp_path / "adapter.toml").write_text(
        f'voice = "{basis}"\ninit_from = "{tmp_path / "plain" / "ckpt.pt"}"\n'
        'freeze_encoder = true\ntrain_only = ["decoder.voice_"]\ngan_start = 0\n'
        "gan_crop_frames = 4\n" + common + "voice_dims = 2\n")
    assert train_cli(fit + ["--config", str(tmp_path / "adapter.toml"), "--run",
                            str(tmp_path / "adapter")]) == 0
    start = torch.load(tmp_path / "plain" / "ckpt.pt", weights_only=False)["model"]
    after = torch.load(tmp_path / "adapter" / "ckpt.pt", weights_only=False)["model"]
    assert all(torch.equal(after[k], v) for k, v in start.items())
    assert any(after[k].abs().sum() > 0 for k in after if k.startswith("decoder.voice_"))

    other = ck | {"voice": ck["voice"] | {"range": 3.0}}  # another basis: other streams
    torch.save(other, tmp_path / "other.pt")
    assert train_cli(["add-decoder", str(tmp_path / "other.pt"), "--bundle", str(out),
                      "--size", "x"]) == 2
