"""Quantization-aware training of the encoder: fake uint8 quantization where the edge's
ONNX INT8 graph (`fast` plan, export/onnx_export.py) keeps uint8 activations.

Why: the GPU-trained encoder of 2026-11 keeps only 91 % of its tokens under the `fast`
and `wide` plans (its activations are wider than the CPU-trained one's) and needs all
activations in uint16, 2.9x the edge time. Training through the same rounding teaches the
encoder latents that survive it. The points mirror the exported step graph: the
standardised mel entering the stem, each block's input as the uint8 conv-state buffer
sees it, the depthwise output, the expansion after ReLU and the scaled projection
before the residual add. The residual stream, stem output and head logit are uint16
there, close enough to float to leave alone. Ranges are running min/max (EMA), like
the MinMax calibration of the export. Weights stay float: per-channel int8 costs little.

`enable(encoder)` patches the encoder in place for training; the model weights and
bundles hold nothing of it (the tokens at inference come from the plain float encoder),
only the training checkpoint keeps the running ranges (key `qat`) for a resume.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

MOMENTUM = 0.01  # EMA of the observed range per training step


class FakeUint8(nn.Module):
    """Per-tensor asymmetric uint8 fake quantization with a running min/max range; the
    gradient passes straight through inside the range (torch's fake_quantize)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))
        self.active = True  # False: pass-through (the float path, for the consistency loss)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        if self.training:  # tensor ops only: no host sync per call on a GPU
            with torch.no_grad():
                lo, hi = x.detach().float().amin(), x.detach().float().amax()
                self.lo.copy_(torch.where(self.seen, self.lo.lerp(lo, MOMENTUM), lo))
                self.hi.copy_(torch.where(self.seen, self.hi.lerp(hi, MOMENTUM), hi))
                self.seen.fill_(True)
        lo, hi = self.lo.clamp(max=0.0), self.hi.clamp(min=0.0)  # 0 exactly representable
        scale = ((hi - lo) / 255.0).clamp(min=1e-8)
        zero = torch.round(-lo / scale).to(torch.int32)
        return torch.fake_quantize_per_tensor_affine(x.float(), scale, zero, 0, 255).to(x.dtype)


def _block_mix(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    hidden = self.qat_hidden(F.relu(self.pw1(self.qat_dw(y))))
    return x + self.qat_proj(self.scale * self.pw2(hidden))


def _block_forward(self, x: torch.Tensor) -> torch.Tensor:
    return self._mix(x, self.dw(F.pad(self.qat_input(x), (self.context, 0))))


def enable(encoder: nn.Module) -> nn.ModuleList:
    """Patch `encoder` (a gacflow Encoder) for quantization-aware training; returns the
    fake quantizers (their ranges are training state, not model weights: a ModuleList
    outside the model, moved and switched to train/eval with it by the caller)."""
    quantizers = nn.ModuleList()
    stem_input = FakeUint8()
    encoder.stem.register_forward_pre_hook(lambda _m, args: (stem_input(args[0]),))
    quantizers.append(stem_input)
    for block in encoder.blocks:
        fq = {name: FakeUint8() for name in ("qat_input", "qat_dw", "qat_hidden", "qat_proj")}
        for name, q in fq.items():
            object.__setattr__(block, name, q)  # kept out of state_dict and parameters
            quantizers.append(q)
        block._mix = types.MethodType(_block_mix, block)
        block.forward = types.MethodType(_block_forward, block)
    return quantizers


def set_active(quantizers: nn.ModuleList, active: bool) -> None:
    """Switch between the quantized path (the edge's INT8 graph) and the float one."""
    for q in quantizers:
        q.active = active


def consistency_loss(encoder: nn.Module, mel: torch.Tensor, latents: torch.Tensor,
                     quantizers: nn.ModuleList, amp) -> torch.Tensor:
    """Mean |INT8-path latent - float latent| in hundredths of a level: what makes the edge's
    tokens differ from the float encoder's. Leaves the quantizers on the float path."""
    set_active(quantizers, True)
    try:
        with amp:
            u_int8 = encoder(mel)
    finally:
        set_active(quantizers, False)
    return (u_int8.float() - latents.float()).abs().mean() / 0.01
