"""FSQ in torch for training: bounded latent, straight-through rounding, nested modes."""

from __future__ import annotations

import torch


def bound(z: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Unbounded encoder output -> u in [0, L-1] per dim (what edge graphs output)."""
    return torch.sigmoid(z) * (levels - 1)


def quantize_ste(u: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Round with a straight-through gradient and map to codes in [-1, 1]."""
    q = u + (torch.round(u) - u).detach()
    return q / (levels - 1) * 2.0 - 1.0


def indices_to_codes(idx: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    return idx.to(torch.float32) / (levels - 1) * 2.0 - 1.0
