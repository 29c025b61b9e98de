"""A provisioned fleet on a real mosquitto: who may connect, publish and read what.

The broker runs the very config `gacflow-cloud provision` writes (TLS only, per-device
identity, generated ACL), on a free loopback port.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest
from fleet_helpers import Client, FleetBroker, device_client, make_fleet, receiver_client

from gacflow.cloud.provision import Fleet

pytestmark = pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl")
CLI = [sys.executable, "-m", "gacflow.cloud.cli"]


@pytest.fixture(scope="module", params=["cert", "password"])
def fleet_broker(request, tmp_path_factory):
    fleet = make_fleet(tmp_path_factory.mktemp(f"fleet-{request.param}"), request.param,
                       devices=("a", "b", "c", "d"))
    b = FleetBroker(fleet).start()
    yield b
    b.close()


def connected(c: Client) -> Client:
    assert c.connect(), "a provisioned identity must be let in"
    return c


def test_a_cannot_publish_as_b_nor_read_bs_control(fleet_broker):
    f, port = fleet_broker.fleet, fleet_broker.port
    rx = connected(receiver_client(f, port))
    assert not rx.subscribe("gacflow/v1/+/tokens")[0].is_failure
    a = connected(device_client(f, "a", port))
    b = connected(device_client(f, "b", port))
    try:
        assert not a.publish("gacflow/v1/a/tokens", b"mine").is_failure
        assert a.publish("gacflow/v1/b/tokens", b"forged").value == 0x87  # not authorized
        assert a.publish("gacflow/v1/b/status", b'{"online": false}').value == 0x87
        got = rx.drain(1.0)
        assert got == [("gacflow/v1/a/tokens", b"mine")]
        a.subscribe("gacflow/v1/b/control")  # granted by mosquitto 2.0, but never delivered
        a.subscribe("gacflow/v1/+/control")
        b.subscribe("gacflow/v1/b/control")
        assert not rx.publish("gacflow/v1/b/control", b"cmd").is_failure
        assert b.drain(5.0, count=1) == [("gacflow/v1/b/control", b"cmd")]
        assert a.drain(0.5) == []
        # a device cannot listen to the fleet's tokens either
        a.subscribe("gacflow/v1/+/tokens")
        b.publish("gacflow/v1/b/tokens", b"private")
        assert a.drain(0.5) == []
    finally:
        for c in (a, b, rx):
            c.close()


def test_unknown_and_plaintext_clients_are_refused(fleet_broker, tmp_path):
    f, port = fleet_broker.fleet, fleet_broker.port
    ca = str(f.dir / "ca" / "ca.crt")
    assert not Client(port, None, tls=False).connect(), "plaintext to the TLS listener"
    if f.auth == "cert":
        assert not Client(port, ca).connect(), "TLS without a client certificate"
        other = make_fleet(tmp_path / "other", "cert", devices=("a",))  # another CA's "a"
        s = other.dir / "devices" / "a"
        assert not Client(port, ca, str(s / "device.crt"), str(s / "device.key")).connect()
    else:
        assert not Client(port, ca, username="a", password="guess").connect()
        assert not Client(port, ca, username="nobody", password="x").connect()
        assert not Client(port, ca).connect(), "no user name at all"


def test_revoked_device_is_refused_at_next_connect(fleet_broker, tmp_path):
    f, port = fleet_broker.fleet, fleet_broker.port
    stolen = tmp_path / "stolen"  # what a thief copied off the device before revocation
    shutil.copytree(f.dir / "devices" / "c", stolen)
    c = connected(device_client(f, "c", port))
    assert not c.publish("gacflow/v1/c/tokens", b"before").is_failure
    r = subprocess.run(CLI + ["revoke", "c", "--fleet", str(f.dir), "--reload",
                              str(fleet_broker.pidfile)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    time.sleep(0.5)
    f.load()
    assert f.devices["c"]["status"] == "revoked"
    # a connection still open loses its topics at once (the ACL is checked per publish;
    # mosquitto even cuts a password client whose entry is gone)
    rc = c.publish("gacflow/v1/c/tokens", b"after")
    assert (rc.value == 0x87) if f.auth == "cert" else (rc is None or rc.is_failure)
    c.close()
    if f.auth == "cert":
        again = Client(port, str(stolen / "ca.crt"), str(stolen / "device.crt"),
                       str(stolen / "device.key"), client_id="c")
    else:
        import tomllib

        s = tomllib.loads((stolen / "gacflow-edge.toml").read_text())["gacflow-edge"]
        again = Client(port, s["ca_file"], username="c", password=s["password"], client_id="c")
    assert not again.connect()
    connected(device_client(f, "d", port)).close()  # the others are untouched


def test_cli_list_and_secrets_never_printed(tmp_path):
    fleet = tmp_path / "f"
    outs = []
    for argv in (["provision", "x1", "--broker", "mqtts://127.0.0.1:8883", "--auth",
                  "password"], ["provision", "x2"], ["provision", "x2", "--rotate"],
                 ["revoke", "x1"], ["list"]):
        r = subprocess.run(CLI + argv + ["--fleet", str(fleet)], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout + r.stderr)
    assert "x1" in outs[-1] and "revoked" in outs[-1] and "active" in outs[-1]
    f = Fleet(fleet)
    f.load()
    secrets = [(fleet / "devices" / "x2" / "gacflow-edge.toml").read_text().split(
        'password = "')[1].split('"')[0],
        (fleet / "receiver" / "receiver.env").read_text().split("=", 1)[1].strip()]
    for s in secrets:
        assert all(s not in o for o in outs)
        assert s not in (fleet / "broker" / "passwd").read_text()  # hashes only
    for p in (fleet / "devices" / "x2" / "gacflow-edge.toml", fleet / "broker" / "passwd",
              fleet / "receiver" / "receiver.env", fleet / "ca" / "ca.key"):
        assert p.stat().st_mode & 0o077 == 0, f"{p} readable by others"
    bad = subprocess.run(CLI + ["provision", "x2", "--fleet", str(fleet)], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "already provisioned" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    first = subprocess.run(CLI + ["provision", "y", "--fleet", str(tmp_path / "new")],
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 2 and "--broker" in first.stderr
