"""The trainable codec: encoder + FSQ + decoder in one module, and its checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from gacflow.model.checkpoint import read_checkpoint
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

    def codes(self, wav: torch.Tensor) -> torch.Tensor:
        """wav [B, N] -> quantized codes [B, T, D] (straight-through), as the tokens carry."""
        return self.codes_and_latents(wav)[0]

    def codes_and_latents(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The codes and the bounded latent u they are rounded from (for the margin loss)."""
        u = self.encoder(self.mel(wav))
        return quantize_ste(u, self.encoder.levels), u

    def forward(self, wav: torch.Tensor, enh_present: torch.Tensor,
                voice: torch.Tensor | None = None) -> torch.Tensor:
        """wav [B, N] -> reconstruction [B, N]; enh_present [B] selects 275 (1) or 175 (0);
        voice [B, V] is the crop's dequantized voice code (decoders with voice_dims)."""
        return self.decode(self.codes(wav), enh_present, voice)

    def decode(self, codes: torch.Tensor, enh_present: torch.Tensor,
               voice: torch.Tensor | None = None) -> torch.Tensor:
        """Quantized codes [B, T, D] -> reconstruction [B, N] (see forward); lets a step
        that also reads the codes (pitch auxiliary) run the encoder once."""
        n_base = len(self.layout.base_levels)
        keep = torch.ones_like(codes)
        keep[..., n_base:] = enh_present[:, None, None]
        frames = enh_present[:, None].expand(-1, codes.shape[1])
        return self.decoder(codes * keep, frames, voice)


def load_grown(model: CodecModel, state: dict[str, torch.Tensor]) -> list[str]:
    """Load a smaller model's weights into a deeper one; returns the names left new.

    Decoder stages are `nn.Sequential`s of residual blocks, so extra blocks appended after
    the loaded ones start with their layer scale at zero: the grown model first computes
    exactly what the small one did, and training only has to learn what depth adds.
    A token may grow too (more enhancement digits): the encoder head gets new rows and the
    decoder's input new zero columns, so the old digits and the old audio are unchanged.
    """
    own = model.state_dict()
    fresh = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    state = dict(state)
    for k in wrong:
        grown = _grow_digits(k, own[k], state[k])
        if grown is None:
            raise ValueError(f"cannot grow: shapes differ for {k} (only depth and token "
                             "digits may grow)")
        state[k] = grown
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    with torch.no_grad():
        for name in fresh:
            if name.endswith(".scale"):
                own[name].zero_()
    return fresh


def _grow_digits(name: str, own: torch.Tensor, old: torch.Tensor) -> torch.Tensor | None:
    """`old` widened to `own`'s shape for a token with more digits (None: not growable)."""
    n = old.shape[0]
    if name in ("encoder.head.weight", "encoder.head.bias") and own.shape[1:] == old.shape[1:]:
        out = own.clone()  # the new digits keep their fresh initialisation
        out[:n] = old
        return out
    if name == "encoder.levels" and torch.equal(own[:n], old):
        return own
    if name == "decoder.inp.weight" and own.shape[0] == old.shape[0]:
        out = torch.zeros_like(own)  # [dim, digits + 1]: the last column is the 175 flag
        out[:, : old.shape[1] - 1] = old[:, :-1]
        out[:, -1] = old[:, -1]
        return out
    return None


def init_state(path: Path, decoder: str = "") -> dict[str, torch.Tensor]:
    """The weights a run starts from: a training checkpoint file or a bundle directory
    (with its `decoder` size, or its default decoder).

    Accepting a bundle lets anyone grow or fine-tune a decoder from the weights shipped in
    the repository, without the training run that made them.
    """
    from gacflow.export.source import as_checkpoint, load_source

    path = Path(path)
    if path.is_dir():
        return as_checkpoint(load_source(path, decoder or None))["model"]
    return load_checkpoint(path)["model"]


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint to resume or grow from (only its weights are required)."""
    return read_checkpoint(path, ("model",))
