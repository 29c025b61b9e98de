"""The console's live audio: a tap on the WAV sink keeping each device's latest seconds,
and the small views the page draws (waveform envelope, log spectrogram)."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from gacflow.spec import SAMPLE_RATE

WAVE_COLUMNS = 600
SPEC_BINS = 64
SPEC_FRAMES = 240


class LiveAudio:
    """Per device, the last `seconds` of decoded audio of its current stream."""

    def __init__(self, seconds: float) -> None:
        self.max_samples = int(seconds * SAMPLE_RATE)
        self.chunks: dict[str, deque[np.ndarray]] = {}
        self.sizes: dict[str, int] = {}
        self.session: dict[str, str] = {}
        self.lock = threading.Lock()

    def attach(self, wavs) -> None:
        """Tee `wavs.write` (the receiver's WAV sink, its documented hook) into this buffer."""
        write = wavs.write

        def tee(s, audio) -> None:
            write(s, audio)
            self.add(s.device, s.name, audio)

        wavs.write = tee

    def add(self, device: str, session: str, audio: np.ndarray) -> None:
        with self.lock:
            if self.session.get(device) != session:  # a new stream replaces the old one
                self.session[device] = session
                self.chunks[device] = deque()
                self.sizes[device] = 0
            q = self.chunks[device]
            q.append(np.asarray(audio, np.float32).copy())
            self.sizes[device] += len(audio)
            while len(q) > 1 and self.sizes[device] - len(q[0]) >= self.max_samples:
                self.sizes[device] -= len(q.popleft())

    def audio(self, device: str) -> np.ndarray | None:
        with self.lock:
            q = self.chunks.get(device)
            if not q:
                return None
            a = np.concatenate(list(q))
        return a[-self.max_samples:]

    def seconds(self, device: str) -> float:
        with self.lock:
            return min(self.sizes.get(device, 0), self.max_samples) / SAMPLE_RATE


def waveform(audio: np.ndarray, columns: int = WAVE_COLUMNS) -> list[list[float]]:
    """[min, max] per column: enough to draw the waveform at page width."""
    if len(audio) == 0:
        return []
    edges = np.linspace(0, len(audio), min(columns, len(audio)) + 1).astype(int)
    return [[round(float(audio[a:b].min()), 3), round(float(audio[a:b].max()), 3)]
            for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


def spectrogram(audio: np.ndarray, bins: int = SPEC_BINS, frames: int = SPEC_FRAMES,
                ) -> list[list[int]]:
    """Log-magnitude STFT (512-point, Hann), pooled to `bins` bands, 0..255 per cell."""
    n_fft, hop = 512, 160
    if len(audio) < n_fft:
        return []
    idx = np.arange(0, len(audio) - n_fft + 1, hop)
    idx = idx[np.linspace(0, len(idx) - 1, min(frames, len(idx))).astype(int)]
    win = np.hanning(n_fft).astype(np.float32)
    mag = np.abs(np.fft.rfft(np.stack([audio[i:i + n_fft] * win for i in idx]), axis=1))
    bands = np.array_split(mag[:, 1:], bins, axis=1)
    db = 20 * np.log10(np.stack([b.mean(axis=1) for b in bands], axis=1) + 1e-5)
    top = db.max()
    scaled = np.clip((db - (top - 80)) / 80 * 255, 0, 255)
    return scaled.astype(int).tolist()
