"""Discriminators for the generative (adversarial) decoder stage.

Multi-period (waveform folded by prime periods, 2-D convs: pitch/periodicity) and
multi-resolution (STFT magnitudes, 2-D convs: spectral texture). Least-squares GAN losses
with feature matching, as used by HiFi-GAN/Vocos-style vocoders.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int, ch: int = 32) -> None:
        super().__init__()
        self.period = period
        chans = [1, ch, ch * 2, ch * 4, ch * 4]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(a, b, (5, 1), (3, 1), padding=(2, 0)))
            for a, b in zip(chans[:-1], chans[1:], strict=True)
        )
        self.out = weight_norm(nn.Conv2d(chans[-1], 1, (3, 1), padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, n = x.shape
        pad = (-n) % self.period
        x = F.pad(x, (0, pad), mode="reflect").view(b, 1, -1, self.period)
        feats = []
        for c in self.convs:
            x = F.leaky_relu(c(x), 0.1)
            feats.append(x)
        return self.out(x).flatten(1), feats


class ResolutionDiscriminator(nn.Module):
    def __init__(self, n_fft: int, ch: int = 32) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.convs = nn.ModuleList([
            # strided in frequency and time after the first layer: full-resolution 2-D
            # convs on a 1025-bin spectrogram cost ~4x more on a CPU and add little
            weight_norm(nn.Conv2d(1, ch, (3, 9), (1, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(ch, ch, (3, 9), (2, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(ch, ch, (3, 9), (2, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(ch, ch, (3, 3), padding=(1, 1))),
        ])
        self.out = weight_norm(nn.Conv2d(ch, 1, (3, 3), padding=(1, 1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        win = torch.hann_window(self.n_fft, device=x.device)
        spec = torch.stft(x, self.n_fft, self.n_fft // 4, window=win, return_complex=True)
        h = spec.abs().clamp(min=1e-5).log().unsqueeze(1)  # [B, 1, F, T]
        feats = []
        for c in self.convs:
            h = F.leaky_relu(c(h), 0.1)
            feats.append(h)
        return self.out(h).flatten(1), feats


class Discriminators(nn.Module):
    def __init__(self, periods=(2, 3, 5, 7, 11), ffts=(512, 1024, 2048)) -> None:
        super().__init__()
        self.ds = nn.ModuleList(
            [PeriodDiscriminator(p) for p in periods] + [ResolutionDiscriminator(n) for n in ffts]
        )

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [d(x) for d in self.ds]


def discriminator_loss(real, fake) -> torch.Tensor:
    return sum(((1 - r) ** 2).mean() + (f**2).mean() for (r, _), (f, _) in zip(real, fake,
                                                                             strict=True))


def generator_losses(real, fake) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial, feature matching) for the decoder."""
    adv = sum(((1 - f) ** 2).mean() for f, _ in fake)
    fm = sum(
        F.l1_loss(ff, rf.detach())
        for (_, rfs), (_, ffs) in zip(real, fake, strict=True)
        for rf, ff in zip(rfs, ffs, strict=True)
    )
    return adv, fm
