"""The PyTorch codec: causal semantic encoder, FSQ, generative decoder (needs torch)."""

from .codec import Codec, StreamingEncoder

__all__ = ["Codec", "StreamingEncoder"]
