"""Quickstart: the public API in a dozen lines.

    python examples/quickstart.py [speech.wav]

Encodes a file at both operating points, round-trips the tokens through the packet codec
(what goes over MQTT, entropy-coded with the bundle's tables), decodes, and writes the
results next to the input's name.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gacflow import Packet, decode_packet, encode_packet
from gacflow.audio import read_audio, write_wav
from gacflow.cli.offline_demo import sample_path
from gacflow.model import Codec


def main() -> None:
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else sample_path()
    wav = read_audio(src)
    codec = Codec.from_bundle()
    for mode in ("275", "175"):
        tokens = codec.encode(wav, mode)
        width = codec.layout.mode(mode).bits
        packet = Packet(stream_id=0, seq=0, first_frame=0, tokens=tokens.ids, width=width,
                        mode=mode, eos=True)
        wire = encode_packet(packet, codec.entropy)
        tokens.ids = decode_packet(wire, codec.entropy).tokens
        out = Path(f"{src.stem}.{mode}.wav")
        write_wav(out, codec.decode(tokens))
        print(f"mode {mode}: {len(tokens)} frames in one {len(wire)}-byte packet "
              f"({len(wire) * 8 / tokens.duration:.0f} bit/s) -> {out}")


if __name__ == "__main__":
    main()
