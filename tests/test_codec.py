"""The torch codec API: streaming equals whole-file encoding, nested modes, decode shape."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gacflow.bitstream import SILENT
from gacflow.errors import CodecMismatchError
from gacflow.model import Codec
from gacflow.spec import FRAME_SAMPLES
from gacflow.tokens import Tokens


@pytest.fixture(scope="module")
def codec() -> Codec:
    torch.set_num_threads(1)
    return Codec.from_bundle()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_equals_whole_file_for_random_chunks(codec: Codec, speech: np.ndarray,
                                                       seed: int) -> None:
    wav = speech[: 6 * 16000 + 123]
    whole = codec.encode(wav, "275").ids
    rng = np.random.default_rng(seed)
    enc = codec.streaming_encoder("275")
    out, pos = [], 0
    while pos < len(wav):
        n = int(rng.choice([1, 7, 160, 639, 640, 641, 3000, 16000]))
        out.append(enc.push(wav[pos : pos + n]))
        pos += n
    out.append(enc.flush())
    np.testing.assert_array_equal(np.concatenate(out), whole)
    assert len(whole) == -(-len(wav) // FRAME_SAMPLES)


def test_175_tokens_are_the_high_bits_of_275(codec: Codec, speech: np.ndarray) -> None:
    wav = speech[: 3 * 16000]
    t275, t175 = codec.encode(wav, "275").ids, codec.encode(wav, "175").ids
    np.testing.assert_array_equal(t275 >> 4, t175)
    assert t175.max() < 64 and t275.max() < 1024


def test_decode_length_and_dtx_silence(codec: Codec, speech: np.ndarray) -> None:
    wav = speech[: 4 * 16000 + 50]
    tokens = codec.encode(wav, "175")
    out = codec.decode(tokens)
    assert out.shape == wav.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert np.abs(out).max() > 0.01
    tokens.ids[25:50] = SILENT
    out = codec.decode(tokens)
    assert np.abs(out[26 * FRAME_SAMPLES : 49 * FRAME_SAMPLES]).max() < 1e-6


def test_decoded_speech_tracks_the_input_energy(codec: Codec, speech: np.ndarray) -> None:
    """A trained codec follows the input's loud and quiet frames (an untrained one does not)."""
    wav = speech[: 10 * 16000]
    out = codec.decode(codec.encode(wav, "275"))
    e_in = np.log(np.square(wav).reshape(-1, FRAME_SAMPLES).mean(1) + 1e-6)
    e_out = np.log(np.square(out).reshape(-1, FRAME_SAMPLES).mean(1) + 1e-6)
    assert np.corrcoef(e_in, e_out)[0, 1] > 0.8


def test_foreign_tokens_refused(codec: Codec) -> None:
    with pytest.raises(CodecMismatchError):
        codec.decode(Tokens(np.zeros(5), "275", "someone-else"))
