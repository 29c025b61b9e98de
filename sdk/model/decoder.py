"""Generative decoder: FSQ codes (25 Hz) -> waveform (16 kHz) through an iSTFT head.

ConvNeXt blocks at the token rate, a 4x upsampler to the 100 Hz STFT rate, more blocks,
then a head that predicts log-magnitude and phase of a 640-point STFT (Vocos-style):
all work happens at frame rate, so decoding is cheap on a CPU and batches well on a GPU.
Its size (`dim`, block counts) is the receiver-compute knob; every size reads the same
tokens. The enhancement dims of the 275 mode are zeroed and flagged when absent (175).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..spec import HOP, MELS_PER_TOKEN


@dataclass
class DecoderConfig:
    dim: int = 256
    blocks_low: int = 2
    blocks_high: int = 6
    kernel: int = 7
    mlp: int = 3
    n_fft: int = 640
    voice_dims: int = 0  # size of the per-stream voice code it is conditioned on (0: none)

    @property
    def receptive_frames(self) -> int:
        """Token frames on each side whose tokens can change a frame's audio.

        A live receiver must wait this many frames past a frame (and decode windows with
        this much context) before that frame's audio is final: it grows with depth.
        """
        low = self.blocks_low * (LOW_KERNEL // 2)
        # high blocks + the iSTFT's overlapping frames (n_fft / 2 on each side), in mel frames
        high = self.blocks_high * (self.kernel // 2) + self.n_fft // (2 * HOP) + 1
        return low + math.ceil(high / MELS_PER_TOKEN)


LOW_KERNEL = 5  # depthwise kernel of the token-rate blocks


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, kernel: int, mlp: int) -> None:
        super().__init__()
        self.dw = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, dim * mlp)
        self.pw2 = nn.Linear(dim * mlp, dim)
        self.scale = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T]
        y = self.dw(x).transpose(1, 2)
        y = self.pw2(F.gelu(self.pw1(self.norm(y)))) * self.scale
        return x + y.transpose(1, 2)


class Decoder(nn.Module):
    def __init__(self, cfg: DecoderConfig, code_dims: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.inp = nn.Linear(code_dims + 1, cfg.dim)
        self.low = nn.Sequential(
            *(ConvNeXtBlock(cfg.dim, LOW_KERNEL, cfg.mlp) for _ in range(cfg.blocks_low))
        )
        self.up = nn.ConvTranspose1d(cfg.dim, cfg.dim, MELS_PER_TOKEN, stride=MELS_PER_TOKEN)
        self.high = nn.Sequential(
            *(ConvNeXtBlock(cfg.dim, cfg.kernel, cfg.mlp) for _ in range(cfg.blocks_high))
        )
        if cfg.voice_dims:
            # The voice code shifts every frame's features before each stage. Zero-initialised:
            # a decoder grown from one without voice starts out computing exactly what it did.
            self.voice_low = nn.Linear(cfg.voice_dims, cfg.dim)
            self.voice_high = nn.Linear(cfg.voice_dims, cfg.dim)
            for layer in (self.voice_low, self.voice_high):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.norm = nn.LayerNorm(cfg.dim)
        self.bins = cfg.n_fft // 2 + 1
        self.head = nn.Linear(cfg.dim, 2 * self.bins)
        self.register_buffer("window", torch.hann_window(cfg.n_fft))

    def forward(self, codes: torch.Tensor, enh_present: torch.Tensor,
                voice: torch.Tensor | None = None) -> torch.Tensor:
        """codes [B, T, D] in [-1, 1], enh_present [B, T] in {0, 1}, voice [B, V] in [-1, 1]
        (None or zeros: no voice code) -> wav [B, T * 640]."""
        x = torch.cat([codes, enh_present.unsqueeze(-1).to(codes.dtype)], dim=-1)
        h = self.inp(x).transpose(1, 2)
        if self.cfg.voice_dims and voice is not None:
            h = h + self.voice_low(voice.to(h.dtype)).unsqueeze(-1)
        h = self.up(self.low(h))
        if self.cfg.voice_dims and voice is not None:
            h = h + self.voice_high(voice.to(h.dtype)).unsqueeze(-1)
        h = self.high(h)
        out = self.head(self.norm(h.transpose(1, 2))).float()  # [B, 4T, 2*bins]
        logmag, phase = out.split(self.bins, dim=-1)
        mag = torch.exp(logmag.clamp(max=6.0))
        spec = torch.polar(mag, phase).transpose(1, 2)  # [B, bins, 4T]
        frames = spec.shape[-1]
        return torch.istft(
            spec,
            self.cfg.n_fft,
            hop_length=HOP,
            window=self.window.float(),
            center=True,
            length=frames * HOP,
        )
