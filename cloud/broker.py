"""A throwaway local MQTT broker for the demo: mosquitto on a free loopback port, or,
when mosquitto is not installed (or fails to start), the embedded pure-Python MQTT 3.1.1
broker (cloud/embedded_broker.py; amqtt from PyPI was tried first and dropped: its
sessions with paho died of keep-alive timeouts). Clients of the embedded broker must
speak MQTT 3.1.1: each broker object says which protocol to use in `.mqtt_version`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from gacflow.errors import ConfigError

CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next((p for p in CANDIDATES if Path(p).exists()), None)


class LocalBroker:
    """Start with `.start()`; `.url`; `.stop()` ends it and removes its folder."""

    kind = "mosquitto"
    mqtt_version = "5"

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="gacflow-broker-"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> LocalBroker:
        exe = find_mosquitto()
        if not exe:
            raise ConfigError("no MQTT broker: install mosquitto (apt-get install mosquitto, "
                              "brew install mosquitto) or pass --broker mqtt://HOST:PORT")
        conf = self.dir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                        "max_queued_messages 100000\n")
        log = open(self.dir / "broker.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=log)
        deadline = time.time() + 15
        while time.time() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise ConfigError(f"mosquitto did not start (see {self.dir}/broker.log)")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


BROKER_KINDS = ("auto", "mosquitto", "embedded")


def start_local_broker(kind: str = "auto"):
    """Start a loopback broker: `auto` is mosquitto when found, else the embedded one."""
    from .embedded_broker import EmbeddedBroker

    if kind not in BROKER_KINDS:
        raise ConfigError(f"local broker must be one of {', '.join(BROKER_KINDS)}, got {kind!r}")
    if kind == "embedded" or (kind == "auto" and not find_mosquitto()):
        return EmbeddedBroker().start()
    try:
        return LocalBroker().start()
    except ConfigError as exc:
        if kind == "mosquitto":
            raise
        print(f"note        {exc}; using the embedded broker instead")
        return EmbeddedBroker().start()
