"""The NumPy front-end (edge) and its torch twin (training) agree on real audio."""

from __future__ import annotations

import numpy as np
import torch

from gacflow.features import log_mel, pad_to_frames
from gacflow.model.features import LogMel
from gacflow.spec import N_MELS


def test_numpy_and_torch_log_mel_agree(speech: np.ndarray) -> None:
    wav = pad_to_frames(speech)
    ref = log_mel(wav)
    got = LogMel()(torch.from_numpy(wav)[None])[0].numpy()
    assert ref.shape == got.shape == (len(wav) // 160, N_MELS)
    assert np.max(np.abs(ref - got)) < 1e-4


def test_features_are_causal(speech: np.ndarray) -> None:
    """Changing the future never changes past frames (the edge needs no look-ahead)."""
    wav = pad_to_frames(speech[:32000])
    a = log_mel(wav)
    b = wav.copy()
    b[16000:] = 0.0
    np.testing.assert_array_equal(a[:100], log_mel(b)[:100])
