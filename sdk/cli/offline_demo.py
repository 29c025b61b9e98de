"""`gacflow demo --offline`: encode -> .gac -> decode on one machine, no broker.

The quickest proof the codec works on a given file, and the fallback when the cloud
part is not installed. Reports what a user asks first: how small, and how good.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import container
from ..audio import read_audio, write_wav
from ..bundle import Bundle
from ..spec import SAMPLE_RATE

PCM_BITRATE = SAMPLE_RATE * 16


def sample_path() -> Path:
    return Path(__file__).resolve().parents[1] / "samples" / "speech_ru.wav"


def stoi_or_none(ref, deg) -> float | None:
    """STOI if pystoi is installed (the [eval] extra), else None."""
    try:
        from pystoi import stoi
    except ImportError:
        return None
    n = min(len(ref), len(deg))
    return float(stoi(ref[:n], deg[:n], SAMPLE_RATE, extended=False))


def run(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="gacflow demo --offline")
    ap.add_argument("--offline", action="store_true")
    ap.add_argument("--input", default=str(sample_path()))
    ap.add_argument("--out", default="gacflow-demo")
    ap.add_argument("--mode", default="275", choices=["275", "175"])
    ap.add_argument("--bundle", default=None)
    args = ap.parse_args(argv)
    from ..model import Codec

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wav = read_audio(args.input)
    bundle = Bundle.load(args.bundle)
    codec = Codec.from_bundle(bundle.root)
    tokens = codec.encode(wav, args.mode)
    gac = out / (Path(args.input).stem + ".gac")
    size = container.write(gac, tokens, bundle.layout.mode(args.mode).bits, bundle.entropy)
    decoded = codec.decode(tokens)
    wav_out = out / (Path(args.input).stem + ".decoded.wav")
    write_wav(wav_out, decoded)
    bitrate = size * 8 / tokens.duration
    score = stoi_or_none(wav, decoded)
    print(f"input        {args.input} ({len(wav) / SAMPLE_RATE:.1f} s)")
    print(f"tokens       {gac} ({size} bytes, mode {args.mode}, codec {bundle.codec_id})")
    print(f"decoded      {wav_out}")
    print(f"bitrate      {bitrate:.1f} bit/s (headers included)")
    print(f"compression  {PCM_BITRATE / bitrate:.0f}x smaller than 16-bit PCM")
    print(f"STOI         {score:.3f}" if score is not None else
          "STOI         n/a (pip install pystoi)")
    return 0
