"""Finite scalar quantization, the token step shared by every encoder backend.

Encoder graphs (torch, ONNX, TFLite) stop at a bounded latent `u` whose dim i lies in
[0, L_i - 1]; rounding it to integers here, in NumPy, keeps the integer step out of
INT8 graphs and guarantees every backend turns the same latent into the same token.
"""

from __future__ import annotations

import numpy as np

from .spec import Mode, TokenLayout


def latent_to_indices(u: np.ndarray, levels: tuple[int, ...]) -> np.ndarray:
    """Round a bounded latent [T, D>=len(levels)] to per-dim level indices [T, len(levels)]."""
    lv = np.asarray(levels, dtype=np.float64)
    x = np.asarray(u, dtype=np.float64)[..., : len(levels)]
    return np.clip(np.rint(x), 0, lv - 1).astype(np.int64)


def indices_to_tokens(idx: np.ndarray, levels: tuple[int, ...]) -> np.ndarray:
    """Mixed-radix pack of level indices, first dim most significant."""
    tok = np.zeros(idx.shape[:-1], dtype=np.int64)
    for i, n in enumerate(levels):
        tok = tok * n + idx[..., i]
    return tok


def tokens_to_indices(tokens: np.ndarray, levels: tuple[int, ...]) -> np.ndarray:
    """Inverse of `indices_to_tokens`."""
    t = np.asarray(tokens, dtype=np.int64).copy()
    out = np.zeros(t.shape + (len(levels),), dtype=np.int64)
    for i in range(len(levels) - 1, -1, -1):
        out[..., i] = t % levels[i]
        t //= levels[i]
    return out


def indices_to_codes(idx: np.ndarray, levels: tuple[int, ...]) -> np.ndarray:
    """Level indices to the decoder's code values in [-1, 1]."""
    lv = np.asarray(levels, dtype=np.float32) - 1
    return (idx.astype(np.float32) / lv) * 2.0 - 1.0


def latent_to_tokens(u: np.ndarray, layout: TokenLayout, mode: Mode) -> np.ndarray:
    """Bounded latent [T, D] -> token ids [T] of `mode` (175 keeps only the base dims)."""
    idx = latent_to_indices(u, layout.all_levels)[..., : len(mode.levels)]
    return indices_to_tokens(idx, mode.levels)
