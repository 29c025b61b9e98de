"""What the agent's on-disk queue writes per hour: the SD-card wear figure of docs/edge.md.

    python edge/arm64/queue_writes.py                 # 1 s and 5 s batching, one hour each
    python edge/arm64/queue_writes.py --dir /mnt/sd   # on the card itself (a Pi)

Why: on a Pi the queue lives on the SD card, and its durability (one fsync per insert and
per delete, SQLite WAL) costs far more writes than the few kilobytes of payload. This
drives the real `DiskQueue` through an hour of packets of the size the agent makes
(insert, then delete as the PUBACK comes, the connected steady state) and reads the
kernel's per-process counters: `syscw` (write calls) and `write_bytes` (bytes the block
layer was asked to write, what reaches the card). fsyncs are counted by the WAL rule:
SQLite with synchronous=FULL syncs the WAL at each commit and both files at each
checkpoint (every 1000 WAL pages). Runs as fast as the disk allows; the hour is packets,
not wall time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Payload bytes per packet: the agent's measured bit rates (docs/edge.md, "Bit rate per
# batching": 348 bit/s at 1 s, 250 bit/s at 5 s).
PACKET_BYTES = {1.0: 44, 2.0: 73, 5.0: 156}


def io_counters() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/io").read_text().splitlines():
        k, v = line.split(":")
        out[k.strip()] = int(v)
    return out


def one_hour(folder: Path, batch: float) -> dict[str, float]:
    from gacflow.edge.disk_queue import DiskQueue

    packets = round(3600 / batch)
    size = PACKET_BYTES.get(batch, round(300 * batch / 8))
    q = DiskQueue(folder / f"queue-{batch:g}.db")
    payload = bytes(range(256))[:size]
    q.put(payload)  # file creation and schema outside the measurement
    for row, _ in q.after(0, 10):
        q.delete(row)
    before, t0 = io_counters(), time.monotonic()
    for i in range(packets):
        q.put(payload)
        for row, _ in q.after(0, 1):
            q.delete(row)
        if i % 360 == 0:
            print(f"\r  {batch:g} s batching: {i}/{packets} packets", end="", file=sys.stderr)
    q.close()
    after, secs = io_counters(), time.monotonic() - t0
    print(f"\r  {batch:g} s batching: {packets}/{packets} packets in {secs:.1f} s",
          file=sys.stderr)
    written = after["write_bytes"] - before["write_bytes"]
    return {"batch": batch, "packets": packets, "payload_bytes": packets * size,
            "write_calls": after["syscw"] - before["syscw"], "block_bytes": written,
            "transactions": 2 * packets, "seconds": secs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-seconds", type=float, nargs="+", default=[1.0, 5.0])
    ap.add_argument("--dir", type=Path, help="folder on the disk to measure (default: a "
                    "temporary folder on the disk that holds the repository)")
    args = ap.parse_args(argv)
    base = args.dir or REPO / "build"
    base.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gacflow-qw-", dir=base) as tmp:
        for b in args.batch_seconds:
            rows.append(one_hour(Path(tmp), b))
    print("| batching | packets/h | payload/h | durable transactions/h (a WAL fsync each) | "
          "write calls/h | bytes written/h (block layer) | written / payload |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = r["block_bytes"] / r["payload_bytes"]
        print(f"| {r['batch']:g} s | {r['packets']} | {r['payload_bytes'] / 1000:.0f} kB | "
              f"{r['transactions']} | {r['write_calls']} | {r['block_bytes'] / 1e6:.1f} MB | "
              f"{ratio:.0f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
