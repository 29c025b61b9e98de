"""Causal semantic encoder: log-mel (100 Hz) -> bounded FSQ latent (25 Hz).

Small on purpose (runs INT8 on a Pi): a patchify stem turns each token frame's four
mel frames into one vector, then dilated depthwise-separable causal blocks add ~1 s of
past context. ReLU and no normalisation layers keep the graph INT8-friendly.

Two equivalent forms: `forward` over whole sequences (training) and `step` over one
token frame with explicit conv state (streaming, export). Inference always uses `step`
so that tokens never depend on how audio was chunked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..spec import MELS_PER_TOKEN, N_MELS


@dataclass
class EncoderConfig:
    dim: int = 192
    hidden: int = 384
    kernel: int = 3
    dilations: tuple[int, ...] = (1, 2, 4, 8, 1, 2, 4, 8)
    latent_dims: int = 5


class CausalBlock(nn.Module):
    def __init__(self, dim: int, hidden: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.context = (kernel - 1) * dilation
        self.dw = nn.Conv1d(dim, dim, kernel, dilation=dilation, groups=dim)
        self.pw1 = nn.Conv1d(dim, hidden, 1)
        self.pw2 = nn.Conv1d(hidden, dim, 1)
        self.scale = nn.Parameter(torch.full((1, dim, 1), 0.1))

    def _mix(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.pw2(F.relu(self.pw1(y)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._mix(x, self.dw(F.pad(x, (self.context, 0))))

    def step(self, x: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, C, 1], state [B, C, context] -> output [B, C, 1], new state."""
        buf = torch.cat([state, x], dim=-1)
        return self._mix(x, self.dw(buf)), buf[:, :, 1:]


class Encoder(nn.Module):
    def __init__(self, cfg: EncoderConfig, levels: tuple[int, ...]) -> None:
        super().__init__()
        self.cfg = cfg
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float32))
        self.register_buffer("mel_mean", torch.zeros(N_MELS))
        self.register_buffer("mel_std", torch.ones(N_MELS))
        self.stem = nn.Conv1d(N_MELS, cfg.dim, MELS_PER_TOKEN, stride=MELS_PER_TOKEN)
        self.blocks = nn.ModuleList(
            CausalBlock(cfg.dim, cfg.hidden, cfg.kernel, d) for d in cfg.dilations
        )
        self.head = nn.Conv1d(cfg.dim, cfg.latent_dims, 1)

    def _norm(self, mel: torch.Tensor) -> torch.Tensor:
        """[B, T, 80] log-mel -> [B, 80, T] standardised."""
        return ((mel - self.mel_mean) / self.mel_std).transpose(1, 2)

    def _bound(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.head(h)).transpose(1, 2) * (self.levels - 1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """[B, 4T, 80] log-mel -> bounded latent u [B, T, D] with u_i in [0, L_i - 1]."""
        h = F.relu(self.stem(self._norm(mel)))
        for b in self.blocks:
            h = b(h)
        return self._bound(h)

    def initial_state(self, batch: int = 1) -> list[torch.Tensor]:
        return [torch.zeros(batch, self.cfg.dim, b.context) for b in self.blocks]

    def step(
        self, mel: torch.Tensor, state: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One token frame: mel [B, 4, 80] -> u [B, 1, D], new state."""
        h = F.relu(self.stem(self._norm(mel)))
        new_state = []
        for b, s in zip(self.blocks, state, strict=True):
            h, s2 = b.step(h, s)
            new_state.append(s2)
        return self._bound(h), new_state
