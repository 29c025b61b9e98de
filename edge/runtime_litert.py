"""INT8 encoder on LiteRT (TFLite interpreter): the second edge backend (no torch).

Same contract as the ONNX runtime: `encoder.int8.tflite` is one token frame with its conv
state as explicit inputs/outputs (`state_in_i` -> `state_out_i`, here [1, ctx, C]),
float32 at the interface and int8 inside. The model bytes are sha256-checked against
the manifest and the interpreter is built from those bytes.

Platforms: `ai-edge-litert` has wheels for x86_64 and aarch64 Linux (Pi OS 64-bit). An
installed `tflite-runtime` is used as a fallback; neither has an armv7l wheel for CPython
3.11 on PyPI, so 32-bit Pi OS is not supported (docs/edge.md, "Device guide").
"""

from __future__ import annotations

import os

import numpy as np

from gacflow.bundle import Bundle
from gacflow.errors import BundleError, ConfigError
from gacflow.spec import MELS_PER_TOKEN, N_MELS

from .runtime_onnx import (
    LATENT_OUTPUT,
    MEL_INPUT,
    STATE_IN,
    STATE_OUT,
    open_bundle,
    state_index,
)

TFLITE_INT8_FILE = "encoder.int8.tflite"


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as exc:
            raise ConfigError("the tflite backend needs ai-edge-litert (pip install "
                              "'gacflow[edge-tflite]') or tflite-runtime") from exc
    return Interpreter


class LiteRTEncoderRuntime:
    """`EncoderRuntime` over a LiteRT interpreter: mel [4, 80] -> latent [D]."""

    def __init__(self, bundle: Bundle | str | os.PathLike | None = None, threads: int = 1,
                 file: str = TFLITE_INT8_FILE) -> None:
        interpreter_cls = _interpreter_class()
        self.bundle = open_bundle(bundle)
        data = self.bundle.read_verified(file)
        try:
            self.interp = interpreter_cls(model_content=data, num_threads=max(1, int(threads)))
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BundleError(f"bundle {self.bundle.root}: {file} is not a loadable LiteRT "
                              f"model ({str(exc).splitlines()[0][:200]})") from exc
        try:
            self._runner = self.interp.get_signature_runner()
            ins = self._runner.get_input_details()
            outs = self._runner.get_output_details()
        except ValueError as exc:
            raise BundleError(f"bundle {self.bundle.root}: {file} has no single signature "
                              "(re-export it with gacflow-export)") from exc
        states = sorted((k for k in ins if k.startswith(STATE_IN)),
                        key=lambda k: state_index(k, STATE_IN))
        want_out = [LATENT_OUTPUT] + [STATE_OUT + k[len(STATE_IN):] for k in states]
        if MEL_INPUT not in ins or not states or not all(k in outs for k in want_out):
            raise BundleError(f"bundle {self.bundle.root}: {file} lacks the encoder step "
                              f"signature ({MEL_INPUT}, {STATE_IN}i -> {LATENT_OUTPUT}, "
                              f"{STATE_OUT}i)")
        self._pairs = [(k, STATE_OUT + k[len(STATE_IN):]) for k in states]
        self._state_shapes = {k: tuple(ins[k]["shape"]) for k in states}
        self.reset()

    def reset(self) -> None:
        self._feeds = {k: np.zeros(s, np.float32) for k, s in self._state_shapes.items()}

    def step(self, mel: np.ndarray) -> np.ndarray:
        """One token frame's log-mel [4, 80] -> bounded latent [D] (float32)."""
        x = np.asarray(mel, dtype=np.float32)
        if x.shape != (MELS_PER_TOKEN, N_MELS):
            raise ValueError(f"mel must be [{MELS_PER_TOKEN}, {N_MELS}], got {list(x.shape)}")
        outs = self._runner(**{MEL_INPUT: x[None]}, **self._feeds)
        for k_in, k_out in self._pairs:
            self._feeds[k_in] = outs[k_out]
        return np.asarray(outs[LATENT_OUTPUT], np.float32).reshape(-1)
