"""The trainable codec: encoder + FSQ + decoder in one module, and its checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from gacflow.fileio import atomic_path
from gacflow.model.decoder import Decoder, DecoderConfig
from gacflow.model.encoder import Encoder, EncoderConfig
from gacflow.model.features import LogMel
from gacflow.model.fsq import quantize_ste
from gacflow.spec import TokenLayout


class CodecModel(nn.Module):
    def __init__(self, enc_cfg: EncoderConfig, dec_cfg: DecoderConfig, layout: TokenLayout):
        super().__init__()
        self.layout = layout
        self.mel = LogMel()
        self.encoder = Encoder(enc_cfg, layout.all_levels)
        self.decoder = Decoder(dec_cfg, len(layout.all_levels))

    def forward(self, wav: torch.Tensor, enh_present: torch.Tensor) -> torch.Tensor:
        """wav [B, N] -> reconstruction [B, N]; enh_present [B] selects 275 (1) or 175 (0)."""
        u = self.encoder(self.mel(wav))
        codes = quantize_ste(u, self.encoder.levels)
        n_base = len(self.layout.base_levels)
        keep = torch.ones_like(codes)
        keep[..., n_base:] = enh_present[:, None, None]
        frames = enh_present[:, None].expand(-1, codes.shape[1])
        return self.decoder(codes * keep, frames)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomic save: a power cut never leaves a half-written checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)
