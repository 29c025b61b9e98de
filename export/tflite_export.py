"""Encoder step -> LiteRT (.tflite), full INT8 weights and activations, float I/O.

Converter choice: the graph is rebuilt in TensorFlow from the torch weights (eleven
lines of ops: FC stem, dilated depthwise conv, two FCs per block, FC head) and converted
with TensorFlow's own TFLiteConverter and a representative dataset of real streamed
frames. Why not the alternatives: litert-torch/ai-edge-torch pins its own torch version
(this project uses torch 2.13) and onnx2tf adds a second graph translation to debug;
TensorFlow 2.21 installs next to torch and numpy 2 without changing either, and the
rebuilt graph is the layout LiteRT kernels like best (NHWC, conv state as [1, ctx, C]).
A parity test against the torch step (fp32 TF function) guards the rebuild.

The model keeps float32 inputs/outputs (the converter adds one quantize/dequantize at the
edges) so the runtime code is identical to the ONNX one; everything inside is int8.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from gacflow.model.encoder import Encoder

from .graph import fold_residual_scales

MEL_INPUT = "mel"
LATENT_OUTPUT = "latent"


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TF's C++ chatter off the report


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32)


class TFEncoderStep:
    """The encoder's `step` in TensorFlow ops, weights copied from the torch encoder."""

    def __init__(self, encoder: Encoder) -> None:
        import tensorflow as tf

        enc = fold_residual_scales(encoder)
        self.tf = tf
        self.mean = tf.constant(_np(enc.mel_mean))
        self.inv_std = tf.constant(1.0 / _np(enc.mel_std))
        w = _np(enc.stem.weight)  # [C, 80, 4] -> [4*80, C] matching mel [4, 80] flattened
        self.stem_w = tf.constant(w.transpose(2, 1, 0).reshape(-1, w.shape[0]))
        self.stem_b = tf.constant(_np(enc.stem.bias))
        self.blocks = []
        for b in enc.blocks:
            dw = _np(b.dw.weight)  # [C, 1, K] -> [1, K, C, 1] (HWIO with W=time)
            self.blocks.append({
                "dil": int(b.dw.dilation[0]), "ctx": b.context,
                "dw": tf.constant(dw.transpose(1, 2, 0)[..., None]),
                "dw_b": tf.constant(_np(b.dw.bias)),
                "pw1": tf.constant(_np(b.pw1.weight)[:, :, 0].T),
                "pw1_b": tf.constant(_np(b.pw1.bias)),
                "pw2": tf.constant(_np(b.pw2.weight)[:, :, 0].T),
                "pw2_b": tf.constant(_np(b.pw2.bias)),
            })
        self.head_w = tf.constant(_np(enc.head.weight)[:, :, 0].T)
        self.head_b = tf.constant(_np(enc.head.bias))
        self.top = tf.constant(_np(enc.levels - 1))
        self.dim = enc.cfg.dim
        self.state_shapes = [(1, blk["ctx"], self.dim) for blk in self.blocks]

    def __call__(self, mel, *state):
        tf = self.tf
        x = tf.reshape((mel - self.mean) * self.inv_std, (1, -1))
        h = tf.nn.relu(tf.matmul(x, self.stem_w) + self.stem_b)
        new_state = []
        for blk, s in zip(self.blocks, state, strict=True):
            buf = tf.concat([s, tf.reshape(h, (1, 1, self.dim))], axis=1)  # [1, ctx+1, C]
            y = tf.nn.depthwise_conv2d(tf.reshape(buf, (1, 1, blk["ctx"] + 1, self.dim)),
                                       blk["dw"], strides=[1, 1, 1, 1], padding="VALID",
                                       dilations=[1, blk["dil"]])
            y = tf.reshape(y, (1, self.dim)) + blk["dw_b"]
            y = tf.nn.relu(tf.matmul(y, blk["pw1"]) + blk["pw1_b"])
            h = h + tf.matmul(y, blk["pw2"]) + blk["pw2_b"]
            new_state.append(buf[:, 1:, :])
        u = tf.sigmoid(tf.matmul(h, self.head_w) + self.head_b) * self.top
        return u, new_state

    def concrete_function(self):
        tf = self.tf
        specs = [tf.TensorSpec((1, 4, 80), tf.float32, name=MEL_INPUT)] + [
            tf.TensorSpec(s, tf.float32, name=f"state_in_{i}")
            for i, s in enumerate(self.state_shapes)]

        def fn(*args):
            u, st = self(*args)
            out = {LATENT_OUTPUT: u}
            out.update({f"state_out_{i}": s for i, s in enumerate(st)})
            return out

        module = tf.Module()
        module.step = tf.function(fn, input_signature=specs)
        return module, module.step.get_concrete_function()

    def stream(self, mels: np.ndarray) -> tuple[np.ndarray, list[list[np.ndarray]]]:
        """Run [T,4,80] in float TF, carrying state; latents and the inputs of every frame."""
        state = [np.zeros(s, np.float32) for s in self.state_shapes]
        lat, inputs = [], []
        fn = self.tf.function(self.__call__)
        for m in mels:
            inputs.append([m[None].astype(np.float32), *state])
            u, st = fn(self.tf.constant(m[None]), *state)
            lat.append(u.numpy()[0])
            state = [s.numpy() for s in st]
        return np.stack(lat), inputs


def export_tflite_int8(encoder: Encoder, out: Path, calib_mels: list[np.ndarray],
                      int16_activations: bool = False) -> Path:
    """Convert with full-integer quantization calibrated on real streamed frames.

    `int16_activations` selects LiteRT's 16x8 mode (int8 weights, int16 activations).
    """
    import tensorflow as tf

    step = TFEncoderStep(encoder)
    samples = []
    for mels in calib_mels:
        samples += step.stream(mels)[1]

    names = [MEL_INPUT] + [f"state_in_{i}" for i in range(len(step.state_shapes))]

    def representative():  # by name: signature inputs are not in argument order
        for s in samples:
            yield dict(zip(names, s, strict=True))

    module, fn = step.concrete_function()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn], module)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        if int16_activations else tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    out.write_bytes(conv.convert())
    return out
