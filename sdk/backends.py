"""Pick an encoder backend for a bundle: torch (reference), onnx or tflite (INT8, no torch).

Every backend implements `streaming.EncoderRuntime`; the token step after it is shared,
so comparing backends compares only their latents.
"""

from __future__ import annotations

from .bundle import Bundle
from .errors import ConfigError
from .extras import installed, require
from .streaming import EncoderRuntime

BACKENDS = ("torch", "onnx", "tflite")
AUTO = "auto"


def resolve_backend(bundle: Bundle, wanted: str = AUTO) -> str:
    """'auto' -> torch (the reference) when installed, else the bundle's INT8 onnx, else
    tflite: an edge install (no torch) encodes out of the box."""
    if wanted != AUTO:
        return wanted
    if installed("torch"):
        return "torch"
    from .edge.encoder import choose_backend

    return choose_backend(bundle, AUTO)


def encoder_runtime(bundle: Bundle, backend: str = "onnx", threads: int = 1) -> EncoderRuntime:
    """Instantiate the named backend over the bundle's encoder file."""
    if backend == "torch":
        require("torch", "cloud", "the torch encoder backend", hint="or use --backend onnx")
        from .model.codec import torch_encoder_runtime

        return torch_encoder_runtime(bundle)
    if backend == "onnx":
        from .edge.runtime_onnx import OnnxEncoderRuntime

        return OnnxEncoderRuntime(bundle, threads=threads)
    if backend == "tflite":
        from .edge.runtime_litert import LiteRTEncoderRuntime

        return LiteRTEncoderRuntime(bundle, threads=threads)
    raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
