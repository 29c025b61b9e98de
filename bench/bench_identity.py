"""Where does the decoded speech lose the speaker? Speaker-similarity oracles per part.

For each clip the codec's decoded audio (mode 275, the bundle's default decoder, without
its voice code) is compared with the input by resemblyzer, then:

- WORLD swaps (needs `pip install pyworld`): input and decoded audio are analysed into
  F0, spectral envelope and aperiodicity; the decoded audio is resynthesised with one of
  them taken from the input (or with the input's envelope only in some bands).
- Static EQ: the decoded audio filtered by the long-term log-spectrum difference to the
  input, at several smoothings, and the codec's own envelope code (what ships).

Prints a table and writes bench/results/identity.md. Run:
    OMP_WAIT_POLICY=PASSIVE python bench/bench_identity.py [--data corpus:valid] [--skip 0]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy.signal import istft, stft
from tqdm import tqdm

from gacflow.eval.data import ClipFilter, load_clips
from gacflow.eval.metrics import SpeakerSim
from gacflow.model import Codec
from gacflow.spec import SAMPLE_RATE

OUT = Path(__file__).parent / "results"
NFFT = 512


def world_parts(x: np.ndarray):
    import pyworld as pw

    x = x.astype(np.float64)
    f0, t = pw.harvest(x, SAMPLE_RATE, frame_period=5.0)
    return f0, np.log(pw.cheaptrick(x, f0, t, SAMPLE_RATE)), pw.d4c(x, f0, t, SAMPLE_RATE)


def world_synth(f0, log_env, ap) -> np.ndarray:
    import pyworld as pw

    return pw.synthesize(f0, np.ascontiguousarray(np.exp(log_env)), np.ascontiguousarray(ap),
                         SAMPLE_RATE, 5.0).astype(np.float32)


def world_rows(ref: np.ndarray, dec: np.ndarray) -> dict[str, np.ndarray]:
    """Decoded audio resynthesised with parts of the input (name -> waveform)."""
    fr, er, ar = world_parts(ref)
    fd, ed, ad = world_parts(dec)
    n = min(len(fr), len(fd))
    fr, er, ar, fd, ed, ad = fr[:n], er[:n], ar[:n], fd[:n], ed[:n], ad[:n]
    both = (fr > 0) & (fd > 0)
    freqs = np.linspace(0, SAMPLE_RATE / 2, er.shape[1])
    loud = er.sum(1) > np.percentile(er.sum(1), 30)
    rows = {
        "WORLD: input, its own parts": world_synth(fr, er, ar),
        "WORLD: decoded, its own parts": world_synth(fd, ed, ad),
        "WORLD: decoded + input F0": world_synth(np.where(both, fr, fd), ed, ad),
        "WORLD: decoded + input aperiodicity": world_synth(fd, ed, ar),
        "WORLD: decoded + input envelope": world_synth(fd, er, ad),
        "WORLD: decoded + static EQ to input": world_synth(
            fd, ed + er[loud].mean(0) - ed[loud].mean(0), ad),
    }
    for lo, hi in ((0, 1000), (0, 4000), (4000, 8001)):
        band = (freqs >= lo) & (freqs < hi)
        rows[f"WORLD: decoded + input envelope {lo // 1000}-{hi // 1000} kHz"] = world_synth(
            fd, np.where(band, er, ed), ad)
    return rows


def ltas(spec: np.ndarray) -> np.ndarray:
    """Mean log-power spectrum of the louder 70 % of frames."""
    p = np.abs(spec) ** 2 + 1e-10
    e = p.sum(0)
    return np.log(p[:, e > np.percentile(e, 30)]).mean(1)


def eq_rows(ref: np.ndarray, dec: np.ndarray) -> dict[str, np.ndarray]:
    """Static EQ of the decoded audio to the input's long-term spectrum, several smoothings."""
    def spec(x):
        return stft(x, SAMPLE_RATE, nperseg=NFFT, noverlap=NFFT - 128)[2]

    D = spec(dec)
    diff = ltas(spec(ref)) - ltas(D)
    freqs = np.linspace(0, SAMPLE_RATE / 2, len(diff))
    rows = {}
    for order in (None, 24, 12, 6):
        g = diff
        if order is not None:
            c = np.fft.irfft(diff)
            c[order:-order] = 0
            g = np.fft.rfft(c).real
        g = np.clip(g, -2.76, 2.76)  # +-12 dB of power
        for name, gain in ((f"EQ {order or 'full'} cepstral", g),
                           *([(f"EQ {order} cepstral, below 4 kHz only",
                               np.where(freqs < 4000, g, 0.0))] if order == 12 else [])):
            out = istft(D * np.exp(gain / 2)[:, None], SAMPLE_RATE, nperseg=NFFT,
                        noverlap=NFFT - 128)[1]
            rows[name] = out[: len(dec)].astype(np.float32)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="corpus:valid")
    ap.add_argument("--max-files", type=int, default=20)
    ap.add_argument("--skip", type=int, default=0)
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--no-world", action="store_true", help="EQ rows only (no pyworld)")
    args = ap.parse_args()
    clips = load_clips(args.data, args.max_files, ClipFilter(min_seconds=4), skip=args.skip)
    codec = Codec.from_bundle(args.bundle)
    sim = SpeakerSim()
    if not sim.available():
        raise SystemExit(sim.error)
    makers: list[Callable] = [eq_rows] if args.no_world else [world_rows, eq_rows]
    scores: dict[str, list[float]] = {}
    for clip in tqdm(clips, desc="identity", unit="clip"):
        tokens = codec.encode(clip.wav)
        rows = {}
        if tokens.voice is not None and codec.matches_timbre:
            rows["decoded with the envelope code (shipped)"] = codec.decode(tokens)
        tokens.voice = None
        dec = codec.decode(tokens)[: len(clip.wav)]
        rows = {"decoded (no code)": dec, **rows}
        for make in makers:
            rows.update(make(clip.wav, dec))
        for name, wav in rows.items():
            scores.setdefault(name, []).append(sim.score(clip.wav, wav[: len(clip.wav)], clip))
    base = np.array(scores["decoded (no code)"])
    lines = [f"Data: `{args.data}`, {len(clips)} clips (skip {args.skip}); codec "
             f"`{codec.codec_id}`, mode 275, default decoder. Speaker similarity to the input "
             "(resemblyzer), mean over clips; change vs the decoded audio, paired, +- s.e.", "",
             "| audio | speaker sim | change |", "|---|---:|---:|"]
    for name, vals in scores.items():
        v = np.array(vals)
        d = v - base
        lines.append(f"| {name} | {v.mean():.3f} | {d.mean():+.3f} +- "
                     f"{d.std(ddof=1) / np.sqrt(len(d)):.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / "identity.md").write_text(text)
    print(f"wrote {OUT / 'identity.md'}")


if __name__ == "__main__":
    main()
