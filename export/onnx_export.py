"""Checkpoint -> ONNX fp32 step graph -> ONNX INT8 (static, QDQ, per-channel).

Static quantization needs activation ranges; `StepCalibrationReader` walks real
utterances frame by frame, feeding back the graph's own state outputs, so the state
inputs are calibrated on the values they really take when streaming.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from gacflow.model.encoder import Encoder

from .choices import PLANS
from .graph import LATENT_OUTPUT, MEL_INPUT, EncoderStepGraph

OPSET = 17


def export_fp32(encoder: Encoder, out: Path) -> Path:
    """Write the fp32 step graph (static shapes, batch 1)."""
    graph = EncoderStepGraph(encoder).eval()
    with torch.no_grad():
        torch.onnx.export(
            graph, graph.example_inputs(), str(out), input_names=graph.input_names(),
            output_names=graph.output_names(), opset_version=OPSET, dynamo=False,
        )
    import onnx

    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    model.producer_name = "gacflow-export"
    onnx.save(model, str(out))
    return out


def state_feeds(session) -> dict[str, np.ndarray]:
    """Zero states for every non-mel input of an ORT session."""
    feeds = {}
    for i in session.get_inputs():
        if i.name != MEL_INPUT:
            feeds[i.name] = np.zeros(i.shape, dtype=np.float32)
    return feeds


def run_sequence(session, mels: np.ndarray) -> tuple[np.ndarray, list[dict[str, np.ndarray]]]:
    """Stream [T,4,80] through a session; return latents [T,D] and the feeds used per frame."""
    names = [o.name for o in session.get_outputs()]
    state = state_feeds(session)
    in_names = list(state)
    lat, feeds_log = [], []
    for m in mels:
        feeds = {MEL_INPUT: m[None], **state}
        feeds_log.append(feeds)
        outs = session.run(names, feeds)
        lat.append(outs[0][0])
        state = dict(zip(in_names, outs[1:], strict=True))
    return np.stack(lat), feeds_log


class StepCalibrationReader:
    """onnxruntime CalibrationDataReader over real streamed frames (states carried)."""

    def __init__(self, fp32_path: Path, utterance_mels: list[np.ndarray]) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(fp32_path), opts, providers=["CPUExecutionProvider"])
        self._feeds: list[dict[str, np.ndarray]] = []
        for mels in utterance_mels:
            self._feeds += run_sequence(sess, mels)[1]
        self._it: Iterator[dict[str, np.ndarray]] = iter(self._feeds)

    def __len__(self) -> int:
        return len(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self._feeds)


def precision_plan(model_path: Path, plan: str = "fast"
                   ) -> tuple[list[str], dict[str, list[dict]]]:
    """Which tensors leave plain uint8: (nodes kept float, per-tensor type overrides).

    "uint8": every activation uint8. "fast" (default): the residual stream and head logit
    in uint16, state buffers uint8. "wide": "fast" plus the depthwise conv outputs in
    uint16 (~+1 point of agreement, ~2x the step time: those convs then run in float).

    Measured on 120 s of held-out speech (3057 frames, step-1500 encoder): all-uint8
    activations flip 8.6 % of tokens. The error builds up along the residual stream
    (stem output + 8 additions) and at the head, where a 0.08 step in the logit moves u
    by up to 0.06. Keeping those tensors in uint16 (weights stay int8) gives 97.7 %.
    The conv-state buffers (Concat outputs) are pinned to uint8 so that every Conv/Gemm
    still reads uint8 and ORT fuses it into an integer kernel: same 97.7 %, and the
    step stays at ~0.3 ms (vs ~0.3 ms all-uint8). The final sigmoid and scale stay float
    (5 values). Variants measured: stem+head only 93.9 %, adds+head 96.6 %; "wide"
    98.4 %; percentile calibration and cross-layer equalization of dw->pw1: no gain.
    "uint16": every activation uint16 (int8 weights): the encoder trained on a GPU in
    2026-11 (speed/pitch augmentation, batch 32) keeps only 91.2 % under "wide" and
    97.1 % under this plan (60 s held out); its convolutions then run in float.
    """
    import onnx

    if plan not in PLANS or plan == "dynamic":
        raise ValueError(f"{plan!r} is not a static precision plan")
    if plan == "uint8":
        return [], {}
    graph = onnx.load(str(model_path)).graph
    head = [n for n in graph.node if n.op_type in ("Gemm", "MatMul")][-1]
    tail = [n.name for n in graph.node if n.op_type in ("Sigmoid",)]
    tail += [n.name for n in graph.node if n.op_type == "Mul" and n.output[0] == LATENT_OUTPUT]
    stem_out = next(n for n in graph.node if n.op_type == "Relu").output[0]
    wide = [o for n in graph.node if n.op_type == "Add" for o in n.output]
    wide += [stem_out, head.output[0]]
    if plan == "wide":
        wide += [n.output[0] for n in graph.node if n.op_type == "Conv"]
    narrow = [n.output[0] for n in graph.node if n.op_type == "Concat"]
    if plan == "uint16":
        wide = [o for n in graph.node if n.name not in tail for o in n.output]
        wide += [i.name for i in graph.input]
        narrow = []
    from onnxruntime.quantization import QuantType

    overrides = {t: [{"quant_type": QuantType.QUInt16}] for t in wide}
    overrides.update({t: [{"quant_type": QuantType.QUInt8}] for t in narrow})
    return tail, overrides


def quantize_int8(fp32_path: Path, out: Path, calib_mels: list[np.ndarray],
                  plan: str = "fast") -> Path:
    """INT8 with per-channel int8 weights. The static plans (QDQ format, uint8 activations,
    MinMax ranges from real streamed audio) keep some tensors wider (`precision_plan`);
    "dynamic" finds each activation's range at run time instead (`quantize_per_call`).
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
    if plan == "dynamic":
        try:
            return quantize_per_call(pre, out)
        finally:
            pre.unlink(missing_ok=True)
    keep_float, overrides = precision_plan(pre, plan)
    reader = StepCalibrationReader(pre, calib_mels)
    try:
        quantize_static(
            str(pre), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep_float,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                           "TensorQuantOverrides": overrides},
        )
    finally:
        pre.unlink(missing_ok=True)
    return out


def quantize_per_call(fp32_path: Path, out: Path) -> Path:
    """The "dynamic" plan: per-channel 8-bit weights; each Gemm's input is quantized to
    uint8 at run time from the range it has in that call (one token frame), not from a
    range calibrated over a corpus; the depthwise convs (1 % of the multiply-adds) stay
    float.

    Why: a calibrated range must cover the loudest frame of every utterance, so quiet
    frames get coarse steps; a per-call range fits the frame at hand. On the GPU-trained
    encoder of 2026-11 this keeps 97.9 % of tokens (306 s held out) where the static
    "fast" and "wide" plans keep 91 %, at about the time of the fp32 graph (the per-call
    range finding costs what the integer kernels save on a graph this small). Weights are
    asymmetric uint8 (u8u8 kernels): int8 weights kept 97.5 %, and ONNX Runtime's u8s8
    kernels can saturate on x86 CPUs without VNNI; 7-bit weights (`reduce_range`) 96.3 %.
    Quantizing the depthwise convs too (ConvInteger) gives 96.9 % (120 s).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load(str(fp32_path)).graph
    depthwise = [n.name for n in graph.node if n.op_type == "Conv"]
    quantize_dynamic(str(fp32_path), str(out), per_channel=True, weight_type=QuantType.QUInt8,
                     nodes_to_exclude=depthwise)
    return out


def ort_session(path: Path, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


__all__ = ["LATENT_OUTPUT", "export_fp32", "quantize_int8", "ort_session", "run_sequence"]
