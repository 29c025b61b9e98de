"""The envelope voice code and the receiver's timbre matching (sdk/timbre.py): the code
rebuilds the sender's envelope, the EQ moves decoded audio onto it (whole files and live
streams alike), and the shipped codec sends and uses it."""

from __future__ import annotations

import numpy as np
import pytest

from gacflow.bitstream import Packet
from gacflow.bundle import Bundle
from gacflow.errors import BundleError
from gacflow.features import log_mel
from gacflow.spec import N_MELS
from gacflow.timbre import MAX_GAIN_DB, TimbreMatcher, eq_taps, file_taps, flat_taps, gain_curve
from gacflow.voice import VoiceSpec, VoiceStats, dct_basis, fit_envelope_spec, voice_statistic


def _tilt(wav: np.ndarray, db_per_octave: float) -> np.ndarray:
    """A spectral tilt around 1 kHz: what a decoder that gets the balance wrong does."""
    n = len(wav)
    f = np.fft.rfftfreq(n, 1 / 16000)
    g = 10 ** (db_per_octave * np.log2(np.maximum(f, 60.0) / 1000.0) / 20)
    return np.fft.irfft(np.fft.rfft(wav) * g, n).astype(np.float32)


@pytest.fixture(scope="module")
def spec(speech: np.ndarray) -> VoiceSpec:
    """An envelope code fitted on pieces of the sample at several tilts (many 'voices')."""
    pieces = [_tilt(speech[i * 32000:(i + 1) * 32000], t)
              for i in range(4) for t in (-4.0, -2.0, 0.0, 2.0, 4.0)]
    return fit_envelope_spec(np.stack([voice_statistic(log_mel(p), 0.5) for p in pieces]))


def _stat(wav: np.ndarray) -> np.ndarray:
    return voice_statistic(log_mel(wav), 0.5)


def test_the_dct_basis_is_orthonormal_and_leaves_out_the_mean() -> None:
    b = dct_basis(20)
    assert np.allclose(b @ b.T, np.eye(20), atol=1e-9)
    assert np.allclose(b.sum(axis=1), 0.0, atol=1e-9)  # a level change is not in the code


def test_the_code_rebuilds_each_coefficient_to_half_a_step(spec, speech) -> None:
    stat = _stat(_tilt(speech, 3.0))
    rebuilt = spec.reconstruct(spec.from_bytes(spec.to_bytes(spec.quantize(stat))))
    sent, got = spec.basis @ (stat - spec.mean), spec.basis @ (rebuilt - spec.mean)
    assert np.all(np.abs(sent) < spec.range * spec.scale)  # inside the range: not clipped
    step = 2 * spec.range * spec.scale / (spec.levels - 1)
    assert np.all(np.abs(got - sent) <= step / 2 + 1e-9)
    assert spec.payload_bytes == 8  # 16 coefficients x 4 bits


def test_the_weighted_statistic_is_exact_under_any_chunking(speech) -> None:
    mel = log_mel(speech[: 3 * 16000])
    stats = VoiceStats(0.5)
    for a in range(0, len(mel), 7):
        stats.push(mel[a:a + 7])
    assert np.allclose(stats.mean(), voice_statistic(mel, 0.5), atol=1e-9)


def apply_taps(wav: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """The decoders' batched filter on one signal."""
    import torch

    from gacflow.model.codec import equalize

    return equalize(torch.from_numpy(wav)[None], taps[None])[0].numpy()


def match_timbre(wav: np.ndarray, code: bytes, spec: VoiceSpec) -> np.ndarray:
    return apply_taps(wav, file_taps(wav, code, spec))


def test_a_flat_eq_changes_nothing(speech) -> None:
    x = speech[:16000]
    assert np.abs(apply_taps(x, flat_taps()) - x).max() < 1e-3


def test_the_batched_filter_is_a_centred_convolution(speech) -> None:
    import torch

    from gacflow.model.codec import equalize

    x = np.stack([speech[:8000], speech[8000:16000]])
    taps = np.stack([eq_taps(np.linspace(-2, 2, N_MELS)), eq_taps(np.linspace(1, -1, N_MELS))])
    got = equalize(torch.from_numpy(x), taps).numpy()
    for row, t, g in zip(x, taps, got, strict=True):
        assert np.abs(np.convolve(row, t, mode="same") - g).max() < 1e-5


def test_the_gain_is_limited_and_scaled_by_strength() -> None:
    target, decoded = np.full(N_MELS, 10.0), np.zeros(N_MELS)
    limit = MAX_GAIN_DB * np.log(10) / 10
    assert np.allclose(gain_curve(target, decoded), limit)
    assert np.allclose(gain_curve(target, decoded, 0.01), 0.1)


def test_matching_pulls_a_wrong_balance_back_onto_the_senders(spec, speech) -> None:
    sent = speech[: 8 * 16000]
    code = spec.to_bytes(spec.quantize(_stat(sent)))
    decoded = _tilt(sent, -4.0)  # the receiver's audio is duller than the speaker
    fixed = match_timbre(decoded, code, spec)
    before = np.abs(_stat(decoded) - _stat(sent)).mean()
    after = np.abs(_stat(fixed) - _stat(sent)).mean()
    assert after < 0.35 * before
    assert len(fixed) == len(decoded)
    lag = np.argmax(np.correlate(fixed[8000:8400], sent[8000:8400], "full")) - 399
    assert lag == 0  # zero phase: no delay


def test_a_live_stream_fades_the_eq_in_and_ends_where_the_file_does(spec, speech) -> None:
    sent = speech[: 8 * 16000]
    code = spec.to_bytes(spec.quantize(_stat(sent)))
    decoded = _tilt(sent, -4.0)
    live = TimbreMatcher(spec)
    assert live.taps(code) is None  # nothing decoded yet: nothing to compare with
    first = None
    for a in range(0, len(decoded), 6400):
        live.observe(decoded[a:a + 6400])
        if first is None:
            first = live.taps(code)
        assert live.taps(None) is None  # no code yet: the stream plays as decoded
    whole = eq_taps(gain_curve(spec.reconstruct(spec.from_bytes(code)), _stat(decoded)))
    flat = eq_taps(np.zeros(N_MELS))
    assert np.abs(first - flat).max() < np.abs(whole - flat).max()  # 0.4 s: a weak EQ
    assert np.abs(live.taps(code) - whole).max() < 1e-3  # the whole stream: the file's EQ


def test_a_malformed_envelope_section_is_one_clear_bundle_error(spec) -> None:
    raw = spec.to_manifest()
    assert VoiceSpec.from_manifest(raw).kind == "envelope"
    for bad in ({"kind": "wavelet"}, {"weighting": 0.0}):
        with pytest.raises(BundleError):
            VoiceSpec.from_manifest({**raw, **bad})


def test_the_shipped_codec_sends_the_code_and_sounds_closer_to_the_speaker(speech) -> None:
    from gacflow.model import Codec

    codec = Codec.from_bundle()
    assert codec.matches_timbre and Bundle.load().voice.kind == "envelope"
    x = speech[: 10 * 16000]
    tokens = codec.encode(x)
    assert tokens.voice is not None and len(tokens.voice) == codec.voice.payload_bytes
    with_code = codec.decode(tokens)
    tokens.voice = None
    plain = codec.decode(tokens)
    assert np.abs(_stat(with_code) - _stat(x)).mean() < np.abs(_stat(plain) - _stat(x)).mean()


def test_the_live_receiver_equalises_a_stream_that_sent_its_code(speech) -> None:
    from gacflow.cloud.decoder_service import DecoderService
    from gacflow.cloud.streams import StreamTable
    from gacflow.model import Codec

    codec = Codec.from_bundle(decoder="small")
    x = speech[: 12 * 16000]
    tokens = codec.encode(x)
    out = {}
    for voice in (tokens.voice, None):
        table, svc, audio = StreamTable(codec.layout, voice=codec.voice), DecoderService(codec), []
        ids = tokens.ids
        for k in range(0, len(ids), 25):
            p = Packet(0, k // 25, k, ids[k:k + 25], 10, "275", eos=k + 25 >= len(ids),
                       voice=voice if k == 0 else None)
            table.route("dev", p, 0.0)
            ended = table.tick(0.0)
            jobs = [j for s in table.sessions.values() for j in svc.plan(s)]
            jobs += [j for s in ended for j in svc.plan(s, final=True)]
            audio += [j.audio for j in svc.run(jobs)]
        out[voice is not None] = np.concatenate(audio)
    assert len(out[True]) == len(out[False]) == len(tokens.ids) * 640
    tail = slice(-6 * 16000, None)  # once the live statistic has settled
    err = {k: np.abs(_stat(v[tail]) - _stat(x[tail])).mean() for k, v in out.items()}
    assert err[True] < err[False]
