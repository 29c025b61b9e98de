"""INT8 encoder on ONNX Runtime: the default edge backend (no torch).

The bundle's `encoder.int8.onnx` is one token frame of the encoder with its causal conv
state as explicit inputs/outputs (`state_in_i` -> `state_out_i`), so the runtime only
feeds each step's state outputs back in. The model bytes are read once, checked against
the sha256 the manifest lists, and handed to ONNX Runtime from memory: the file that
runs is the file that was verified, even if the disk changes after `Bundle.load`.

Platforms: onnxruntime publishes wheels for x86_64 and aarch64 Linux (Raspberry Pi OS
64-bit, Pi 3/4/5/Zero 2 W); there is no armv7l (32-bit Pi OS) wheel, use LiteRT there.
"""

from __future__ import annotations

import os

import numpy as np

from gacflow.bundle import Bundle
from gacflow.errors import BundleError, ConfigError
from gacflow.spec import MELS_PER_TOKEN, N_MELS

ONNX_INT8_FILE = "encoder.int8.onnx"
MEL_INPUT = "mel"
LATENT_OUTPUT = "latent"
STATE_IN = "state_in_"
STATE_OUT = "state_out_"


def open_bundle(bundle: Bundle | str | os.PathLike | None) -> Bundle:
    """A verified bundle (a path is loaded and sha256-checked; a Bundle is used as is)."""
    return bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)


def state_index(name: str, prefix: str) -> int:
    return int(name[len(prefix):])


class OnnxEncoderRuntime:
    """`EncoderRuntime` over ONNX Runtime: mel [4, 80] -> latent [D], state kept here."""

    def __init__(self, bundle: Bundle | str | os.PathLike | None = None, threads: int = 1,
                 file: str = ONNX_INT8_FILE) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ConfigError("the onnx backend needs onnxruntime: "
                              "pip install 'gacflow[edge]'") from exc
        self.bundle = open_bundle(bundle)
        self.file = file
        data = self.bundle.read_verified(file)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, int(threads))
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for a bad model
            raise BundleError(f"bundle {self.bundle.root}: {file} is not a loadable ONNX model "
                              f"({str(exc).splitlines()[0][:200]})") from exc
        ins = {i.name: i for i in self.session.get_inputs()}
        outs = [o.name for o in self.session.get_outputs()]
        states = sorted((n for n in ins if n.startswith(STATE_IN)),
                        key=lambda n: state_index(n, STATE_IN))
        if MEL_INPUT not in ins or LATENT_OUTPUT not in outs or not states:
            raise BundleError(f"bundle {self.bundle.root}: {file} lacks the encoder step "
                              f"signature ({MEL_INPUT}, {STATE_IN}i -> {LATENT_OUTPUT}, "
                              f"{STATE_OUT}i)")
        self._state_names = states
        self._state_shapes = [tuple(ins[n].shape) for n in states]
        self._outputs = [LATENT_OUTPUT] + [STATE_OUT + n[len(STATE_IN):] for n in states]
        self.reset()

    def reset(self) -> None:
        self._feeds = {n: np.zeros(s, np.float32)
                       for n, s in zip(self._state_names, self._state_shapes, strict=True)}

    def step(self, mel: np.ndarray) -> np.ndarray:
        """One token frame's log-mel [4, 80] -> bounded latent [D] (float32)."""
        x = np.asarray(mel, dtype=np.float32)
        if x.shape != (MELS_PER_TOKEN, N_MELS):
            raise ValueError(f"mel must be [{MELS_PER_TOKEN}, {N_MELS}], got {list(x.shape)}")
        self._feeds[MEL_INPUT] = x[None]
        outs = self.session.run(self._outputs, self._feeds)
        for name, value in zip(self._state_names, outs[1:], strict=True):
            self._feeds[name] = value
        return outs[0].reshape(-1)
