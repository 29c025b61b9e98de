"""Device channels: what cheap microphones, rooms and telephone links do to speech.

Training feeds the encoder a crop that went through a random channel and asks the decoder
for the clean crop, so tokens carry the speech and not the device: the receiver then
synthesises clean speech from a noisy, narrowband, codec-mangled input. (Spectral balance
still reaches the receiver through the envelope voice code, sent once per stream.)

Each step maps one float32 16 kHz row to a row of the same length. The link codecs run the
real tools round trip (G.722 via the `g722` package, GSM 06.10 via sox, Opus via
opus-tools, Codec 2 via c2enc/c2dec); G.711 is mu-law/A-law companding to 8 bits at 8 kHz.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable

import numpy as np

from gacflow.audio import resample
from gacflow.errors import ConfigError
from gacflow.spec import SAMPLE_RATE

NOISE_SNR_DB = (5.0, 30.0)
OPUS_KBPS = (6, 8, 10, 12, 16)
CODEC2_MODES = ("3200", "2400", "1600", "1400", "1300", "1200")
G722_RATES = (48000, 56000, 64000)
# Chance that each stage touches a crop that goes through a channel at all.
STAGE_PROB = {"mic": 0.6, "reverb": 0.6,  # reverb() itself skips half
              "noise": 0.5, "clip": 0.15, "link": 0.6}
TOOLS = {"gsm": "sox", "opus": "opusenc", "codec2": "c2enc"}


def _pcm16(row: np.ndarray) -> bytes:
    return (np.clip(row, -1, 1) * 32767).astype("<i2").tobytes()


def _from_pcm16(raw: bytes, n: int) -> np.ndarray:
    out = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    return np.pad(out, (0, max(0, n - len(out))))[:n]


def _pipe(cmds: list[list[str]], data: bytes) -> bytes:
    """Run a shell-free pipeline of commands on data; returns the last one's stdout."""
    for cmd in cmds:
        data = subprocess.run(cmd, input=data, capture_output=True, check=True).stdout
    return data


def _via_8k(row: np.ndarray, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    narrow = resample(row, SAMPLE_RATE, 8000)
    return resample(fn(narrow), 8000, SAMPLE_RATE)[: len(row)]


def band_mask(n: int, rate: int, lo: float, hi: float, edge: float = 100.0) -> np.ndarray:
    """A smooth band-pass gain over rfft bins (raised-cosine edges `edge` Hz wide)."""
    hz = np.fft.rfftfreq(n, 1 / rate)
    up = np.clip((hz - (lo - edge / 2)) / edge, 0, 1)
    down = np.clip(((hi + edge / 2) - hz) / edge, 0, 1)
    return (0.5 - 0.5 * np.cos(np.pi * up)) * (0.5 - 0.5 * np.cos(np.pi * down))


def telephone(row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """8 kHz sampling and the 300-3400 Hz telephone band (edges drawn per crop)."""
    lo, hi = rng.uniform(200, 400), rng.uniform(3200, 3700)

    def band(x: np.ndarray) -> np.ndarray:
        return np.fft.irfft(np.fft.rfft(x) * band_mask(len(x), 8000, lo, hi), len(x))

    return _via_8k(row, band)


def g711(row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """mu-law (mu=255) or A-law (A=87.6) companding to 8 bits at 8 kHz, and back."""
    def mulaw(x: np.ndarray) -> np.ndarray:
        y = np.sign(x) * np.log1p(255 * np.abs(x)) / np.log1p(255)
        y = np.round(y * 127) / 127
        return np.sign(y) * np.expm1(np.abs(y) * np.log1p(255)) / 255

    def alaw(x: np.ndarray) -> np.ndarray:
        a, ax = 87.6, np.abs(x)
        y = np.where(ax < 1 / a, a * ax, 1 + np.log(np.maximum(a * ax, 1e-12))) / (1 + np.log(a))
        y = np.round(np.sign(x) * y * 127) / 127
        ay = np.abs(y) * (1 + np.log(a))
        return np.sign(y) * np.where(ay < 1, ay / a, np.exp(ay - 1) / a)

    return _via_8k(np.clip(row, -1, 1), mulaw if rng.random() < 0.5 else alaw)


def g722(row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import G722

    rate = int(rng.choice(G722_RATES))
    pcm = (np.clip(row, -1, 1) * 32767).astype(np.int16)
    coded = G722.G722(SAMPLE_RATE, rate).encode(pcm)
    out = np.asarray(G722.G722(SAMPLE_RATE, rate).decode(coded), np.float32) / 32768.0
    return np.pad(out, (0, max(0, len(row) - len(out))))[: len(row)]


def gsm(row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    raw = ["-t", "raw", "-r", "8000", "-e", "signed", "-b", "16", "-c", "1"]

    def link(x: np.ndarray) -> np.ndarray:
        out = _pipe([["sox", *raw, "-", "-t", "gsm", "-"],
                     ["sox", "-t", "gsm", "-r", "8000", "-c", "1", "-", *raw, "-"]], _pcm16(x))
        return _from_pcm16(out, len(x))

    return _via_8k(row, link)


def opus(row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    kbps = str(int(rng.choice(OPUS_KBPS)))
    out = _pipe([["opusenc", "--quiet", "--bitrate", kbps, "--raw", "--raw-rate",
                  str(SAMPLE_RATE), "--raw-chan", "1", "-", "-"],
                 ["opusdec", "--quiet", "--rate", str(SAMPLE_RATE), "-", "-"]], _pcm16(row))
    return _from_pcm16(out, len(row))


def codec2(row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mode = str(rng.choice(CODEC2_MODES))

    def link(x: np.ndarray) -> np.ndarray:
        out = _pipe([["c2enc", mode, "-", "-"], ["c2dec", mode, "-", "-"]], _pcm16(x))
        return _from_pcm16(out, len(x))

    return _via_8k(row, link)


LINKS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "telephone": telephone, "g711": g711, "g722": g722, "gsm": gsm, "opus": opus,
    "codec2": codec2,
}


def cheap_mic(row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A small capsule: weak bass, a presence peak, an early roll-off, some saturation."""
    spec = np.fft.rfft(row.astype(np.float64))
    hz = np.fft.rfftfreq(len(row), 1 / SAMPLE_RATE)
    hp, lp = rng.uniform(80, 400), rng.uniform(3500, 8000)
    gain = 1 / np.sqrt(1 + (hp / np.maximum(hz, 1)) ** 4) / np.sqrt(1 + (hz / lp) ** 6)
    peak_hz, peak_db, width = rng.uniform(1500, 5000), rng.uniform(0, 10), rng.uniform(0.2, 0.6)
    gain *= 10 ** (peak_db / 20 * np.exp(-0.5 * (np.log2(np.maximum(hz, 1) / peak_hz)
                                                 / width) ** 2))
    out = np.fft.irfft(spec * gain, len(row))
    drive = rng.uniform(1.0, 3.0)
    return (np.tanh(drive * out) / np.tanh(drive)).astype(np.float32)


def noise(row: np.ndarray, rng: np.random.Generator, others: np.ndarray) -> np.ndarray:
    """Background at 5-30 dB SNR: white, pink, brown, mains hum, or babble (other crops)."""
    n = len(row)
    kind = rng.choice(["white", "pink", "brown", "hum", "babble"])
    if kind == "babble" and len(others):
        bg = others[rng.integers(0, len(others), 3)].sum(axis=0)[:n].astype(np.float64)
    elif kind == "hum":
        t = np.arange(n) / SAMPLE_RATE
        f = rng.choice([50.0, 60.0])
        bg = sum(rng.uniform(0.2, 1) / k * np.sin(2 * np.pi * f * k * t + rng.uniform(0, 6))
                 for k in range(1, 8)) + 0.1 * rng.standard_normal(n)
    else:
        spec = np.fft.rfft(rng.standard_normal(n))
        tilt = {"white": 0.0, "pink": 0.5, "brown": 1.0}.get(kind, 0.0)
        spec[1:] /= np.arange(1, len(spec)) ** tilt
        spec[0] = 0
        bg = np.fft.irfft(spec, n)
    power = float(np.mean(row.astype(np.float64) ** 2)) + 1e-10
    snr = rng.uniform(*NOISE_SNR_DB)
    bg = bg * np.sqrt(power / (np.mean(bg**2) + 1e-12) / 10 ** (snr / 10))
    return (row + bg).astype(np.float32)


def clip(row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Too much input gain: the ADC clips the loudest 1-10 % of the peaks."""
    level = np.quantile(np.abs(row), rng.uniform(0.9, 0.99)) + 1e-6
    return (np.clip(row, -level, level) / level * rng.uniform(0.5, 0.99)).astype(np.float32)


def check_tools() -> None:
    """One clear error before training starts when a link codec's tool is missing."""
    missing = [f"{tool} ({name})" for name, tool in TOOLS.items() if not shutil.which(tool)]
    try:
        import G722  # noqa: F401
    except ImportError:
        missing.append("the g722 package (pip install g722)")
    if missing:
        raise ConfigError("channel augmentation needs " + ", ".join(missing) +
                          " (apt-get install sox opus-tools codec2)")


def through_channel(x: np.ndarray, rng: np.random.Generator, prob: float) -> np.ndarray:
    """Each crop of x [B, N] goes, with chance `prob`, through a random device channel:
    microphone -> room -> background noise -> clipping -> link codec."""
    from .augment import reverb

    out = x.copy()
    for i in range(len(x)):
        if rng.random() >= prob:
            continue
        row = x[i].astype(np.float32)
        if rng.random() < STAGE_PROB["mic"]:
            row = cheap_mic(row, rng)
        if rng.random() < STAGE_PROB["reverb"]:
            row = reverb(row[None], np.random.default_rng(rng.integers(1 << 31)))[0]
        if rng.random() < STAGE_PROB["noise"]:
            row = noise(row, rng, np.delete(x, i, axis=0))
        if rng.random() < STAGE_PROB["clip"]:
            row = clip(row, rng)
        if rng.random() < STAGE_PROB["link"]:
            row = LINKS[str(rng.choice(list(LINKS)))](row, rng)
        peak = float(np.max(np.abs(row))) + 1e-9
        out[i] = row / peak * min(peak, 0.99)
    return np.clip(out, -1, 1).astype(np.float32)
