"""The edge graph: one token frame of the encoder, with its conv state as explicit I/O.

`EncoderStepGraph` wraps `Encoder.step` for export. The graph ends at the bounded latent
u (before FSQ rounding; `gacflow.fsq.latent_to_tokens` rounds it on every backend).
Each block's residual scale is folded into its last conv (one op and one INT8 rounding
fewer per block). The mel standardisation stays a separate op on purpose: folded into
the stem, the stem would multiply un-centred log-mel (around -7) by its weights, and
INT8 weight error grows with the input magnitude (measured, all-uint8: 81 % token
agreement folded vs 93 % unfolded)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from gacflow.model.encoder import Encoder

MEL_INPUT = "mel"
LATENT_OUTPUT = "latent"


def state_input(i: int) -> str:
    return f"state_in_{i}"


def state_output(i: int) -> str:
    return f"state_out_{i}"


def fold_residual_scales(enc: Encoder) -> Encoder:
    """Copy of `enc` with each block's residual scale folded into its last conv."""
    enc = copy.deepcopy(enc).eval()
    with torch.no_grad():
        for b in enc.blocks:  # x + scale * pw2(.) == x + pw2'(.) with scale folded in
            b.pw2.weight.mul_(b.scale.reshape(-1, 1, 1))
            b.pw2.bias.mul_(b.scale.reshape(-1))
            b.scale.fill_(1.0)
    return enc


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        lin.weight.copy_(weight)
        lin.bias.copy_(bias)
    return lin


class EncoderStepGraph(nn.Module):
    """(mel [1,4,80], 8 states [1,C,ctx]) -> (latent [1,D], 8 new states).

    Same function as `Encoder.step`, written for a fast one-frame graph: the stem, the
    pointwise convs and the head become Gemm on [1, C] vectors (one frame has one time
    step, so a 1x1 conv is a matrix-vector product), only the dilated depthwise conv
    stays a Conv over the state buffer. ~45 ops instead of ~100, which matters at 25
    calls per second where per-op overhead dominates.
    """

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        enc = fold_residual_scales(encoder)
        self.encoder = enc
        self.n_states = len(enc.blocks)
        w = enc.stem.weight.detach()  # [C, 80, 4] -> [C, 4*80] matching mel [4, 80] flattened
        self.stem = _linear(w.permute(0, 2, 1).reshape(w.shape[0], -1), enc.stem.bias)
        self.pw1 = nn.ModuleList(_linear(b.pw1.weight[:, :, 0], b.pw1.bias) for b in enc.blocks)
        self.pw2 = nn.ModuleList(_linear(b.pw2.weight[:, :, 0], b.pw2.bias) for b in enc.blocks)
        self.head = _linear(enc.head.weight[:, :, 0], enc.head.bias)

    def forward(self, mel: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        enc = self.encoder
        dim = enc.cfg.dim
        x = ((mel - enc.mel_mean) / enc.mel_std).reshape(1, -1)
        h = torch.relu(self.stem(x))
        new_state = []
        for b, pw1, pw2, s in zip(enc.blocks, self.pw1, self.pw2, state, strict=True):
            buf = torch.cat([s, h.reshape(1, dim, 1)], dim=-1)
            y = b.dw(buf).reshape(1, dim)
            h = h + pw2(torch.relu(pw1(y)))
            new_state.append(buf[:, :, 1:])
        u = torch.sigmoid(self.head(h)) * (enc.levels - 1)
        return (u, *new_state)

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(1, 4, 80), *self.encoder.initial_state(1))

    def input_names(self) -> list[str]:
        return [MEL_INPUT] + [state_input(i) for i in range(self.n_states)]

    def output_names(self) -> list[str]:
        return [LATENT_OUTPUT] + [state_output(i) for i in range(self.n_states)]
