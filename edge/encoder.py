"""Pick the INT8 encoder runtime of a bundle: ONNX Runtime first, LiteRT second; never torch."""

from __future__ import annotations

from gacflow.backends import encoder_runtime
from gacflow.bundle import Bundle
from gacflow.errors import BundleError, ConfigError
from gacflow.extras import installed
from gacflow.streaming import EncoderRuntime

ONNX_FILE = "encoder.int8.onnx"
TFLITE_FILE = "encoder.int8.tflite"


_importable = installed  # one check for every optional dependency (gacflow.extras)


def choose_backend(bundle: Bundle, wanted: str = "auto") -> str:
    """'auto' -> onnx when the bundle ships the ONNX model and onnxruntime is installed,
    else tflite when it ships the LiteRT model and ai-edge-litert (or tflite-runtime) is
    installed."""
    has_onnx = bundle.has(ONNX_FILE) and _importable("onnxruntime")
    litert = _importable("ai_edge_litert") or _importable("tflite_runtime")
    has_tflite = bundle.has(TFLITE_FILE) and litert
    if wanted == "onnx" or (wanted == "auto" and has_onnx):
        if not bundle.has(ONNX_FILE):
            raise BundleError(f"bundle {bundle.root} has no {ONNX_FILE} "
                              "(export it with gacflow-export, or use --backend tflite)")
        if not _importable("onnxruntime"):
            raise ConfigError("backend onnx needs onnxruntime: pip install 'gacflow[edge]'")
        return "onnx"
    if wanted == "tflite" or (wanted == "auto" and has_tflite):
        if not bundle.has(TFLITE_FILE):
            raise BundleError(f"bundle {bundle.root} has no {TFLITE_FILE} "
                              "(export it with gacflow-export, or use --backend onnx)")
        if not litert:
            raise ConfigError("backend tflite needs LiteRT: pip install 'gacflow[edge-tflite]'")
        return "tflite"
    if wanted != "auto":
        raise ConfigError(f"unknown backend {wanted!r}; choose auto, onnx or tflite")
    raise BundleError(f"bundle {bundle.root} has no usable INT8 encoder ({ONNX_FILE} with "
                      f"onnxruntime, or {TFLITE_FILE} with ai-edge-litert)")


def open_encoder(bundle: Bundle, wanted: str = "auto", threads: int = 1
                 ) -> tuple[EncoderRuntime, str]:
    """The runtime and the name of the backend chosen."""
    backend = choose_backend(bundle, wanted)
    return encoder_runtime(bundle, backend, threads), backend
