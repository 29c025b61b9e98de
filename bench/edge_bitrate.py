"""Payload bit/s the edge agent reports, per batching interval, DTX on and off.

    python bench/edge_bitrate.py                       # 1, 2, 5 s batching, sdk/samples/*.wav
    python bench/edge_bitrate.py --batch-seconds 0.2 1 --input my.wav
    python bench/edge_bitrate.py --pauses              # two 2 s quiet pauses added (DTX)

Why: the headline rate of the codec (tokens only) is not what a live stream costs; every
packet adds its header (~45 bits in the v2 bitstream, docs/bitstream.md), the DTX runs
and a few voice codes. This runs the real
`gacflow-edge` (INT8 ONNX, full speed) against a real mosquitto on a free loopback port
and reads the agent's own `--stats-json`, so the table is what a user's status line says.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from broker import Mosquitto  # noqa: E402

SAMPLE = next(iter(sorted((ROOT / "sdk" / "samples").glob("*.wav"))))


def run_agent(url: str, wav: Path, batch: float, dtx: bool, work: Path,
              extra: list[str] | None = None) -> dict:
    """One agent session on `wav` (plus `extra` flags); returns its final --stats-json."""
    tag = f"{batch:g}-{'dtx' if dtx else 'nodtx'}-{wav.stem}-{len(extra or [])}"
    stats = work / f"{tag}.json"
    cmd = [sys.executable, "-m", "gacflow.edge.cli", "--broker", url, "--device-id", f"b{tag}",
           "--input", str(wav), "--batch-seconds", str(batch), "--dtx" if dtx else "--no-dtx",
           "--queue", str(work / f"{tag}.db"), "--stats-json", str(stats), "--log-level", "warning",
           *(extra or [])]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, timeout=300)
    return json.loads(stats.read_text())


def with_pauses(wav: Path, out: Path) -> Path:
    """The speech with a 2 s pause after 8 s and at the end: DTX's case. The pauses are
    white noise at -50 dBFS (a quiet room): digital zeros code to almost nothing anyway."""
    from gacflow.audio import read_audio, write_wav

    speech = read_audio(wav)
    pause = np.random.default_rng(0).normal(0, 0.0032, 32000).astype(np.float32)
    write_wav(out, np.concatenate([speech[: 8 * 16000], pause, speech[8 * 16000 :], pause]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", type=Path, default=SAMPLE, help="speech file (default: sample)")
    ap.add_argument("--batch-seconds", type=float, nargs="+", default=[1.0, 2.0, 5.0])
    ap.add_argument("--pauses", action="store_true", help="insert two 2 s quiet pauses (for DTX)")
    args = ap.parse_args(argv)
    broker = Mosquitto().start()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="gacflow-bitrate-") as tmp:
            if args.pauses:
                args.input = with_pauses(args.input, Path(tmp) / "paused.wav")
            for batch in args.batch_seconds:
                on = run_agent(broker.url, args.input, batch, True, Path(tmp))
                off = run_agent(broker.url, args.input, batch, False, Path(tmp))
                rows.append((batch, on, off))
    finally:
        broker.close()
    secs = rows[0][1]["frames"] / 25 if rows else 0.0
    print(f"{args.input.name}, {secs:.1f} s, mode {rows[0][1]['mode'] if rows else ''}")
    print("| `--batch-seconds` | packets | frames sent (DTX) | payload bit/s, DTX on "
          "| payload bit/s, `--no-dtx` |")
    print("|---:|---:|---:|---:|---:|")
    for batch, on, off in rows:
        share = on["active_frames"] / on["frames"] if on["frames"] else 0.0
        print(f"| {batch:g} | {on['packets']} | {share:.0%} | {on['bitrate']:.0f} "
              f"| {off['bitrate']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
