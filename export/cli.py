"""`gacflow-export CHECKPOINT_OR_BUNDLE --out DIR`: write a complete, validated bundle.

Exit status 0 on success, 2 on a user error (one line on stderr), 1 when the export ran
but the INT8 token agreement fell below --min-agreement (the bundle is still written).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gacflow.errors import ConfigError, GacflowError
from gacflow.extras import require

from .choices import FORMATS, PLANS


def parse_formats(text: str) -> tuple[str, ...]:
    items = tuple(dict.fromkeys(s.strip().lower() for s in text.split(",") if s.strip()))
    bad = [s for s in items if s not in FORMATS]
    if not items or bad:
        raise ConfigError(f"--formats {text!r}: choose from {', '.join(FORMATS)} "
                          "(comma-separated)")
    return items


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="gacflow-export",
        description="Export a training checkpoint or a bundle to a bundle with ONNX "
                    "fp32/INT8 and LiteRT INT8 encoders, and print a validation report.")
    ap.add_argument("source", type=Path, help="training checkpoint (.pt) or bundle directory")
    ap.add_argument("--out", type=Path, required=True, help="bundle directory to write")
    ap.add_argument("--formats", default=",".join(FORMATS),
                    help="comma-separated: onnx, tflite (default: both)")
    ap.add_argument("--calibration", type=Path, default=None,
                    help="folder of speech files (or a corpus folder: its train split) "
                         "for INT8 calibration "
                         "(default: the training corpus data/corpus/train.npy)")
    ap.add_argument("--validation", type=Path, default=None,
                    help="folder of held-out speech for the report "
                         "(default: data/corpus/valid.npy, an unseen speaker)")
    ap.add_argument("--calibration-seconds", type=float, default=300.0,
                    help="speech used to set activation ranges (more covers rarer peaks)")
    ap.add_argument("--validation-seconds", type=float, default=300.0,
                    help="held-out speech for the report (agreement is read to ~0.1 point)")
    ap.add_argument("--tflite-activations", choices=("int16", "int8"), default="int16",
                    help="LiteRT activation width; weights are int8 either way "
                         "(default int16: see docs/export.md)")
    ap.add_argument("--onnx-precision", choices=("auto",) + PLANS, default="auto",
                    help="ONNX activation plan: uint8 (all), fast (residual stream uint16), "
                         "dynamic (per-call activation ranges, ~1.6x slower), wide (depthwise "
                         "outputs uint16 too, ~2.5x), uint16 (all, ~3x); auto = the first of "
                         "fast, dynamic, wide, uint16 that meets --min-agreement on "
                         "training-speaker audio")
    ap.add_argument("--name", default=None, help="codec name (default: the source's)")
    ap.add_argument("--min-agreement", type=float, default=0.97,
                    help="exit 1 if an INT8 format's 275-mode agreement is below this")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the export")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        formats = parse_formats(args.formats)
        if args.out.resolve() == args.source.resolve():
            raise ConfigError("--out must differ from the source (the export rewrites it)")
        if args.out.exists() and (not args.out.is_dir() or (
                any(args.out.iterdir()) and not (args.out / "manifest.json").is_file())):
            raise ConfigError(f"--out {args.out} exists and is not a bundle; refusing to "
                              "replace it (pick a new or empty folder)")
        require("torch", "export", "the export")
        if "onnx" in formats:
            require("onnx", "export", "--formats onnx")
            require("onnxruntime", "export", "--formats onnx")
        if "tflite" in formats:
            require("tensorflow", "export", "--formats tflite", hint="or pass --formats onnx")
        import torch

        torch.set_num_threads(max(1, args.threads))
        from .pipeline import ExportOptions, run_export
        from .source import load_source

        src = load_source(args.source)
        opts = ExportOptions(formats=formats, calibration=args.calibration,
                             validation=args.validation,
                             calibration_seconds=args.calibration_seconds,
                             validation_seconds=args.validation_seconds,
                             tflite_activations=args.tflite_activations,
                             onnx_precision=args.onnx_precision,
                             min_agreement=args.min_agreement, name=args.name)
        report = run_export(src, args.out, opts)
    except GacflowError as exc:
        print(f"gacflow-export: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"gacflow-export: {exc.filename or ''}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} (codec {report['codec_id']})")
    print(report["table"])
    low = [f for f, e in report["formats"].items()
           if "int8" in f and e["token_agreement_275"] < args.min_agreement]
    if low:
        print(f"gacflow-export: token agreement below {args.min_agreement:.0%} for "
              f"{', '.join(low)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
