"""Reconstruction losses: multi-resolution STFT (log-magnitude + convergence) and log-mel L1."""

from __future__ import annotations

import torch
import torch.nn.functional as F

RESOLUTIONS = ((256, 64), (512, 128), (1024, 256), (2048, 512))


def stft_mag(x: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    win = torch.hann_window(n_fft, device=x.device)
    s = torch.stft(x, n_fft, hop, window=win, return_complex=True)
    return s.abs().clamp(min=1e-5)


def multi_resolution_stft(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """x: decoded, y: reference, both [B, N]."""
    total = x.new_zeros(())
    for n_fft, hop in RESOLUTIONS:
        mx, my = stft_mag(x, n_fft, hop), stft_mag(y, n_fft, hop)
        conv = torch.linalg.norm(my - mx) / torch.linalg.norm(my).clamp(min=1e-5)
        total = total + conv + F.l1_loss(mx.log(), my.log())
    return total / len(RESOLUTIONS)


def mel_l1(mel_fn: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(mel_fn(x), mel_fn(y))
