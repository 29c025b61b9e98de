"""Torch twin of `gacflow.features.log_mel`, vectorised over a batch for training.

Same causal framing, window, filterbank and floor as the NumPy front-end; a test checks
that both agree to 1e-4 on real audio.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import features as npf
from ..spec import FRAME_SAMPLES, HOP, LOG_FLOOR, N_FFT, WIN


class LogMel(torch.nn.Module):
    """[B, N] waveform (N a multiple of 640) -> [B, N/160, 80] log-mel."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("window", torch.from_numpy(npf.analysis_window()[:WIN].copy()))
        self.register_buffer("fb", torch.from_numpy(npf.mel_filterbank().copy()))

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.shape[-1] % FRAME_SAMPLES:
            raise ValueError("waveform length must be a multiple of 640 samples")
        x = F.pad(wav, (npf.CONTEXT, 0))
        frames = x.unfold(-1, WIN, HOP) * self.window  # [B, T, WIN]
        frames = F.pad(frames, (0, N_FFT - WIN))
        spec = torch.fft.rfft(frames, dim=-1)
        power = spec.real**2 + spec.imag**2
        return torch.log(torch.clamp(power @ self.fb, min=LOG_FLOOR))
