"""Credential rotation keeps the agent's queue: packets queued before it arrive after it,
in order, with the new identity, while the old certificate is refused."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from fleet_helpers import Client, FleetBroker, make_fleet, receiver_client

from gacflow.edge import config as edge_config
from gacflow.edge.disk_queue import DiskQueue
from gacflow.edge.publisher import MqttPublisher

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")
CLI = [sys.executable, "-m", "gacflow.cloud.cli"]


def agent(fleet, device: str, queue: DiskQueue) -> MqttPublisher:
    """The agent's real publisher, configured by its provisioned gacflow-edge.toml."""
    toml = fleet.dir / "devices" / device / "gacflow-edge.toml"
    cfg = edge_config.build(None, {"GACFLOW_EDGE_QUEUE": str(queue.path)}, str(toml))
    pub = MqttPublisher(cfg, queue, {"codec_id": "test"})
    pub.start()
    return pub


@pytest.mark.parametrize("auth", ["cert", "password"])
def test_rotation_loses_no_queued_packet(tmp_path, auth):
    fleet = make_fleet(tmp_path / "fleet", auth, devices=("r",))
    broker = FleetBroker(fleet).start()
    q = DiskQueue(tmp_path / "queue.db")
    rx = receiver_client(fleet, broker.port)
    try:
        assert rx.connect()
        rx.subscribe("gacflow/v1/r/tokens")
        old = fleet.dir / "old"
        shutil.copytree(fleet.dir / "devices" / "r", old)
        for i in range(10):
            q.put(b"before-%03d" % i)
        pub = agent(fleet, "r", q)
        assert pub.drain(20), pub.diagnose()
        pub.close()
        for i in range(10):  # produced while the agent was stopped for the rotation
            q.put(b"queued-%03d" % i)
        r = subprocess.run(CLI + ["provision", "r", "--rotate", "--fleet", str(fleet.dir),
                                  "--reload", str(broker.pidfile)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        pub = agent(fleet, "r", q)  # restarted with the new files, same queue
        assert pub.drain(20), pub.diagnose()
        pub.close()
        got = [p for _, p in rx.drain(10.0, count=20)]
        assert got == [b"before-%03d" % i for i in range(10)] + [b"queued-%03d" % i
                                                                for i in range(10)]
        if auth == "cert":  # the old certificate is on the CRL now
            stale = Client(broker.port, str(old / "ca.crt"), str(old / "device.crt"),
                           str(old / "device.key"), client_id="r")
        else:
            import tomllib

            s = tomllib.loads((old / "gacflow-edge.toml").read_text())["gacflow-edge"]
            stale = Client(broker.port, s["ca_file"], username="r", password=s["password"],
                           client_id="r")
        assert not stale.connect()
    finally:
        rx.close()
        q.close()
        broker.close()
