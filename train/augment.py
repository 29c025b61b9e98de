"""Training-crop augmentation: widen speakers and conditions beyond the few recorded voices.

Each augmentation takes a float32 batch [B, N] in [-1, 1] and the sampler's generator, so
a run is reproducible from its seed. The decoder learns to reproduce the augmented audio
(input = target): the point is that the encoder and decoder see more pitches, rooms and
noise floors than three speakers in a studio give them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gacflow.errors import ConfigError
from gacflow.spec import SAMPLE_RATE

SPEED_RANGE = (0.9, 1.1)  # Kaldi-style speed perturbation: tempo, pitch and formants move
NOISE_SNR_DB = (10.0, 40.0)
REVERB_RT60_S = (0.15, 0.6)
REVERB_WET = (0.1, 0.5)
PITCH_SEMITONES = (-3.0, 3.0)  # formant-shifting pitch change at constant tempo
PV_FFT, PV_HOP = 512, 128  # phase vocoder: 32 ms frames, 8 ms synthesis hop
APPLY_PROB = 0.5  # noise and reverb hit half the crops, so clean speech stays in the mix
EQ_POINTS = 8  # control points of a random spectral envelope, evenly spaced in mel
EQ_DB = 6.0  # each point's gain is drawn from +-EQ_DB
EQ_PROB = 0.8


def raw_length(names: tuple[str, ...], n: int) -> int:
    """Samples a raw crop needs so that `apply` can still return n after a speed-up."""
    return int(np.ceil(n * SPEED_RANGE[1])) + 1 if "speed" in names else n


def gain(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Level (-12..+4 dB) and polarity: the encoder must not care about either."""
    gain_db = rng.uniform(-12.0, 4.0, (len(x), 1))
    sign = rng.choice([-1.0, 1.0], (len(x), 1))
    return np.clip(x * (10 ** (gain_db / 20)) * sign, -1, 1)


def speed(x: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """Resample each crop by a random factor and keep n samples (shifts pitch and formants)."""
    out = np.empty((len(x), n), np.float32)
    for i, row in enumerate(x):
        factor = rng.uniform(*SPEED_RANGE)
        pos = np.arange(n) * factor
        out[i] = np.interp(pos, np.arange(len(row)), row)
    return out


def stretch_time(row: np.ndarray, rate: float) -> np.ndarray:
    """Phase-vocoder time stretch: about len(row) * rate samples, pitch unchanged."""
    win = np.hanning(PV_FFT).astype(np.float64)
    padded = np.concatenate([np.zeros(PV_FFT), row.astype(np.float64), np.zeros(PV_FFT)])
    starts = np.round(np.arange(0, len(padded) - PV_FFT, PV_HOP / rate)).astype(int)
    frames = np.stack([padded[s: s + PV_FFT] for s in starts]) * win
    spec = np.fft.rfft(frames, axis=1)
    bins = 2 * np.pi * np.arange(spec.shape[1]) / PV_FFT  # radians per sample per bin
    hops = np.diff(starts)[:, None]
    deviation = np.angle(spec[1:]) - np.angle(spec[:-1]) - bins * hops
    deviation = (deviation + np.pi) % (2 * np.pi) - np.pi
    true_freq = bins + deviation / hops
    phase = np.concatenate([np.angle(spec[:1]), true_freq * PV_HOP]).cumsum(axis=0)
    out_frames = np.fft.irfft(np.abs(spec) * np.exp(1j * phase), PV_FFT, axis=1) * win
    out = np.zeros(PV_HOP * (len(starts) - 1) + PV_FFT)
    norm = np.zeros_like(out)
    for i, frame in enumerate(out_frames):
        out[i * PV_HOP: i * PV_HOP + PV_FFT] += frame
        norm[i * PV_HOP: i * PV_HOP + PV_FFT] += win**2
    out /= np.maximum(norm, 1e-3)
    lead = int(round(PV_FFT * rate))
    return out[lead: lead + int(round(len(row) * rate))]


def shift_pitch(row: np.ndarray, semitones: float) -> np.ndarray:
    """Pitch (and formants) up or down at the same tempo and length: stretch, then resample."""
    ratio = 2.0 ** (semitones / 12.0)
    stretched = stretch_time(row, ratio)
    pos = np.arange(len(row)) * ratio
    return np.interp(pos, np.arange(len(stretched)), stretched).astype(np.float32)


def pitch(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift half the crops by up to +-3 semitones: voices higher and lower than the corpus."""
    out = x.copy()
    for i, row in enumerate(x):
        if rng.random() < APPLY_PROB:
            out[i] = shift_pitch(row, rng.uniform(*PITCH_SEMITONES))
    return np.clip(out, -1, 1)


def noise(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add white or pink noise at 10-40 dB SNR to half the crops."""
    out = x.copy()
    for i, row in enumerate(x):
        if rng.random() >= APPLY_PROB:
            continue
        n = rng.standard_normal(len(row))
        if rng.random() < 0.5:  # pink: -3 dB/octave by shaping the spectrum
            spec = np.fft.rfft(n)
            spec[1:] /= np.sqrt(np.arange(1, len(spec)))
            spec[0] = 0
            n = np.fft.irfft(spec, len(row))
        power = float(np.mean(row.astype(np.float64) ** 2)) + 1e-10
        snr = rng.uniform(*NOISE_SNR_DB)
        n *= np.sqrt(power / (np.mean(n**2) + 1e-12) / 10 ** (snr / 10))
        out[i] = row + n
    return np.clip(out, -1, 1)


def reverb(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Convolve half the crops with a synthetic room (decaying noise tail, random RT60)."""
    out = x.copy()
    for i, row in enumerate(x):
        if rng.random() >= APPLY_PROB:
            continue
        rt60 = rng.uniform(*REVERB_RT60_S)
        t = np.arange(int(rt60 * SAMPLE_RATE)) / SAMPLE_RATE
        tail = rng.standard_normal(len(t)) * 10 ** (-3 * t / rt60)  # -60 dB at rt60
        tail /= np.sqrt(np.sum(tail**2)) + 1e-12
        wet = np.fft.irfft(np.fft.rfft(row, len(row) + len(t)) * np.fft.rfft(tail, len(row)
                                                                              + len(t)))
        mix = rng.uniform(*REVERB_WET)
        out[i] = (1 - mix) * row + mix * wet[: len(row)]
    return np.clip(out, -1, 1)


def eq_response(n_bins: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth random magnitude response over rfft bins: EQ_POINTS gains on a mel axis."""
    hz = np.linspace(0, SAMPLE_RATE / 2, n_bins)
    mel = np.log1p(hz / 700.0)
    points = np.linspace(0, mel[-1], EQ_POINTS)
    gains_db = rng.uniform(-EQ_DB, EQ_DB, EQ_POINTS)
    return 10 ** (np.interp(mel, points, gains_db) / 20)


def eq(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Reshape the long-term spectrum of most crops with a smooth random EQ (zero phase).

    Speakers, microphones and rooms differ most in their long-term spectral envelope; a
    decoder conditioned on a voice code (sdk/voice.py) sees that envelope in the code, so
    random envelopes teach it to follow the code instead of memorising a few voices.
    """
    out = x.copy()
    for i, row in enumerate(x):
        if rng.random() >= EQ_PROB:
            continue
        spec = np.fft.rfft(row.astype(np.float64))
        out[i] = np.fft.irfft(spec * eq_response(len(spec), rng), len(row))
    return np.clip(out, -1, 1)


AUGMENTATIONS: dict[str, Callable[..., np.ndarray]] = {
    "gain": gain, "speed": speed, "pitch": pitch, "eq": eq, "noise": noise, "reverb": reverb,
}
ORDER = ("speed", "pitch", "eq", "reverb", "noise", "gain")  # voice, room, noise floor, level


def check(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Validate a config's augmentation list; returns it in the order they are applied."""
    unknown = sorted(set(names) - set(AUGMENTATIONS))
    if unknown:
        raise ConfigError(f"unknown augmentation(s) {unknown}; known: {sorted(AUGMENTATIONS)}")
    return tuple(name for name in ORDER if name in names)


def apply(x: np.ndarray, names: tuple[str, ...], rng: np.random.Generator,
          n: int) -> np.ndarray:
    """Run the named augmentations on raw crops x [B, >= n]; returns [B, n] float32."""
    if "speed" in names:
        x = speed(x, rng, n)
    else:
        x = x[:, :n]
    for name in names:
        if name != "speed":
            x = AUGMENTATIONS[name](x, rng)
    return x.astype(np.float32)
