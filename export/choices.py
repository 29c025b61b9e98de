"""The export's flag choices, torch-free so `gacflow-export --help` runs on any install."""

from __future__ import annotations

FORMATS = ("onnx", "tflite")
PLANS = ("uint8", "fast", "dynamic", "wide", "uint16")
