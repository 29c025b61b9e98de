"""Estimated encoder real-time factor on a Raspberry Pi 4 / 5 core: an estimate, not a measurement.

    python edge/arm64/pi_estimate.py            # needs the `onnx` package ([export] extra)

Why an estimate: no Arm board is at hand, and time under qemu says nothing about a Pi
(TCG translates every instruction; the ratio to native differs per instruction mix).
Debian's qemu-user is built without TCG plugins, so instructions cannot be counted under
it either. So this bounds the Pi's encoder time two ways and reports both:

1. compute: the INT8 encoder's multiply-accumulates per second of audio, counted from
   the shipped `encoder.int8.onnx` (MatMulInteger and Conv nodes, shapes inferred), over
   a published Pi INT8 throughput: XNNPACK's README (Raspberry Pi table, Feb 2022, 64-bit
   OS, 4 threads) gives 24 ms for INT8 MobileNet v1 1.0 (569 M MAC) on a Pi 4, i.e.
   ~24 GMAC/s on 4 cores, ~6 GMAC/s per core if threads scaled perfectly (so per core it
   is at least that). Our layers are matrix-vector products (one 40 ms frame a call),
   which reach a fraction of GEMM throughput; the table gives 100 % and 10 %.
2. overhead: the measured x86 single-core encoder RTF (bench/results/edge.md, features +
   ONNX Runtime, dominated by per-node dispatch, not arithmetic) times an assumed per-core
   slow-down of the Pi against this host: 3-5x for a Cortex-A72 at 1.5-1.8 GHz, 1.3-2x
   for a Cortex-A76 at 2.4 GHz (assumptions from the cores' clock and generation, not a
   measurement; a Pi would replace this row with `bench/bench_edge.py`).
The Pi 5's A76 has the Armv8.2 dot-product instructions (SDOT), which the A72 lacks; the
compute row assumes 2x the Pi 4's per-core INT8 rate for it (clock 2.4/1.8 and SDOT,
conservatively).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
ENCODER = REPO / "sdk" / "bundles" / "default" / "encoder.int8.onnx"
FRAMES_PER_SECOND = 25  # one encoder step per 40 ms token frame
PI4_GMAC_PER_CORE = 569e-3 / 0.024 / 4  # XNNPACK README: INT8 MobileNet v1, Pi 4, 4 threads
PI5_GMAC_PER_CORE = 2 * PI4_GMAC_PER_CORE  # assumption, see the docstring
X86_ENCODER_RTF = 0.0053  # bench/results/edge.md, onnx, one core, idle machine
SLOWDOWN = {"Pi 4 (Cortex-A72)": (3.0, 5.0), "Pi 5 (Cortex-A76)": (1.3, 2.0)}


def encoder_macs(path: Path = ENCODER) -> int:
    """Multiply-accumulates of one encoder step (MatMul/MatMulInteger/Gemm/Conv)."""
    import onnx
    from onnx import shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(path)))
    g = model.graph
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in [*g.value_info, *g.input, *g.output]}
    shapes.update({init.name: list(init.dims) for init in g.initializer})
    total = 0
    for node in g.node:
        if node.op_type in ("MatMul", "MatMulInteger"):
            a, b = shapes[node.input[0]], shapes[node.input[1]]
            total += int(np.prod(a)) * b[-1]
        elif node.op_type == "Gemm":
            a, b = shapes[node.input[0]], shapes[node.input[1]]
            trans_b = any(at.name == "transB" and at.i for at in node.attribute)
            total += int(np.prod(a)) * (b[0] if trans_b else b[-1])
        elif node.op_type == "Conv":
            w, out = shapes[node.input[1]], shapes[node.output[0]]
            total += int(np.prod(out)) * int(np.prod(w[1:]))
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", type=Path, default=ENCODER)
    args = ap.parse_args(argv)
    step = encoder_macs(args.encoder)
    per_second = step * FRAMES_PER_SECOND
    print(f"encoder: {step / 1e3:.0f} k MAC per step, {per_second / 1e6:.1f} M MAC per second "
          "of audio")
    print("| core | compute-bound RTF (GEMM rate .. 10 % of it) | overhead-bound RTF "
          "(x86 RTF x slow-down) | estimate |")
    print("|---|---|---|---|")
    for (core, (lo, hi)), gmac in zip(SLOWDOWN.items(), (PI4_GMAC_PER_CORE, PI5_GMAC_PER_CORE),
                                      strict=True):
        c_lo, c_hi = per_second / (gmac * 1e9), per_second / (0.1 * gmac * 1e9)
        o_lo, o_hi = X86_ENCODER_RTF * lo, X86_ENCODER_RTF * hi
        print(f"| {core} | {c_lo:.4f} .. {c_hi:.3f} | {o_lo:.3f} .. {o_hi:.3f} | "
              f"{max(c_lo, o_lo):.3f} .. {c_hi + o_hi:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
