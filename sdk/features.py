"""Log-mel front-end in NumPy: the exact features the edge computes and training sees.

Framing is causal: mel frame i covers samples [(i+1)*HOP - WIN, (i+1)*HOP), zeros
before the start. A token frame j uses mel frames 4j..4j+3, i.e. samples up to
(j+1)*FRAME_SAMPLES and nothing after, so the edge needs no look-ahead. Features are
computed one token frame at a time with fixed shapes so that the result does not depend
on how audio was chunked (bit-exact streaming).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .spec import (
    FRAME_SAMPLES,
    HOP,
    LOG_FLOOR,
    MEL_FMAX,
    MEL_FMIN,
    MELS_PER_TOKEN,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    WIN,
)

CONTEXT = WIN - HOP  # past samples a token frame needs beyond its own 640


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=1)
def mel_filterbank() -> np.ndarray:
    """Triangular HTK-style mel filters, [N_FFT//2+1, N_MELS], slaney-normalised."""
    n_bins = N_FFT // 2 + 1
    freqs = np.linspace(0, SAMPLE_RATE / 2, n_bins)
    mel_pts = np.linspace(_hz_to_mel(MEL_FMIN), _hz_to_mel(MEL_FMAX), N_MELS + 2)
    hz = _mel_to_hz(mel_pts)
    fb = np.zeros((n_bins, N_MELS))
    for m in range(N_MELS):
        lo, c, hi = hz[m], hz[m + 1], hz[m + 2]
        up = (freqs - lo) / (c - lo)
        down = (hi - freqs) / (hi - c)
        fb[:, m] = np.maximum(0.0, np.minimum(up, down)) * (2.0 / (hi - lo))
    return fb.astype(np.float32)


@lru_cache(maxsize=1)
def analysis_window() -> np.ndarray:
    """Periodic Hann of WIN samples, zero-padded to N_FFT (window at the start)."""
    w = np.zeros(N_FFT, dtype=np.float32)
    n = np.arange(WIN)
    w[:WIN] = 0.5 - 0.5 * np.cos(2 * np.pi * n / WIN)
    return w


@lru_cache(maxsize=16)
def _frame_index(count: int) -> np.ndarray:
    """Sample indices of `count` mel frames (cached: the edge asks for 4 every 40 ms)."""
    return np.arange(count)[:, None] * HOP + np.arange(WIN)[None, :]


def mel_frames(x: np.ndarray, count: int) -> np.ndarray:
    """Log-mel [count, N_MELS] of the frames starting at samples 0, HOP, 2*HOP, ... of `x`."""
    frames = x.astype(np.float32)[_frame_index(count)] * analysis_window()[:WIN]
    spec = np.fft.rfft(frames, n=N_FFT, axis=-1)  # zero-pads each 400-sample frame to 512
    power = (spec.real**2 + spec.imag**2).astype(np.float32)
    mel = power @ mel_filterbank()
    return np.log(np.maximum(mel, LOG_FLOOR)).astype(np.float32)


def token_frame_mels(span: np.ndarray) -> np.ndarray:
    """Log-mel [MELS_PER_TOKEN, N_MELS] of one token frame.

    `span` is CONTEXT + FRAME_SAMPLES float32 samples: the 240 samples before the frame
    and the frame's own 640.
    """
    if span.shape != (CONTEXT + FRAME_SAMPLES,):
        raise ValueError(f"span must have {CONTEXT + FRAME_SAMPLES} samples, got {span.shape}")
    return mel_frames(span, MELS_PER_TOKEN)


def pad_to_frames(wav: np.ndarray) -> np.ndarray:
    """Zero-pad a waveform to a whole number of token frames (at least one)."""
    n = max(1, -(-len(wav) // FRAME_SAMPLES)) * FRAME_SAMPLES
    out = np.zeros(n, dtype=np.float32)
    out[: len(wav)] = wav
    return out


def log_mel(wav: np.ndarray) -> np.ndarray:
    """Whole-signal log-mel [n_token_frames * 4, N_MELS], one token frame at a time."""
    x = np.concatenate([np.zeros(CONTEXT, np.float32), pad_to_frames(wav)])
    n_frames = (len(x) - CONTEXT) // FRAME_SAMPLES
    out = [
        token_frame_mels(x[j * FRAME_SAMPLES : j * FRAME_SAMPLES + CONTEXT + FRAME_SAMPLES])
        for j in range(n_frames)
    ]
    return np.concatenate(out, axis=0)
