"""Pitch targets and the pitch auxiliary: F0 read from the token sequence.

Decoded speech of an unseen speaker keeps the median F0 but not the contour (pYIN on
held-out clips: median error ~50 cents against Codec 2's ~30, docs/model.md), and the
contour is part of who is speaking. Like the phoneme CTC (`ctc.py`), a small training-only
head must read F0 and voicing from the *quantized* codes, so the encoder spends some of
its bits on the contour. Targets come from a YIN estimator in torch, batched over every
crop's token frames, so they cost no preprocessing and follow any augmentation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gacflow.spec import FRAME_SAMPLES, SAMPLE_RATE

F0_MIN, F0_MAX = 60.0, 500.0
WINDOW = 640  # one token frame of samples per analysis window
THRESHOLD = 0.15  # YIN's absolute threshold on the normalised difference
VOICED_BELOW = 0.3  # a frame whose best normalised difference is above this is unvoiced
LOG2_F0_CENTRE, LOG2_F0_SCALE = 7.5, 1.0  # log2(180 Hz) ~ 7.5; targets are ~unit-scale


@torch.no_grad()
def f0_targets(wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """wav [B, N] -> (log2 F0 [B, T], voiced [B, T] bool), one value per token frame.

    YIN (de Cheveigne & Kawahara 2002): difference function by FFT, cumulative-mean
    normalisation, first dip below the threshold in 60-500 Hz, else the global minimum;
    parabolic interpolation. Frame t is centred on the middle of token frame t.
    """
    b, n = wav.shape
    frames = n // FRAME_SAMPLES
    lag_max = int(SAMPLE_RATE / F0_MIN)
    lag_min = int(SAMPLE_RATE / F0_MAX)
    span = WINDOW + lag_max
    pad_left = (span - FRAME_SAMPLES) // 2
    x = F.pad(wav.float(), (pad_left, span))
    seg = x.unfold(1, span, FRAME_SAMPLES)[:, :frames]  # [B, T, span]
    seg = seg - seg.mean(-1, keepdim=True)
    size = 1 << (2 * span - 1).bit_length()
    head = seg[..., :WINDOW]
    spec = torch.fft.rfft(seg, size)
    corr = torch.fft.irfft(torch.fft.rfft(head, size).conj() * spec, size)[..., : lag_max + 1]
    sq = F.pad(seg.pow(2).cumsum(-1), (1, 0))
    lags = torch.arange(lag_max + 1, device=wav.device)
    energy0 = sq[..., WINDOW : WINDOW + 1]
    energy_lag = sq[..., lags + WINDOW] - sq[..., lags]
    diff = (energy0 + energy_lag - 2 * corr).clamp(min=0)
    cum = diff[..., 1:].cumsum(-1)
    norm = torch.ones_like(diff)
    norm[..., 1:] = diff[..., 1:] * lags[1:] / cum.clamp(min=1e-9)
    band = norm[..., lag_min : lag_max + 1]
    below = band < THRESHOLD
    # first dip: the first lag below the threshold, then walk down to its local minimum
    first = torch.where(below.any(-1), below.float().argmax(-1), band.argmin(-1))
    idx = first.clone()
    for _ in range(lag_max):
        nxt = (idx + 1).clamp(max=band.shape[-1] - 1)
        step = band.gather(-1, nxt[..., None])[..., 0] < band.gather(-1, idx[..., None])[..., 0]
        if not step.any():
            break
        idx = torch.where(step, nxt, idx)
    best = band.gather(-1, idx[..., None])[..., 0]
    left = band.gather(-1, (idx - 1).clamp(min=0)[..., None])[..., 0]
    right = band.gather(-1, (idx + 1).clamp(max=band.shape[-1] - 1)[..., None])[..., 0]
    denom = left - 2 * best + right
    shift = torch.where(denom.abs() > 1e-9, 0.5 * (left - right) / denom, torch.zeros_like(denom))
    lag = (idx + lag_min).float() + shift.clamp(-1, 1)
    loud = energy0[..., 0] > WINDOW * 1e-6  # -60 dBFS: silence is unvoiced
    voiced = (best < VOICED_BELOW) & loud
    return torch.log2(SAMPLE_RATE / lag), voiced


class PitchHead(nn.Module):
    """Codes [B, T, D] -> per-frame (voicing logit, normalised log2 F0) [B, T, 2]."""

    def __init__(self, code_dims: int, dim: int = 64) -> None:
        super().__init__()
        self.inp = nn.Conv1d(code_dims, dim, 5, padding=2)
        self.mid = nn.Conv1d(dim, dim, 5, padding=2)
        self.out = nn.Conv1d(dim, 2, 1)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.inp(codes.transpose(1, 2)))
        return self.out(F.gelu(self.mid(h))).transpose(1, 2)


def pitch_loss(pred: torch.Tensor, log_f0: torch.Tensor, voiced: torch.Tensor) -> torch.Tensor:
    """Voicing cross-entropy on every frame + L1 on normalised log2 F0 where voiced."""
    t = min(pred.shape[1], log_f0.shape[1])
    pred, log_f0, voiced = pred[:, :t].float(), log_f0[:, :t], voiced[:, :t]
    l_voice = F.binary_cross_entropy_with_logits(pred[..., 0], voiced.float())
    target = (log_f0 - LOG2_F0_CENTRE) / LOG2_F0_SCALE
    err = (pred[..., 1] - target).abs()
    l_f0 = (err * voiced).sum() / voiced.sum().clamp(min=1)
    return l_voice + l_f0


def cents_error(pred: torch.Tensor, log_f0: torch.Tensor, voiced: torch.Tensor) -> float:
    """Median |F0 error| in cents over frames voiced in the target (for logs and probes)."""
    t = min(pred.shape[1], log_f0.shape[1])
    est = pred[:, :t, 1] * LOG2_F0_SCALE + LOG2_F0_CENTRE
    err = (1200 * (est - log_f0[:, :t]).abs())[voiced[:, :t]]
    return float(err.median()) if err.numel() else float("nan")
