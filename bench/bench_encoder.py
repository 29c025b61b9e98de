"""Edge encoder: file size and time per second of audio, FP32 vs INT8, ONNX Runtime and LiteRT.

    OMP_WAIT_POLICY=PASSIVE python bench/bench_encoder.py BUNDLE_DIR [BUNDLE_DIR ...]
        [--seconds 40] [--repeats 5]

Each BUNDLE_DIR is an exported bundle (gacflow-export output); give several to compare
quantization plans (the INT8 rows say which plan each bundle used). Every number is one thread,
batch 1, one `step` per 40 ms token frame (25 calls per second of audio, so per-call
overhead is included), fed with real speech features, after a warm-up. The LiteRT FP32
model is not part of a bundle: it is converted here from the bundle's encoder.pt (needs
TensorFlow) only to give INT8 something to be compared with.

Prints a markdown table and writes bench/results/encoder.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "encoder.md"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def time_runtime(rt, mels: np.ndarray, repeats: int) -> tuple[float, float]:
    """(median, best) seconds of `step` time per token frame over `repeats` passes."""
    rt.reset()
    for m in mels[:50]:
        rt.step(m)
    runs = []
    for _ in range(repeats):
        rt.reset()
        t0 = time.perf_counter()
        for m in mels:
            rt.step(m)
        runs.append((time.perf_counter() - t0) / len(mels))
    return float(np.median(runs)), float(min(runs))


class _FileLiteRT:
    """A LiteRT runtime over a loose .tflite file (for the FP32 comparison only)."""

    def __init__(self, path: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(path), num_threads=1)
        self.runner = it.get_signature_runner()
        self.shapes = {k: tuple(v["shape"]) for k, v in self.runner.get_input_details().items()
                       if k.startswith("state_in_")}
        self.reset()

    def reset(self) -> None:
        self.feeds = {k: np.zeros(s, np.float32) for k, s in self.shapes.items()}

    def step(self, mel: np.ndarray) -> np.ndarray:
        out = self.runner(mel=mel[None], **self.feeds)
        for k in self.feeds:
            self.feeds[k] = out["state_out_" + k[len("state_in_"):]]
        return out["latent"][0]


def fp32_tflite(bundle, out: Path) -> Path | None:
    try:
        import tensorflow as tf
        import torch

        from gacflow.export.tflite_export import TFEncoderStep
        from gacflow.model.codec import load_encoder
    except ImportError:
        return None
    torch.set_num_threads(1)
    model = bundle.model_config
    enc = load_encoder(model["encoder"], bundle.layout,
                       torch.load(bundle.path(model["encoder_file"]), weights_only=True))
    module, fn = TFEncoderStep(enc).concrete_function()
    out.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([fn], module).convert())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", type=Path, nargs="+")
    ap.add_argument("--seconds", type=float, default=40.0, help="speech per timed pass")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    from gacflow.audio import read_audio
    from gacflow.bundle import Bundle
    from gacflow.edge.runtime_onnx import OnnxEncoderRuntime
    from gacflow.export.audio_data import utterance_mels
    from gacflow.spec import FRAME_RATE, SAMPLE_RATE

    wav = read_audio(ROOT / "sdk" / "samples" / "speech_ru.wav")
    reps = int(np.ceil(args.seconds * SAMPLE_RATE / len(wav)))
    mels = utterance_mels(np.tile(wav, reps)[: int(args.seconds * SAMPLE_RATE)])

    rows = []
    fp32_done = False
    for path in args.bundles:
        bundle = Bundle.load(path)
        codec = bundle.codec_id
        edge = bundle.manifest.get("edge", {})
        onnx_plan = edge.get("onnx", {}).get("precision_plan", "")
        cases = [("ONNX Runtime", "fp32", "encoder.fp32.onnx")] if not fp32_done else []
        cases.append(("ONNX Runtime", f"int8 ({onnx_plan})" if onnx_plan else "int8",
                      "encoder.int8.onnx"))
        for engine, prec, name in cases:
            if bundle.has(name):
                rt = OnnxEncoderRuntime(bundle, threads=1, file=name)
                rows.append((codec, engine, prec, bundle.path(name).stat().st_size,
                             *time_runtime(rt, mels, args.repeats)))
        with tempfile.TemporaryDirectory() as tmp:
            try:
                from gacflow.edge.runtime_litert import LiteRTEncoderRuntime

                f32 = None if fp32_done else fp32_tflite(bundle, Path(tmp) / "fp32.tflite")
                if f32 is not None:
                    rows.append((codec, "LiteRT", "fp32", f32.stat().st_size,
                                 *time_runtime(_FileLiteRT(f32), mels, args.repeats)))
                if bundle.has("encoder.int8.tflite"):
                    q = edge.get("tflite", {}).get("quantization", "")
                    prec = "int8 (16x8)" if "int16 activations" in q else "int8"
                    rows.append((codec, "LiteRT", prec,
                                 bundle.path("encoder.int8.tflite").stat().st_size,
                                 *time_runtime(LiteRTEncoderRuntime(bundle, threads=1), mels,
                                               args.repeats)))
            except ImportError as exc:
                print(f"LiteRT skipped: {exc}", file=sys.stderr)
        fp32_done = True

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Edge encoder: size and speed (one thread)",
        "",
        f"CPU {cpu_name()} ({os.cpu_count()} cores, load average "
        f"{load:.1f} while measuring); {args.seconds:.0f} s of speech per pass, median of "
        f"{args.repeats} (best pass in brackets); {FRAME_RATE} `step` calls per second of "
        "audio, per-call overhead included.",
        "",
        "| codec | runtime | precision | file bytes | ms per call | ms per s of audio | "
        "% of real time |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for codec, engine, prec, size, med, best in rows:
        ms, bms = med * 1e3, best * 1e3
        lines.append(f"| {codec} | {engine} | {prec} | {size:,} | {ms:.3f} ({bms:.3f}) | "
                     f"{ms * FRAME_RATE:.2f} ({bms * FRAME_RATE:.2f}) | "
                     f"{ms * FRAME_RATE / 10:.2f} % ({bms * FRAME_RATE / 10:.2f} %) |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
