"""FSQ in torch for training: straight-through rounding of the encoder's bounded latent.

The bound itself lives in the encoder graph (`Encoder._bound`), the integer step for
inference in `gacflow.fsq` (NumPy, shared by every backend).
"""

from __future__ import annotations

import torch


def quantize_ste(u: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Round with a straight-through gradient and map to codes in [-1, 1]."""
    q = u + (torch.round(u) - u).detach()
    return q / (levels - 1) * 2.0 - 1.0
