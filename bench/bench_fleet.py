"""Fleet benchmark: 1000 simulated devices -> 3-node RabbitMQ cluster -> 1, 2, 4 workers.

    python bench/bench_fleet.py [--devices 1000] [--workers 1,2,4] [--speedups 1,4]
                                [--seconds 20] [--decode] [--record]

1. Packets are recorded once from the real edge agent (INT8 ONNX, 1 s batching, DTX on)
   on the bundled 18 s speech sample, through mosquitto (bench/results/
   fleet_agent_packets.json). Each simulated device replays them as one continuing
   stream at the agent's timing (a packet leaves when its last frame's audio is in; DTX
   silences send nothing), from its own random phase.
2. `--speedups`: time runs s times faster (s < 1: slower), i.e. the load of s x DEVICES
   real devices (`offered` is what the generator managed to send).
3. Per run: delivered packets/s at the workers (read back from each worker's archive),
   end-to-end latency (publish -> delivery to the worker), the share of the fleet's
   packets each worker received, CPU (cores) and RSS per worker, broker CPU, and
   whether it kept up (everything delivered within the run + 10 s, p95 < 2 s).

Workers run `--no-decode` by default (archive only): decoding 1000 streams needs ~15-30
CPU cores (bench/results/cloud.md), which a 2-core machine does not have; `--decode`
runs them with the small decoder to show where decoding stops keeping up. Writes
bench/results/fleet.md and fleet_throughput.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from gacflow.bitstream import decode_packet  # noqa: E402
from gacflow.bundle import Bundle  # noqa: E402
from gacflow.cloud.cluster.fleetgen import Recording, TrackedPublisher  # noqa: E402
from gacflow.cloud.cluster.local import LocalFleet  # noqa: E402
from gacflow.cloud.cluster.nodes import RabbitCluster  # noqa: E402
from gacflow.cloud.cluster.topology import DEFAULT_PARTITIONS  # noqa: E402
from gacflow.errors import BitstreamError, ConfigError  # noqa: E402

SAMPLE = ROOT / "sdk" / "samples" / "speech_ru.wav"
RESULTS = ROOT / "bench" / "results"
RECORDING = RESULTS / "fleet_agent_packets.json"
TICK = os.sysconf("SC_CLK_TCK")


# -- recording the agent -------------------------------------------------------------
def record_agent(path: Path, entropy) -> Recording:
    """Run the real edge agent once on the sample and keep what it publishes."""
    import paho.mqtt.client as mqtt
    from broker import Mosquitto

    from gacflow import topics

    b = Mosquitto().start()
    got: list[bytes] = []
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="fleet-recorder")
    sub.on_message = lambda c, u, m: got.append(bytes(m.payload))
    sub.connect("127.0.0.1", b.port)
    sub.subscribe(topics.topic("rec", "tokens"), qos=1)
    sub.loop_start()
    tmp = Path(tempfile.mkdtemp(prefix="gacflow-rec-"))
    try:
        subprocess.run([sys.executable, "-m", "gacflow.edge.cli", "--broker", b.url,
                        "--device-id", "rec", "--input", str(SAMPLE), "--backend", "onnx",
                        "--batch-seconds", "1", "--dtx", "--queue", str(tmp / "q.db")],
                       check=True, stdout=subprocess.DEVNULL,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
        time.sleep(1.0)
    finally:
        sub.loop_stop()
        sub.disconnect()
        b.close()
        shutil.rmtree(tmp, ignore_errors=True)
    seen, packets = set(), []
    for p in got:  # QoS 1 may deliver twice
        if p not in seen:
            seen.add(p)
            packets.append(p)
    packets.sort(key=lambda b: decode_packet(b, entropy).seq)
    rec = Recording.from_packets(packets, entropy)
    rec.save(path)
    return rec


# -- process figures -------------------------------------------------------------------
def proc_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) of these processes so far."""
    total = 0.0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / TICK
        except (OSError, IndexError):
            pass
    return total


def proc_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def group_pids(pgid: int) -> list[int]:
    """Every process in process group `pgid` (a broker node: script, beam, helpers)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                pass
    return out


# -- the load ------------------------------------------------------------------------
PER_PROCESS = 250  # paho's loop uses select(): one process stays well under 1024 fds


def connect(i: int, urls: list[str], codec_id: str) -> TrackedPublisher:
    for attempt in range(5):  # a loaded broker may miss a CONNECT among 1000
        try:
            return TrackedPublisher(urls[i % len(urls)], f"fleet-{i:05d}", codec_id,
                                    mqtt_version="3.1.1")
        except ConfigError:
            if attempt == 4:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def schedule(rec: Recording, devices: range, seconds: float, speed: float, stream_id: int,
             entropy) -> list[tuple[float, int, int, bytes]]:
    """(due s, device, seq, payload), sorted: every device replays `rec` from its phase."""
    span = seconds * speed  # stream time covered by the run
    loops = int(span / rec.duration) + 2
    variants = [rec.loop(k, entropy, stream_id=stream_id) for k in range(loops)]
    seqs = [[decode_packet(b, entropy).seq for b in v] for v in variants]
    out = []
    for d in devices:
        phase = random.Random(stream_id * 1_000_003 + d).uniform(0, rec.duration)
        for k in range(loops):
            for i, due in enumerate(rec.due):
                t = k * rec.duration + due - phase
                if 0 <= t < span:
                    out.append((t / speed, d, seqs[k][i], variants[k][i]))
    out.sort(key=lambda x: x[0])
    return out


def generator(conn, devices: range, urls: list[str], codec_id: str) -> None:
    """A child process holding `devices`' MQTT connections; runs plans on command."""
    entropy = Bundle.load().entropy
    rec = Recording.load(RECORDING)
    with ThreadPoolExecutor(8) as ex:
        pubs = dict(zip(devices, ex.map(lambda i: connect(i, urls, codec_id), devices),
                        strict=True))
    conn.send("ready")
    while True:
        cmd = conn.recv()
        if cmd[0] == "stop":
            break
        _, t0, seconds, speed, stream_id = cmd
        plan = schedule(rec, devices, seconds, speed, stream_id, entropy)
        sent: dict[str, float] = {}
        worst, c0 = 0.0, time.process_time()
        for due, d, seq, payload in plan:
            now = time.time()
            if t0 + due > now:
                time.sleep(t0 + due - now)
            else:
                worst = max(worst, now - t0 - due)
            sent[f"{pubs[d].device}/{seq}"] = time.time()
            pubs[d].publish(payload)
        cpu = time.process_time() - c0
        deadline = time.time() + 60  # let the broker accept the backlog before the next run
        for p in pubs.values():
            p.wait_acked(max(0.0, deadline - time.time()))
        unacked = sum(p.unacked() for p in pubs.values())
        conn.send({"sent": sent, "planned": len(plan), "lateness": worst, "cpu": cpu,
                   "unacked": unacked})
    for p in pubs.values():
        p.close()


class Fleet:
    """`n` devices in child processes of PER_PROCESS each, spread over the nodes."""

    def __init__(self, n: int, urls: list[str], codec_id: str) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("fork")
        self.n = n
        self.procs = []
        for a in range(0, n, PER_PROCESS):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=generator, daemon=True,
                               args=(theirs, range(a, min(n, a + PER_PROCESS)), urls, codec_id))
            proc.start()
            self.procs.append((proc, mine))
        for _, conn in self.procs:
            if not conn.poll(300) or conn.recv() != "ready":
                raise RuntimeError("a load generator process did not connect its devices")

    def run(self, seconds: float, speed: float, stream_id: int) -> dict:
        t0 = time.time() + 2.0
        for _, conn in self.procs:
            conn.send(("run", t0, seconds, speed, stream_id))
        sent: dict[tuple[str, int], float] = {}
        planned, worst, cpu, unacked = 0, 0.0, 0.0, 0
        for _, conn in self.procs:
            r = conn.recv()
            for k, t in r["sent"].items():
                dev, seq = k.rsplit("/", 1)
                sent[(dev, int(seq))] = t
            planned += r["planned"]
            worst = max(worst, r["lateness"])
            cpu += r["cpu"]
            unacked += r["unacked"]
        return {"t0": t0, "sent": sent, "planned": planned, "lateness": worst, "cpu": cpu,
                "unacked": unacked}

    def close(self) -> None:
        for _, conn in self.procs:
            try:
                conn.send(("stop",))
            except OSError:
                pass
        for proc, _ in self.procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()


def seq_table(rec: Recording, seconds: float, speed: float, stream_id: int,
              entropy) -> dict[bytes, int]:
    """payload -> seq for a run's packets (the same bytes for every device). Parsing the
    archive back with decode_packet would cost what the receiver pays: ~12 ms a packet."""
    loops = int(seconds * speed / rec.duration) + 2
    out = {}
    for k in range(loops):
        for b in rec.loop(k, entropy, stream_id=stream_id):
            out[b] = decode_packet(b, entropy).seq
    return out


def read_worker(out: Path, seqs: dict[bytes, int]) -> list[tuple[str, int, float]]:
    """(device, seq, arrival) of every packet of this run the worker archived."""
    db_path = out / "archive.sqlite"
    if not db_path.exists():
        return []
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    rows = []
    for device, arrival, payload in db.execute(
            "SELECT device, arrival, payload FROM packets"):
        seq = seqs.get(bytes(payload))
        if seq is not None:
            rows.append((device, seq, arrival))
    db.close()
    return rows


def purge(cluster: RabbitCluster, partitions: int) -> int:
    """Drop what a run left in the partition queues, so it does not load the next run."""
    import pika

    from gacflow.cloud.cluster import topology

    conn = pika.BlockingConnection(pika.URLParameters(cluster.amqp_urls[0]))
    ch = conn.channel()
    n = sum(ch.queue_purge(topology.partition_queue(p)).method.message_count
            for p in range(partitions))
    conn.close()
    return n


def run_one(cluster: RabbitCluster, fleet: Fleet, n_workers: int, *args) -> dict:
    """One run; its workers are stopped whatever happens."""
    lf_box: list[LocalFleet] = []
    try:
        return _run_one(cluster, fleet, n_workers, *args, lf_box=lf_box)
    finally:
        for lf in lf_box:
            for n in lf.workers:
                lf.stop_worker(n)


def _run_one(cluster: RabbitCluster, fleet: Fleet, n_workers: int,
            speed: float, seconds: float, stream_id: int, decode: bool, entropy,
            work: Path, lf_box: list) -> dict:
    out = work / f"w{n_workers}-x{speed:g}"
    extra = ["--idle-timeout", "10", "--threads", "1"] + ([] if decode else ["--no-decode"])
    if decode:
        extra += ["--decoder", "small"]
    lf = LocalFleet(out, cluster=cluster, worker_args=extra)
    lf_box.append(lf)
    names = [f"w{i}" for i in range(n_workers)]
    for n in names:
        lf.add_worker(n)
    want = "members: " + ", ".join(sorted(names))
    for n in names:
        if not lf.wait_log(n, want, 180):
            raise RuntimeError(f"worker {n} did not join: see {out}/{n}.log")
    time.sleep(1.0)
    wpids = [lf.workers[n].pid for n in names]
    bpids = [p for node in cluster.nodes for p in group_pids(node.proc.pid)]
    c0 = {pid: proc_cpu([pid]) for pid in wpids}
    b0 = proc_cpu(bpids)
    seqs = seq_table(Recording.load(RECORDING), seconds, speed, stream_id, entropy)
    load = fleet.run(seconds, speed, stream_id)
    t0, sent, lateness = load["t0"], load["sent"], load["lateness"]
    t_sent = t0 + seconds
    # drain: until every sent packet is in some worker's archive, or 10 s
    deadline = time.time() + 10
    while time.time() < deadline:
        got = sum(len(read_worker(out / n, seqs)) for n in names)
        if got >= len(sent):
            break
        time.sleep(1.0)
    t1 = time.time()
    cpu = {pid: (proc_cpu([pid]) - c0[pid]) / (t1 - t0) for pid in wpids}
    rss = {pid: proc_rss_mb(pid) for pid in wpids}
    broker_cpu = (proc_cpu(bpids) - b0) / (t1 - t0)
    gen_cpu = load["cpu"] / seconds
    per_worker = {n: read_worker(out / n, seqs) for n in names}
    for n in names:
        lf.stop_worker(n)
    left = purge(cluster, DEFAULT_PARTITIONS)
    lf.balancer = None
    uniq: dict[tuple[str, int], float] = {}
    for rows in per_worker.values():
        for dev, seq, arr in rows:
            uniq[(dev, seq)] = min(arr, uniq.get((dev, seq), arr))
    lat = np.array([uniq[k] - sent[k] for k in uniq if k in sent])
    arrivals = np.array(sorted(uniq.values())) if uniq else np.zeros(1)
    span = max(1e-6, t_sent - t0)
    total = sum(len(r) for r in per_worker.values())
    shares = [len(per_worker[n]) / total if total else 0.0 for n in names]
    on_time = float(np.mean(lat < 2.0)) if len(lat) else 0.0
    delivered_in_run = int(np.sum(arrivals <= t_sent)) if uniq else 0
    r = {
        "workers": n_workers, "speed": speed, "devices": fleet.n,
        "equiv_devices": int(fleet.n * speed), "planned": load["planned"],
        "planned_rate": load["planned"] / seconds, "offered_rate": len(sent) / span,
        "delivered": len(uniq), "lost": len(set(sent) - set(uniq)),
        "delivered_rate": delivered_in_run / span,
        "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
        "p95": float(np.percentile(lat, 95)) if len(lat) else float("nan"),
        "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
        "shares": shares, "max_share": max(shares),
        "cpu": [cpu[p] for p in wpids], "rss": [rss[p] for p in wpids],
        "broker_cpu": broker_cpu, "gen_cpu": gen_cpu, "gen_lateness": lateness,
        "on_time": on_time, "left_in_queues": left, "unacked_at_devices": load["unacked"],
    }
    r["keeps_up"] = bool(r["lost"] == 0 and r["p95"] < 2.0)
    return r


# -- report --------------------------------------------------------------------------
def write_report(rows: list[dict], rec: Recording, args, out: Path) -> str:
    pk_rate = len(rec.packets) / rec.duration
    lines = [
        "# Fleet benchmark (RabbitMQ cluster, `bench/bench_fleet.py`)",
        "",
        f"3 RabbitMQ 3.10 nodes (quorum queues, {DEFAULT_PARTITIONS} partitions), workers "
        f"`{'decoding (small)' if args.decode else '--no-decode'}`, "
        f"{args.devices} MQTT devices replaying the agent's packets "
        f"({len(rec.packets)} packets per {rec.duration:.1f} s of speech: "
        f"{pk_rate:.2f} packets/s per device with DTX), {args.seconds:.0f} s per run; "
        f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores shared "
        "with other jobs; broker, workers and the load generator on the same cores.",
        "",
        "| workers | speed-up | devices (real-time equivalent) | offered pkt/s | delivered "
        "pkt/s | late | latency p50 / p95 / p99 (s) | max worker share (limit 1/N+10%) "
        "| worker CPU (cores) | worker RSS (MB) | broker CPU (cores, 3 nodes) | generator CPU "
        "| left queued | unaccepted at devices | keeps up |",
        "|---:|---:|---:|---:|---:|---:|---|---|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lim = 1 / r["workers"] + 0.10
        lines.append(
            f"| {r['workers']} | {r['speed']:g}x | {r['equiv_devices']} | "
            f"{r['offered_rate']:.0f} | {r['delivered_rate']:.0f} | {r['lost']} | "
            f"{r['p50']:.3f} / {r['p95']:.3f} / {r['p99']:.3f} | "
            f"{r['max_share']:.3f} ({'ok' if r['max_share'] <= lim else 'OVER'} {lim:.3f}) | "
            f"{' '.join(f'{c:.2f}' for c in r['cpu'])} | "
            f"{' '.join(f'{m:.0f}' for m in r['rss'])} | {r['broker_cpu']:.2f} | "
            f"{r['gen_cpu']:.2f} | {r['left_in_queues']} | {r['unacked_at_devices']} | "
            f"{'yes' if r['keeps_up'] else 'no'} |")
    lines += [
        "",
        "Offered = what the generator published per second (planned: "
        + ", ".join(f"{r['planned_rate']:.0f}" for r in rows) + "); delivered = packets of "
        "the run in a worker's archive by the end of the run, per second; latency = "
        "publish -> delivery to the worker (broker queueing included, decode not); share = "
        "the worker's fraction of all packets it archived; late = sent but not in an "
        "archive by the end of the run + 10 s: not lost, but still queued (durable; "
        "`left queued`, purged before the next run) or not yet accepted by the broker "
        "(in the devices' QoS 1 windows); keeps up = none late and p95 < 2 s.",
        "",
    ]
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps(rows, indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for speed in sorted({r["speed"] for r in rows}):
            rs = [r for r in rows if r["speed"] == speed]
            ax.plot([r["workers"] for r in rs], [r["delivered_rate"] for r in rs], "o-",
                    label=f"delivered, {int(args.devices * speed)} dev.")
            ax.plot([r["workers"] for r in rs], [r["offered_rate"] for r in rs], "k:",
                    alpha=0.5)
        ax.set_xlabel("workers")
        ax.set_ylabel("packets/s")
        ax.set_xticks(sorted({r["workers"] for r in rows}))
        ax.set_title("gacflow fleet: throughput vs workers (dotted: offered)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out.with_name("fleet_throughput.png"), dpi=120)
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--speedups", default="0.1,0.25,1",
                    help="time factors: 0.1 = the load of 10 %% of the devices at real time")
    ap.add_argument("--seconds", type=float, default=20.0, help="wall time per run")
    ap.add_argument("--decode", action="store_true", help="workers decode (small decoder)")
    ap.add_argument("--record", action="store_true", help="record the agent's packets again")
    ap.add_argument("--out", default=str(RESULTS / "fleet.md"))
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the table and plot from the last run's fleet.json")
    args = ap.parse_args()
    if args.report_only:
        out = Path(args.out)
        rows = json.loads(out.with_suffix(".json").read_text())
        for r in rows:
            r["keeps_up"] = bool(r["lost"] == 0 and r["p95"] < 2.0)
            r.setdefault("unacked_at_devices", "-")
        print(write_report(rows, Recording.load(RECORDING), args, out))
        return 0
    bundle = Bundle.load()
    entropy = bundle.entropy
    RESULTS.mkdir(parents=True, exist_ok=True)
    rec = None
    if RECORDING.exists() and not args.record:
        rec = Recording.load(RECORDING)
        try:  # recorded with an older packet format? then record again
            for b in rec.packets:
                decode_packet(b, entropy)
        except BitstreamError as exc:
            print(f"recorded packets no longer parse ({exc}): recording again",
                  file=sys.stderr)
            rec = None
    if rec is None:
        print("recording the edge agent's packets ...", file=sys.stderr)
        rec = record_agent(RECORDING, entropy)
    print(f"recording: {len(rec.packets)} packets over {rec.duration:.1f} s", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="gacflow-fleet-"))
    cluster = RabbitCluster(3, work / "rabbit")
    fleet = None
    rows = []
    try:
        t = time.time()
        cluster.start()
        print(f"cluster up in {time.time() - t:.0f} s", file=sys.stderr)
        t = time.time()
        fleet = Fleet(args.devices, cluster.mqtt_urls, bundle.codec_id)
        print(f"{args.devices} devices connected in {time.time() - t:.0f} s", file=sys.stderr)
        sid = 0
        for n in (int(x) for x in args.workers.split(",")):
            for speed in (float(x) for x in args.speedups.split(",")):
                sid += 1
                r = run_one(cluster, fleet, n, speed, args.seconds, sid, args.decode,
                            entropy, work)
                rows.append(r)
                print(f"{n} workers x{speed:g}: offered {r['offered_rate']:.0f}/s, "
                      f"delivered {r['delivered_rate']:.0f}/s, lost {r['lost']}, p95 "
                      f"{r['p95']:.3f} s, shares {[round(s, 3) for s in r['shares']]}, "
                      f"cpu {[round(c, 2) for c in r['cpu']]}, broker {r['broker_cpu']:.2f}",
                      file=sys.stderr, flush=True)
    finally:
        if fleet:
            fleet.close()
        cluster.close()
        shutil.rmtree(work, ignore_errors=True)
    print(write_report(rows, rec, args, Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
