"""Timbre matching at the receiver: pull the decoded voice's long-term spectrum onto the sender's.

The tokens carry what is said and little of who says it, so an unseen speaker is decoded
with the training voices' average spectral balance, above all in the 4-8 kHz band. An
`envelope` voice code (voice.py) tells the receiver the sender's long-term envelope; the
receiver measures the same statistic on its own decoded audio and applies the difference
as a smooth, zero-phase EQ (at most +-6 dB). It changes no token and no decoder weight,
so any decoder of the codec gains from it, and it costs the edge nothing but a running
sum it already keeps.

Whole files (`file_taps`) use the whole decoded file's statistic. Live streams
(`TimbreMatcher`) use the statistic of the audio emitted so far: the EQ fades in over
the first seconds, while that statistic settles, and follows the latest code. Both give
FIR taps; the decoders apply them batched, with no delay (`gacflow.model.codec.equalize`).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .features import CONTEXT, _hz_to_mel, _mel_to_hz, log_mel, mel_frames
from .spec import FRAME_SAMPLES, MEL_FMAX, MEL_FMIN, MELS_PER_TOKEN, N_MELS, SAMPLE_RATE
from .voice import VoiceSpec, VoiceStats, voice_statistic

MAX_GAIN_DB = 6.0  # the EQ never boosts or cuts a band by more than this (12: more WER)
TAPS = 129  # linear-phase FIR: 62.5 Hz resolution, +-4 ms reach
SETTLE_SECONDS = 2.0  # a live stream's EQ reaches full strength after this much audio


@lru_cache(maxsize=1)
def _band_centres() -> np.ndarray:
    mel = np.linspace(_hz_to_mel(MEL_FMIN), _hz_to_mel(MEL_FMAX), N_MELS + 2)
    return _mel_to_hz(mel)[1:-1]


def gain_curve(target: np.ndarray, decoded: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Log-power correction per mel band [N_MELS] that moves `decoded` onto `target`."""
    limit = MAX_GAIN_DB * np.log(10.0) / 10.0
    return np.clip(strength * (np.asarray(target) - np.asarray(decoded)), -limit, limit)


def eq_taps(gain: np.ndarray) -> np.ndarray:
    """Mel-band log-power gains -> symmetric FIR taps (zero phase when centred)."""
    n = 2 * (TAPS - 1)
    freqs = np.linspace(0.0, SAMPLE_RATE / 2, n // 2 + 1)
    amplitude = np.exp(0.5 * np.interp(freqs, _band_centres(), gain))
    impulse = np.roll(np.fft.irfft(amplitude, n), TAPS // 2)[:TAPS]
    return (impulse * np.hanning(TAPS + 2)[1:-1]).astype(np.float32)


def flat_taps() -> np.ndarray:
    """The EQ that changes nothing (a stream whose code has not arrived)."""
    return eq_taps(np.zeros(N_MELS))


def code_taps(code: bytes, spec: VoiceSpec, decoded: np.ndarray,
              strength: float = 1.0) -> np.ndarray:
    """The EQ from a packed envelope code and the decoded audio's own statistic."""
    return eq_taps(gain_curve(spec.reconstruct(spec.from_bytes(code)), decoded, strength))


def file_taps(wav: np.ndarray, code: bytes, spec: VoiceSpec) -> np.ndarray:
    """The EQ for a whole decoded signal, from the statistic of all of it."""
    decoded = voice_statistic(log_mel(wav), spec.weighting)
    return flat_taps() if decoded is None else code_taps(code, spec, decoded)


class TimbreMatcher:
    """One live stream: `observe` its decoded audio in order, `taps` for the next span."""

    def __init__(self, spec: VoiceSpec) -> None:
        self.spec = spec
        self.stats = VoiceStats(spec.weighting)
        self._audio = np.zeros(CONTEXT, np.float32)  # mel history + not yet whole frame
        self.observed = 0  # samples seen

    def observe(self, wav: np.ndarray) -> None:
        """Add decoded (not yet equalised) samples, in stream order."""
        self._audio = np.concatenate([self._audio, np.asarray(wav, np.float32).reshape(-1)])
        self.observed += len(wav)
        n = (len(self._audio) - CONTEXT) // FRAME_SAMPLES
        if n > 0:  # the frames log_mel would give, in one call (cheap for many streams)
            self.stats.push(mel_frames(self._audio, n * MELS_PER_TOKEN))
            self._audio = self._audio[n * FRAME_SAMPLES:]

    def taps(self, code: bytes | None) -> np.ndarray | None:
        """The EQ for the stream's latest code (None: no code yet, or no audio seen yet)."""
        decoded = self.stats.mean()
        if code is None or decoded is None:
            return None
        strength = min(1.0, self.observed / (SETTLE_SECONDS * SAMPLE_RATE))
        return code_taps(code, self.spec, decoded, strength)
