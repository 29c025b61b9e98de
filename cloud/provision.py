"""`gacflow-cloud provision | revoke | list`: a fleet's device identities, one source of truth.

    gacflow-cloud provision DEV [--fleet DIR] [--broker mqtts://HOST:8883] [--auth cert|password]
                                [--rotate] [--reload PIDFILE]
    gacflow-cloud revoke DEV [--fleet DIR] [--reload PIDFILE]
    gacflow-cloud list [--fleet DIR]

A fleet folder (default $GACFLOW_FLEET or ./gacflow-fleet) holds fleet.json (the
registry), the fleet CA (ca/), the broker's files (broker/: server certificate,
mosquitto.conf, gacflow.acl, passwd), the receiver's identity (receiver/) and one folder
per device (devices/DEV/: its key or password, certificates and gacflow-edge.toml, to be
copied onto the device). The first `provision` creates the CA and the broker and receiver
identities; it needs --broker. Every change rewrites the ACL and password file from the
registry, so they never drift. Secrets are written to 0600 files only: never printed,
logged or passed to another process on its command line.

Auth `cert` (default): a per-device client certificate signed by the fleet CA; mosquitto
`require_certificate` + `use_identity_as_username` makes its common name the user name the
ACL checks, and revocation puts its serial on the CRL. Auth `password`: a random password
per device, stored as a PBKDF2 hash in mosquitto's password file.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gacflow.broker_url import parse_broker_url
from gacflow.errors import ConfigError
from gacflow.topics import check_device_id

from . import fleet_files as ff
from .fleet_pki import FleetCA

AUTHS = ("cert", "password")


@dataclass
class Change:
    """What a command did, for its one-line report (never a secret)."""

    device: str
    action: str
    folder: Path | None = None


class Fleet:
    """The registry in FLEET/fleet.json and the files rendered from it."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.dir = Path(folder)
        self.registry = self.dir / "fleet.json"
        self.ca = FleetCA(self.dir / "ca")
        self.data: dict = {}

    # -- registry ---------------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[Fleet]:
        """One change at a time (two operators, or a script in a loop)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o711)  # mosquitto may reach broker/; secrets are 0600 files
        with open(self.dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self.load()
            yield self

    def exists(self) -> bool:
        return self.registry.is_file()

    def load(self) -> None:
        if not self.exists():
            self.data = {}
            return
        try:
            self.data = json.loads(self.registry.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"fleet: {self.registry}: unreadable ({exc})") from exc
        self.ca.broker_host = parse_broker_url(self.data["broker"]).host
        self.ca.extra_names = self.data.get("broker_names", [])

    def save(self) -> None:
        ff.write_private(self.registry, json.dumps(self.data, indent=1, sort_keys=True) + "\n")

    @property
    def auth(self) -> str:
        return self.data["auth"]

    @property
    def devices(self) -> dict[str, dict]:
        return self.data.setdefault("devices", {})

    def active(self) -> list[str]:
        return [d for d, e in self.devices.items() if e["status"] == "active"]

    # -- creation ---------------------------------------------------------------------
    def create(self, broker: str, auth: str, names: list[str] | None = None) -> None:
        """The CA, the broker's server certificate (for the --broker host and `names`) and
        the receiver's identity."""
        url = parse_broker_url(broker, allow_credentials=False)
        if not url.tls:
            raise ConfigError(f"broker {broker!r}: a fleet connects over TLS; use mqtts://HOST")
        if auth not in AUTHS:
            raise ConfigError(f"auth must be cert or password, got {auth!r}")
        self.ca.broker_host = url.host
        self.ca.extra_names = [n for n in names or [] if n and n != url.host]
        self.ca.create()
        b = self.dir / "broker"
        self.ca.issue(url.host, b / "server.key", b / "server.crt", kind="server")
        self.data = {"version": 1, "auth": auth, "broker": broker, "devices": {},
                     "broker_names": self.ca.extra_names, "created": time.time()}
        r = self.dir / "receiver"
        ff.write_public(r / "ca.crt", self.ca.cert.read_text())
        if auth == "cert":
            self.ca.issue(ff.RECEIVER, r / "client.key", r / "client.crt")
        else:
            password = secrets.token_urlsafe(24)
            self.data["receiver_hash"] = ff.password_hash(password)
            ff.write_private(r / "receiver.env", f"GACFLOW_CLOUD_PASSWORD={password}\n")
        ff.write_public(r / "receiver.toml", ff.receiver_toml(broker, r, auth))
        self.save()
        self.render()

    def render(self) -> None:
        """Rewrite the ACL, the password file and the listener config from the registry."""
        b = self.dir / "broker"
        ff.write_public(b / "ca.crt", self.ca.cert.read_text())
        ff.write_public(b / "crl.pem", self.ca.crl.read_text())
        ff.write_public(b / "gacflow.acl", ff.acl_text(self.active()))
        if self.auth == "password":
            hashes = {d: self.devices[d]["password_hash"] for d in self.active()}
            hashes[ff.RECEIVER] = self.data["receiver_hash"]
            ff.write_private(b / "passwd", ff.passwd_text(hashes))
        url = parse_broker_url(self.data["broker"])
        ff.write_public(b / "mosquitto.conf", ff.mosquitto_conf(self.dir, self.auth, url.port))

    # -- devices ----------------------------------------------------------------------
    def provision(self, device: str, rotate: bool = False,
                  device_path: str | None = None) -> Change:
        """New credentials for `device`; with `rotate`, replace its current ones (the old
        certificate is revoked once the new one is in place). `device_path`: where the
        folder will be on the device (the paths in its gacflow-edge.toml)."""
        check_device_id(device)
        if device == ff.RECEIVER:
            raise ConfigError(f"device id {device!r} is the receiver's identity")
        entry = self.devices.get(device)
        if entry and entry["status"] == "active" and not rotate:
            raise ConfigError(f"device {device} is already provisioned "
                              "(--rotate issues new credentials)")
        folder = self.dir / "devices" / device
        now = time.time()
        new = {"status": "active", "created": (entry or {}).get("created", now),
               "issued": now, "serials": (entry or {}).get("serials", [])}
        password = None
        if self.auth == "cert":
            key, cert = folder / "device.key.new", folder / "device.crt.new"
            serial = self.ca.issue(device, key, cert)
            os.replace(key, folder / "device.key")
            os.replace(cert, folder / "device.crt")
            new["serial"] = serial
            new["serials"] = new["serials"] + [serial]
        else:
            password = secrets.token_urlsafe(24)
            new["password_hash"] = ff.password_hash(password)
        ff.write_public(folder / "ca.crt", self.ca.cert.read_text())
        device_path = device_path or (entry or {}).get("device_path")  # kept on rotation
        if device_path:
            new["device_path"] = device_path
        toml = ff.edge_toml(device, self.data["broker"],
                            Path(device_path) if device_path else folder, password)
        ff.write_private(folder / "gacflow-edge.toml", toml)
        old_serial = (entry or {}).get("serial") if entry and entry["status"] == "active" else None
        self.devices[device] = new
        self.save()
        if old_serial:
            self.ca.revoke(old_serial)
        self.render()
        return Change(device, "rotated" if entry else "provisioned", folder)

    def revoke(self, device: str) -> Change:
        """Refuse the device from its next connection on (after the broker reloads)."""
        entry = self.devices.get(device)
        if entry is None:
            raise ConfigError(f"device {device} is not in this fleet ({self.dir})")
        if entry["status"] == "active":
            if entry.get("serial"):
                self.ca.revoke(entry["serial"])
            entry.pop("password_hash", None)
            entry.update(status="revoked", revoked=time.time())
            self.save()
        self.render()
        folder = self.dir / "devices" / device
        for name in ("device.key", "gacflow-edge.toml"):  # no stale secret left lying around
            (folder / name).unlink(missing_ok=True)
        return Change(device, "revoked")

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(device, status, serial or '-', issued UTC) for `list`."""
        out = []
        for d, e in sorted(self.devices.items()):
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e["issued"]))
            out.append((d, e["status"], e.get("serial", "-"), when))
        return out


def reload_broker(pidfile: str | None) -> str:
    """SIGHUP the broker named by a pid file: mosquitto re-reads ACL, passwords and CRL."""
    if not pidfile:
        return "reload the broker to apply it: kill -HUP $(pidof mosquitto)"
    try:
        pid = int(Path(pidfile).read_text().split()[0])
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError, IndexError) as exc:
        raise ConfigError(f"reload: {pidfile}: cannot signal the broker ({exc})") from exc
    return f"broker (pid {pid}) reloaded"


def build_parser(command: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=f"gacflow-cloud {command}", description={
        "provision": "Create a device's credentials and its gacflow-edge.toml (the first "
                     "call also creates the fleet CA, broker and receiver identities).",
        "revoke": "Revoke a device: the broker refuses it at its next connect.",
        "list": "List the fleet's devices."}[command])
    if command != "list":
        ap.add_argument("device", help="device id (topic level and MQTT identity)")
    ap.add_argument("--fleet", default=os.environ.get("GACFLOW_FLEET", "gacflow-fleet"),
                    help="fleet folder (default $GACFLOW_FLEET or ./gacflow-fleet)")
    if command == "provision":
        ap.add_argument("--broker", default=None,
                        help="mqtts://HOST[:PORT] the devices connect to (first call only)")
        ap.add_argument("--broker-names", default="", metavar="NAME,...",
                        help="other host names/addresses the broker certificate is valid for, "
                             "e.g. localhost for a receiver on the broker host (first call "
                             "only)")
        ap.add_argument("--auth", choices=AUTHS, default=None,
                        help="per-device client certificates (default) or passwords "
                             "(first call only)")
        ap.add_argument("--rotate", action="store_true",
                        help="replace the credentials of a provisioned device")
        ap.add_argument("--device-path", default=None, metavar="DIR",
                        help="where the device folder will be on the device, for the paths "
                             "in its gacflow-edge.toml (default: its place in the fleet)")
    if command != "list":
        ap.add_argument("--reload", metavar="PIDFILE", default=None,
                        help="send the broker SIGHUP (pid from this file) to apply the change")
    return ap


def main(command: str, argv: list[str]) -> int:
    args = build_parser(command).parse_args(argv)
    fleet = Fleet(args.fleet)
    if command == "list":
        if not fleet.exists():
            raise ConfigError(f"fleet: {args.fleet}: no fleet here (provision a device first)")
        fleet.load()
        print(f"fleet {fleet.dir} (auth {fleet.auth}, broker {fleet.data['broker']})")
        for row in fleet.rows():
            cells = zip(row, (24, 8, 10, 20), strict=True)
            print("  ".join(f"{v:<{w}}" for v, w in cells).rstrip())
        return 0
    with fleet.locked():
        if not fleet.exists():
            if command == "revoke":
                raise ConfigError(f"fleet: {args.fleet}: no fleet here")
            if not args.broker:
                raise ConfigError("the first provision creates the fleet: give "
                                  "--broker mqtts://HOST[:PORT]")
            fleet.create(args.broker, args.auth or "cert", args.broker_names.split(","))
            print(f"fleet created in {fleet.dir}: CA, broker/mosquitto.conf, "
                  f"receiver/receiver.toml (auth {fleet.auth})")
        elif args.__dict__.get("broker") and args.broker != fleet.data["broker"]:
            raise ConfigError(f"this fleet's broker is {fleet.data['broker']}; --broker "
                              "is only for the first provision")
        elif args.__dict__.get("auth") and args.auth != fleet.auth:
            raise ConfigError(f"this fleet uses auth {fleet.auth}; --auth is only for the "
                              "first provision")
        if command == "provision":
            ch = fleet.provision(args.device, rotate=args.rotate, device_path=args.device_path)
            print(f"device {ch.device} {ch.action}: copy {ch.folder}/ to the device and run "
                  f"gacflow-edge --config {ch.folder}/gacflow-edge.toml")
        else:
            ch = fleet.revoke(args.device)
            print(f"device {ch.device} revoked")
    print(reload_broker(args.reload))
    return 0
