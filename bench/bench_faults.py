"""Durability under faults: packets sent, received, lost and duplicated per fault.

    python bench/bench_faults.py [--runs 2] [--seconds 30] [--pace 4]

Each run streams a speech file through the real edge agent (`gacflow-edge`, INT8 ONNX
encoder, 0.2 s packets, paced at --pace x real time) into a real mosquitto (persistence
on) and injects one fault mid-stream:

* broker_outage: mosquitto stopped for 4 s, then started again;
* agent_sigkill: the agent SIGKILLed while the broker is down (packets pile up in its
  disk queue), then restarted on a 1 s file with the same queue;
* receiver_sigkill: the real receiver (`gacflow-cloud`, persistent session, archive)
  SIGKILLed mid-stream and restarted.

Sent = the agent's packet log (every packet it produced); received = what a persistent
QoS 1 subscriber got (receiver_sigkill: the receiver's archive rows); lost = sent but
never received; duplicated = received more than once (QoS 1 is at-least-once: expected,
and removed by the receiver); order = the first copies arrive in the order sent.
Writes bench/results/faults.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from broker import Mosquitto  # noqa: E402

from gacflow.audio import read_audio, write_wav  # noqa: E402
from gacflow.bitstream import read_packet  # noqa: E402
from gacflow.bundle import Bundle  # noqa: E402
from gacflow.topics import topic  # noqa: E402

ENTROPY = Bundle.load().entropy
DEVICE = "bench-dev"
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")


@dataclass
class Outcome:
    fault: str
    sent: int
    received: int
    lost: int
    duplicated: int
    in_order: bool
    extra: int  # received but not in the log: queued in the instant of a SIGKILL


class Collector:
    """A persistent-session QoS 1 subscriber to the device's tokens."""

    def __init__(self, port: int) -> None:
        self.messages: list[bytes] = []
        self.ready = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"bench-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5)
        self.c.reconnect_delay_set(1, 1)
        self.c.on_connect = lambda c, *a: c.subscribe(topic(DEVICE, "tokens"), qos=1)
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.on_message = lambda c, u, m: self.messages.append(bytes(m.payload))
        props = mqtt.Properties(mqtt.PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.c.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.c.loop_start()
        assert self.ready.wait(10)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def read_log(path: Path) -> list[bytes]:
    data, out, pos = path.read_bytes() if path.exists() else b"", [], 0
    while pos < len(data):
        _, end = read_packet(data, pos, ENTROPY)
        out.append(data[pos:end])
        pos = end
    return out


def agent(tmp: Path, url: str, wav: Path, pace: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gacflow.edge.cli", "--broker", url, "--device-id", DEVICE,
         "--input", str(wav), "--queue", str(tmp / "queue.db"), "--packet-log",
         str(tmp / "packets.bin"), "--batch-seconds", "0.2", "--pace", str(pace),
         "--reconnect-max-delay", "1", "--drain-timeout", "60"],
        stdout=subprocess.DEVNULL, stderr=open(tmp / "agent.log", "ab"), env=ENV)


def receiver(tmp: Path, url: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gacflow.cloud.cli", "--broker", url, "--out", str(tmp / "out"),
         "--threads", "1", "--idle-timeout", "3", "--client-id", "bench-rx"],
        stdout=subprocess.DEVNULL, stderr=open(tmp / "rx.log", "ab"), env=ENV)


def wait_for(pred, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.1)
    return False


def score(fault: str, sent: list[bytes], got: list[bytes]) -> Outcome:
    sent_set = set(sent)
    firsts, seen = [], set()
    for p in got:
        if p not in seen:
            seen.add(p)
            firsts.append(p)
    in_log = [p for p in firsts if p in sent_set]
    return Outcome(fault, len(sent), len(got), len(sent_set - seen), len(got) - len(firsts),
                   in_log == [p for p in sent if p in seen], len(firsts) - len(in_log))


def broker_outage(tmp: Path, wav: Path, pace: float) -> Outcome:
    b = Mosquitto().start()
    sub = Collector(b.port)
    try:
        a = agent(tmp, b.url, wav, pace)
        time.sleep(3)
        b.stop()
        time.sleep(4)
        b.start()
        a.wait(180)
        sent = read_log(tmp / "packets.bin")
        wait_for(lambda: len(set(sub.messages)) >= len(sent), 30)
        return score("broker_outage", sent, sub.messages)
    finally:
        sub.close()
        b.close()


def agent_sigkill(tmp: Path, wav: Path, pace: float) -> Outcome:
    b = Mosquitto().start()
    sub = Collector(b.port)
    try:
        a = agent(tmp, b.url, wav, pace)
        time.sleep(3)
        b.stop()  # packets pile up in the agent's disk queue
        time.sleep(2)
        a.send_signal(signal.SIGKILL)
        a.wait(10)
        b.start()
        short = tmp / "short.wav"
        write_wav(short, np.zeros(16000, np.float32))
        agent(tmp, b.url, short, 0).wait(180)  # same queue: delivers what the killed one left
        sent = read_log(tmp / "packets.bin")
        wait_for(lambda: len(set(sub.messages)) >= len(sent), 30)
        return score("agent_sigkill", sent, sub.messages)
    finally:
        sub.close()
        b.close()


def archived(db: Path) -> list[bytes]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db) as c:
            return [bytes(r[0]) for r in c.execute(
                "SELECT payload FROM packets WHERE device=? ORDER BY id", (DEVICE,))]
    except sqlite3.Error:
        return []


def receiver_sigkill(tmp: Path, wav: Path, pace: float) -> Outcome:
    b = Mosquitto().start()
    db = tmp / "out" / "archive.sqlite"
    rx = receiver(tmp, b.url)
    try:
        wait_for(lambda: b"connected to" in (tmp / "rx.log").read_bytes(), 120)
        a = agent(tmp, b.url, wav, pace)
        wait_for(lambda: len(archived(db)) >= 10, 60)
        rx.send_signal(signal.SIGKILL)
        rx.wait(10)
        time.sleep(2)  # the broker queues for the receiver's persistent session meanwhile
        rx = receiver(tmp, b.url)
        a.wait(180)
        sent = read_log(tmp / "packets.bin")
        wait_for(lambda: len(set(archived(db))) >= len(sent), 120)
        return score("receiver_sigkill", sent, archived(db))
    finally:
        rx.terminate()
        rx.wait(30)
        b.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=30.0, help="length of the speech file")
    ap.add_argument("--pace", type=float, default=4.0, help="multiple of real time")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "faults.md"))
    args = ap.parse_args()
    speech = read_audio(ROOT / "sdk" / "samples" / "speech_ru.wav")
    reps = int(np.ceil(args.seconds * 16000 / len(speech)))
    audio = np.tile(speech, reps)[: int(args.seconds * 16000)]
    try:
        from tqdm import tqdm
    except ImportError:
        def tqdm(x, **_):
            return x
    results: list[Outcome] = []
    jobs = [(f, r) for f in (broker_outage, agent_sigkill, receiver_sigkill)
            for r in range(args.runs)]
    for fault, _ in tqdm(jobs, desc="fault runs", unit="run"):
        with tempfile.TemporaryDirectory(prefix="gacflow-faults-") as d:
            tmp = Path(d)
            wav = tmp / "speech.wav"
            write_wav(wav, audio)
            results.append(fault(tmp, wav, args.pace))
    lines = [f"Fault runs: {args.runs} per fault, {args.seconds:g} s of speech at "
             f"{args.pace:g}x real time, 0.2 s packets, real agent + mosquitto "
             f"(`python bench/bench_faults.py --runs {args.runs} --seconds {args.seconds:g} "
             f"--pace {args.pace:g}`).", "",
             "| fault | runs | sent | received | lost | duplicated | order kept |",
             "|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r.fault for r in results):
        rs = [r for r in results if r.fault == name]
        lines.append(f"| {name} | {len(rs)} | {sum(r.sent for r in rs)} | "
                     f"{sum(r.received for r in rs)} | {sum(r.lost for r in rs)} | "
                     f"{sum(r.duplicated for r in rs)} | "
                     f"{'yes' if all(r.in_order for r in rs) else 'NO'} |")
    extra = sum(r.extra for r in results)
    if extra:
        lines += ["", f"{extra} packet(s) arrived that the killed agent had queued but not yet "
                  "written to its packet log (produced in the instant of the SIGKILL)."]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
