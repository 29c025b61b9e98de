"""A whole fleet deployment on one machine: broker cluster, MQTT balancer, worker processes.

Used by `python -m gacflow.cloud.cluster up`, the cluster fault test and
bench/bench_fleet.py. Workers are subprocesses (`... cluster worker`), so killing one
is a real crash; `add_worker` joins a new one while the others keep running.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from .balancer import Balancer
from .nodes import RabbitCluster


class LocalFleet:
    def __init__(self, out: str | Path, nodes: int = 3, mqtt_port: int = 0,
                 worker_args: list[str] | None = None, root: str | Path | None = None,
                 cluster: RabbitCluster | None = None) -> None:
        self.out = Path(out)
        self.own_cluster = cluster is None  # a cluster passed in is started and stopped outside
        self.cluster = cluster or RabbitCluster(nodes, root)
        self.mqtt_port = mqtt_port
        self.worker_args = worker_args or []
        self.balancer: Balancer | None = None
        self.workers: dict[str, subprocess.Popen] = {}

    def start(self) -> LocalFleet:
        if self.own_cluster:
            self.cluster.start()
        backends = [("127.0.0.1", n.mqtt_port) for n in self.cluster.nodes]
        self.balancer = Balancer(backends, self.mqtt_port).start()
        return self

    @property
    def mqtt_url(self) -> str:
        assert self.balancer is not None
        return self.balancer.url

    def add_worker(self, name: str, extra: list[str] | None = None,
                   env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start worker `name` (OUT/<name>/, log in OUT/<name>.log)."""
        out = self.out / name
        out.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "gacflow.cloud.cluster", "worker",
               "--amqp", ",".join(self.cluster.amqp_urls), "--out", str(out),
               "--worker-id", name, *self.worker_args, *(extra or [])]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                stderr=open(self.out / f"{name}.log", "ab"),
                                env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE", **(env or {})})
        self.workers[name] = proc
        return proc

    def kill_worker(self, name: str) -> None:
        """SIGKILL: no goodbye, no last acknowledgements (a crash)."""
        proc = self.workers[name]
        proc.kill()
        proc.wait(10)

    def stop_worker(self, name: str, timeout: float = 30) -> None:
        proc = self.workers[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def wait_log(self, name: str, text: str, timeout: float = 120) -> bool:
        """Wait until worker `name`'s log contains `text`."""
        log = self.out / f"{name}.log"
        deadline = time.time() + timeout
        while time.time() < deadline:
            if log.exists() and text in log.read_text(errors="replace"):
                return True
            if self.workers[name].poll() is not None:
                return False
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        for name in list(self.workers):
            self.stop_worker(name)
        if self.balancer:
            self.balancer.stop()
        if self.own_cluster:
            self.cluster.close()


def run_up(args: argparse.Namespace) -> int:
    """Start everything, print where devices connect, run until Ctrl-C, stop everything."""
    extra = ["--no-decode"] if args.no_decode else []

    def interrupt(*_) -> None:  # SIGTERM stops everything too, like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    fleet = LocalFleet(args.out, args.nodes, args.mqtt_port, extra)
    print(f"starting {args.nodes} RabbitMQ nodes under {fleet.cluster.root} ...", flush=True)
    try:
        fleet.start()
        for i in range(args.workers):
            more = [] if args.metrics_port is None else ["--metrics-port",
                                                         str(args.metrics_port + i)]
            fleet.add_worker(f"worker-{i}", more)
        for n in fleet.cluster.nodes:
            print(f"node {n.name}: AMQP {n.amqp_port}, MQTT {n.mqtt_port}")
        print(f"devices connect to {fleet.mqtt_url} (any live node); {args.workers} workers "
              f"write to {Path(args.out).resolve()}/worker-*/; Ctrl-C stops all", flush=True)
        while True:
            time.sleep(1)
            for name, proc in fleet.workers.items():
                if proc.poll() is not None:
                    print(f"{name} exited with {proc.returncode}; see {args.out}/{name}.log")
                    return 1
    except KeyboardInterrupt:
        print("stopping ...")
        return 0
    finally:
        fleet.stop()
