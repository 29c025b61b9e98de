"""Quickstart: the public API in a dozen lines.

    python examples/quickstart.py [speech.wav] [--out DIR]

Encodes a file at both operating points, round-trips the tokens through the packet codec
(what goes over MQTT, entropy-coded with the bundle's tables), decodes, and writes
<name>.275.wav and <name>.175.wav next to the input (or into --out DIR). Without an
input it uses the shipped sample and writes into the current folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gacflow import Packet, decode_packet, encode_packet
from gacflow.audio import read_audio, write_wav
from gacflow.cli.offline_demo import sample_path
from gacflow.errors import GacflowError
from gacflow.model import Codec


def output_folder(given: Path | None, out: Path | None) -> Path:
    """--out wins; else next to the user's file; the shipped sample's folder may be read-only."""
    if out is not None:
        return out
    return given.parent if given is not None else Path.cwd()


def main() -> None:
    ap = argparse.ArgumentParser(description="Encode, packetize and decode one file.")
    ap.add_argument("input", nargs="?", type=Path, help="speech file (default: shipped sample)")
    ap.add_argument("--out", type=Path, help="folder for the decoded WAVs")
    args = ap.parse_args()
    src = args.input or sample_path()
    folder = output_folder(args.input, args.out)
    folder.mkdir(parents=True, exist_ok=True)
    wav = read_audio(src)
    codec = Codec.from_bundle()
    for mode in ("275", "175"):
        tokens = codec.encode(wav, mode)
        width = codec.layout.mode(mode).bits
        packet = Packet(stream_id=0, seq=0, first_frame=0, tokens=tokens.ids, width=width,
                        mode=mode, eos=True)
        wire = encode_packet(packet, codec.entropy)
        tokens.ids = decode_packet(wire, codec.entropy).tokens
        out = folder / f"{src.stem}.{mode}.wav"
        write_wav(out, codec.decode(tokens))
        print(f"mode {mode}: {len(tokens)} frames in one {len(wire)}-byte packet "
              f"({len(wire) * 8 / tokens.duration:.0f} bit/s) -> {out}")


if __name__ == "__main__":
    try:
        main()
    except GacflowError as exc:  # a bad input file: one line, not a traceback
        print(f"quickstart: error: {exc}", file=sys.stderr)
        sys.exit(2)
