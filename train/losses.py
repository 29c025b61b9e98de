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


def rounding_margin(u: torch.Tensor, margin: float) -> torch.Tensor:
    """Penalty on latents closer than `margin` to an FSQ rounding boundary (k + 0.5).

    Why: the edge computes u with an INT8 graph whose error is a few hundredths of a level;
    a latent that sits near a boundary then rounds the other way and the token differs from
    the float encoder's. Latents kept `margin` away survive that error.
    """
    frac = u.float() - torch.floor(u.float())
    gap = (frac - 0.5).abs()  # distance to the boundary at k + 0.5
    return F.relu(margin - gap).pow(2).mean() / margin**2
