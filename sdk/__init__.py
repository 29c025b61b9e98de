"""gacflow: generative audio compression for IoT.

The core imports NumPy and the standard library only, so the edge agent can run it on a
device with no torch. The torch codec lives in `gacflow.model`.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .bitstream import SILENT, Packet, decode_packet, encode_packet
from .bundle import Bundle
from .errors import (
    AudioError,
    BitstreamError,
    BundleError,
    CodecMismatchError,
    ConfigError,
    GacflowError,
)
from .spec import FRAME_RATE, SAMPLE_RATE, TokenLayout
from .tokens import Tokens

__all__ = [
    "AudioError",
    "BitstreamError",
    "Bundle",
    "BundleError",
    "CodecMismatchError",
    "ConfigError",
    "FRAME_RATE",
    "GacflowError",
    "Packet",
    "SAMPLE_RATE",
    "SILENT",
    "TokenLayout",
    "Tokens",
    "decode_packet",
    "encode_packet",
]
