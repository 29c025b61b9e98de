"""One export: source models -> staged encoder files -> bundle -> validation report.

Order matters: the bundle is written (and its manifest hashes every file) before the
report is made, because the report runs the exported files through the same verified
loaders the device uses; validation.json is then added and the manifest rewritten.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gacflow.bundle import MANIFEST, Bundle, manifest_extras, write_manifest
from gacflow.errors import ConfigError
from gacflow.fsq import latent_to_tokens
from gacflow.spec import TokenLayout

from .audio_data import calibration_warning, load_utterances, total_seconds, utterance_mels
from .bundle_writer import VALIDATION_FILE, carry_bundle_parts, write_torch_bundle
from .choices import FORMATS
from .source import ExportSource, as_checkpoint
from .validate import format_report, validate_bundle


@dataclass
class ExportOptions:
    formats: tuple[str, ...] = FORMATS
    calibration: Path | None = None
    validation: Path | None = None
    calibration_seconds: float = 300.0
    validation_seconds: float = 300.0
    tflite_activations: str = "int16"  # "int16" (16x8) or "int8"
    onnx_precision: str = "auto"  # auto, or one of onnx_export.PLANS
    min_agreement: float = 0.97
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def onnx_agreement(path: Path, encoder, mels: list[np.ndarray], layout: TokenLayout) -> float:
    """275-mode token agreement of an ONNX step model with the torch encoder."""
    from .onnx_export import ort_session, run_sequence

    sess = ort_session(path)
    same = total = 0
    for m in mels:
        with torch.no_grad():
            ref = encoder(torch.from_numpy(m.reshape(1, -1, m.shape[-1])))[0].numpy()
        got = run_sequence(sess, m)[0]
        mode = layout.mode("275")
        same += int((latent_to_tokens(got, layout, mode) == latent_to_tokens(ref, layout, mode)
                     ).sum())
        total += len(m)
    return same / max(total, 1)


def quantize_onnx(src: ExportSource, fp32: Path, out: Path, calib: list[np.ndarray],
                  opts: ExportOptions) -> str:
    """Quantize with the requested plan; "auto" tries "fast", then "dynamic", then "wide",
    then "uint16", taking the first whose agreement on training-speaker audio (not the
    validation set) meets the target: the order of their edge time. "fast" runs at the
    speed of all-uint8 (~0.35 ms per call); "dynamic" (per-call activation ranges) at
    about fp32 speed (~1.6x); "wide" keeps ~1 point more tokens than "fast" at ~2.5x;
    "uint16" runs the convolutions in float (~3x). Returns the plan used."""
    from .onnx_export import quantize_int8

    if opts.onnx_precision != "auto":
        quantize_int8(fp32, out, calib, plan=opts.onnx_precision)
        return opts.onnx_precision
    select = [utterance_mels(u) for u in load_utterances(opts.calibration, "train", 60.0,
                                                         seed=7)]
    for plan in ("fast", "dynamic", "wide"):
        quantize_int8(fp32, out, calib, plan=plan)
        if onnx_agreement(out, src.encoder, select, src.layout) >= opts.min_agreement:
            return plan
    quantize_int8(fp32, out, calib, plan="uint16")
    return "uint16"


def stage_encoders(src: ExportSource, opts: ExportOptions, stage: Path
                   ) -> tuple[dict[str, Path], dict[str, str]]:
    """Write the encoder files into `stage`; returns (bundle name -> path, choices made)."""
    from .onnx_export import export_fp32

    utts = load_utterances(opts.calibration, "train", opts.calibration_seconds, seed=0)
    warning = calibration_warning(total_seconds(utts))
    if warning:
        from tqdm import tqdm

        tqdm.write(f"gacflow-export: {warning}", file=sys.stderr)  # on its own line, not the bar's
    calib = [utterance_mels(u) for u in utts]
    files: dict[str, Path] = {}
    chosen: dict[str, str] = {}
    if "onnx" in opts.formats:
        fp32 = export_fp32(src.encoder, stage / "encoder.fp32.onnx")
        files["encoder.fp32.onnx"] = fp32
        files["encoder.int8.onnx"] = stage / "encoder.int8.onnx"
        chosen["onnx"] = quantize_onnx(src, fp32, files["encoder.int8.onnx"], calib, opts)
    if "tflite" in opts.formats:
        from .tflite_export import export_tflite_int8

        files["encoder.int8.tflite"] = export_tflite_int8(
            src.encoder, stage / "encoder.int8.tflite", calib,
            int16_activations=opts.tflite_activations == "int16")
    return files, chosen


ONNX_PLAN_TEXT = {
    "uint8": "uint8 activations",
    "fast": "uint8 activations; residual stream and head logit uint16; sigmoid/scale float",
    "dynamic": "uint8 activations quantized per call from their own range; depthwise convs "
               "and sigmoid/scale float",
    "wide": "uint8 activations; residual stream, depthwise outputs and head logit uint16; "
            "sigmoid/scale float",
    "uint16": "uint16 activations; sigmoid/scale float",
}


def edge_manifest(opts: ExportOptions, files: dict[str, Path], chosen: dict[str, str]
                  ) -> dict[str, Any]:
    """What the device needs to know about the encoder files (and how they were made)."""
    entry: dict[str, Any] = {"graph": "encoder step: mel[1,4,80] + state_in_i -> latent[1,D] "
                                      "+ state_out_i (bounded latent before FSQ rounding)"}
    if "encoder.int8.onnx" in files:
        entry["onnx"] = {"file": "encoder.int8.onnx", "fp32_file": "encoder.fp32.onnx",
                         "precision_plan": chosen["onnx"],
                         "quantization": ("dynamic, per-channel uint8 weights, "
                                          if chosen["onnx"] == "dynamic" else
                                          "static QDQ, per-channel int8 weights, ")
                                         + ONNX_PLAN_TEXT[chosen["onnx"]],
                         "min_onnxruntime": "1.18"}
    if "encoder.int8.tflite" in files:
        entry["tflite"] = {"file": "encoder.int8.tflite",
                           "quantization": "full integer, int8 weights, "
                           f"{opts.tflite_activations} activations, float32 I/O"}
    return entry


def run_export(src: ExportSource, out: Path, opts: ExportOptions) -> dict[str, Any]:
    """Write a complete bundle to `out` and return its validation report."""
    from tqdm import tqdm

    out = Path(out)
    for folder in (opts.calibration, opts.validation):
        if folder is not None and not Path(folder).is_dir():
            raise ConfigError(f"{folder}: no such folder of speech files")
    bar = tqdm(total=3, desc="gacflow-export", unit="stage", leave=False)
    try:
        return _run_export(src, out, opts, bar)
    finally:
        bar.close()


def _run_export(src: ExportSource, out: Path, opts: ExportOptions, bar) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="gacflow-export-") as tmp:
        stage = Path(tmp)
        bar.set_postfix_str("encoders: export, calibrate, quantize")
        files, chosen = stage_encoders(src, opts, stage)
        bar.update()
        bar.set_postfix_str("bundle")
        ckpt = stage / "checkpoint.pt"
        torch.save(as_checkpoint(src), ckpt)
        write_torch_bundle(ckpt, out, name=opts.name or src.name,
                           extra_files={k: v for k, v in files.items()},
                           extra_manifest={"edge": edge_manifest(opts, files, chosen),
                                           **opts.extra})
        if Path(src.origin).is_dir():  # a bundle: keep all its decoders and tables
            carry_bundle_parts(src.origin, out)
    bar.update()
    bar.set_postfix_str("validation")
    bundle = Bundle.load(out)
    utts = load_utterances(opts.validation, "valid", opts.validation_seconds, seed=1)
    formats = [f for f, name in (("onnx-fp32", "encoder.fp32.onnx"),
                                 ("onnx-int8", "encoder.int8.onnx"),
                                 ("tflite-int8", "encoder.int8.tflite")) if bundle.has(name)]
    report = validate_bundle(bundle, src.encoder, utts, formats)
    bar.update()
    report["source"] = str(src.origin)
    report["codec_id"] = bundle.codec_id
    (out / VALIDATION_FILE).write_text(json.dumps(report, indent=2) + "\n")
    m = json.loads((out / MANIFEST).read_text())
    extra = manifest_extras(m)
    write_manifest(out, m["codec"]["name"], m["codec"]["id"], bundle.layout, m["model"], extra)
    Bundle.load(out)  # the final bundle verifies
    report["table"] = format_report(report)
    return report
