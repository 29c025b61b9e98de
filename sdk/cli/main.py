"""`gacflow`: offline encode / decode / info, the end-to-end demo, and evaluation."""

from __future__ import annotations

import argparse
import json
import sys

from .. import container
from ..audio import DEFAULT_MAX_SECONDS, read_audio, write_wav
from ..backends import AUTO, BACKENDS, resolve_backend
from ..bundle import Bundle
from ..extras import MissingExtraError, require
from ..spec import DEFAULT_MODE, FRAME_RATE, SAMPLE_RATE
from ..streaming import encode_whole
from ..tokens import Tokens
from .common import run_guarded

PROG = "gacflow"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description="Generative audio compression for IoT.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    e = sub.add_parser("encode", help="audio file -> .gac tokens")
    e.add_argument("input", help="WAV/FLAC/OGG, any sample rate or channel count")
    e.add_argument("output", help="output .gac file")
    e.add_argument("--mode", default=DEFAULT_MODE, choices=["275", "175"],
                   help="operating point: payload budget in bit/s (default 275)")
    e.add_argument("--bundle", default=None, help="model bundle folder (default: shipped)")
    e.add_argument("--backend", default=AUTO, choices=(AUTO, *BACKENDS),
                   help="encoder backend: torch (reference) or INT8 onnx/tflite (no torch); "
                        "auto (default): torch when installed, else onnx, else tflite")
    e.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS,
                   help=f"refuse longer inputs (default {DEFAULT_MAX_SECONDS:.0f} s)")

    d = sub.add_parser("decode", help=".gac tokens -> 16 kHz WAV")
    d.add_argument("input", help=".gac file")
    d.add_argument("output", help="output WAV file")
    d.add_argument("--bundle", default=None, help="model bundle folder (default: shipped)")
    d.add_argument("--decoder", default=None,
                   help="decoder size from the bundle (default: the bundle's default)")

    i = sub.add_parser("info", help="describe a .gac file")
    i.add_argument("input")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--tokens", action="store_true", help="include token ids (null = DTX frame)")
    i.add_argument("--bundle", default=None,
                   help="bundle whose entropy tables read coded packets (default: shipped)")

    # demo and eval parse their own options (see DELEGATED); listed here for --help.
    sub.add_parser("demo", help="end-to-end demo: edge agent -> MQTT -> receiver -> WAV "
                   "(--offline: local round trip)")
    sub.add_parser("eval", help="quality vs Codec 2 and Opus anchors")
    return ap


def cmd_encode(args: argparse.Namespace) -> int:
    wav = read_audio(args.input, max_seconds=args.max_seconds)
    bundle = Bundle.load(args.bundle)
    mode = bundle.layout.mode(args.mode)
    backend = resolve_backend(bundle, args.backend)
    tokens = encode_with_backend(bundle, wav, args.mode, backend)
    size = container.write(args.output, tokens, mode.bits, bundle.entropy)
    print(f"{args.output}: {len(tokens)} frames, {size} bytes, "
          f"{size * 8 / tokens.duration:.1f} bit/s (mode {args.mode}, codec {bundle.codec_id}, "
          f"backend {backend})")
    return 0


def encode_with_backend(bundle: Bundle, wav, mode: str, backend: str) -> Tokens:
    """Encode with any backend through the shared streaming encoder."""
    from ..backends import encoder_runtime

    return encode_whole(encoder_runtime(bundle, backend), bundle.layout, mode, bundle.codec_id,
                        wav, bundle.voice)


def cmd_decode(args: argparse.Namespace) -> int:
    require("torch", "cloud", "decode (the torch decoder)")
    bundle = Bundle.load(args.bundle)
    tokens, _ = container.read(args.input, bundle.entropy, bundle.codec_id)
    bundle.check_codec(tokens.codec_id)
    from ..model import Codec

    codec = Codec.from_bundle(bundle.root, decoder=args.decoder)
    wav = codec.decode(tokens)
    write_wav(args.output, wav)
    print(f"{args.output}: {len(wav) / SAMPLE_RATE:.2f} s at {SAMPLE_RATE} Hz")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    # only the manifest's tables are needed: no need to hash the model files
    held = Bundle.load(args.bundle, verify=False)
    tokens, info = container.read(args.input, held.entropy, held.codec_id)
    report = {
        "file": str(args.input),
        "codec_id": info.codec_id,
        "mode": info.mode,
        "sample_rate": info.sample_rate,
        "frame_rate": FRAME_RATE,
        "frames": info.frames,
        "dtx_frames": int((tokens.ids < 0).sum()),
        "duration_s": round(info.duration, 3),
        "bytes": info.bytes,
        "packets": info.packets,
        "bitrate_bps": round(info.bitrate, 2),
        "voice_code": tokens.voice.hex() if tokens.voice is not None else None,
    }
    if args.tokens:
        report["tokens"] = [[t] if t is not None else None for t in tokens.as_lists()]
    if args.json:
        print(json.dumps(report))
    else:
        for k, v in report.items():
            if k != "tokens":
                print(f"{k:>12}: {v}")
        if args.tokens:
            print(" ".join("-" if t is None else str(t) for t in tokens.as_lists()))
    return 0


def _delegate(module: str, func: str, rest: list[str]) -> int:
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:  # a dependency of an extra this install lacks
        raise MissingExtraError(f"{module} needs {exc.name}: pip install 'gacflow[cloud,eval]'")\
            from exc
    return int(getattr(mod, func)(rest))


def _wants_help(rest: list[str]) -> bool:
    """--help needs no optional dependency: answer it before checking them."""
    return any(a in ("-h", "--help") for a in rest)


def _demo(rest: list[str]) -> int:
    """The end-to-end demo; `--offline` runs the local round trip. Both decode with torch."""
    help_only = _wants_help(rest)
    if "--offline" in rest:
        from .offline_demo import run

        if not help_only:
            require("torch", "cloud", "demo --offline (the torch codec)")
        return run(rest)
    if not help_only:
        require("torch", "cloud", "demo (the cloud decoder)",
                hint="the edge agent alone is gacflow-edge")
        require("paho.mqtt", "cloud", "demo (MQTT)")
    return _delegate("gacflow.cloud.demo", "run_demo", rest)


def _eval(rest: list[str]) -> int:
    if not _wants_help(rest):
        require("torch", "eval", "eval")
    return _delegate("gacflow.eval.cli", "main", rest)


DELEGATED = {"demo": _demo, "eval": _eval}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in DELEGATED:
        return run_guarded(PROG, lambda: DELEGATED[argv[0]](argv[1:]))
    args = build_parser().parse_args(argv)
    handlers = {
        "encode": lambda: cmd_encode(args),
        "decode": lambda: cmd_decode(args),
        "info": lambda: cmd_info(args),
    }
    return run_guarded(PROG, handlers[args.cmd])


if __name__ == "__main__":
    sys.exit(main())
