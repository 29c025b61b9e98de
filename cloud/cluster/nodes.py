"""A private RabbitMQ cluster on loopback ports: start, join, kill, stop (tests, bench, script).

Every node gets its own RABBITMQ_MNESIA_BASE, node name, AMQP/MQTT/distribution ports and
HOME (hence its own Erlang cookie) under one temp folder, and a private epmd port, so it
never touches the Debian service or another user's broker. The binaries are called from
/usr/lib/rabbitmq/bin directly (the /usr/sbin wrappers switch to the rabbitmq user).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from gacflow.errors import ConfigError

RABBIT_BIN = Path(os.environ.get("GACFLOW_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
PLUGINS = ("rabbitmq_mqtt", "rabbitmq_consistent_hash_exchange")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rabbitmq_available() -> bool:
    return (RABBIT_BIN / "rabbitmq-server").exists()


@dataclass
class Node:
    """One broker node: its ports, folders and process."""

    name: str  # Erlang node name, e.g. gf1-1234@localhost
    amqp_port: int
    mqtt_port: int
    dist_port: int
    base: Path
    proc: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/%2F"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class RabbitCluster:
    """`size` RabbitMQ nodes clustered on 127.0.0.1, MQTT and consistent-hash plugins on."""

    def __init__(self, size: int = 3, root: str | Path | None = None) -> None:
        if not rabbitmq_available():
            raise ConfigError(f"RabbitMQ is not installed ({RABBIT_BIN}/rabbitmq-server "
                              "missing): apt-get install rabbitmq-server, or ./run setup")
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="gacflow-rabbit-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.epmd_port = free_port()
        tag = f"{os.getpid()}x{self.epmd_port}"
        self.nodes = [Node(f"gf{i}-{tag}@localhost", free_port(), free_port(), free_port(),
                           self.root / f"node{i}") for i in range(1, size + 1)]
        (self.root / "home").mkdir(exist_ok=True)
        cookie = self.root / "home" / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(os.urandom(16).hex())
            cookie.chmod(0o400)
        (self.root / "enabled_plugins").write_text(f"[{','.join(PLUGINS)}].\n")

    # -- environment ------------------------------------------------------------------
    def env(self, node: Node) -> dict[str, str]:
        base = node.base
        return {
            **os.environ,
            "HOME": str(self.root / "home"),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": node.name,
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_DIST_PORT": str(node.dist_port),
            "RABBITMQ_PID_FILE": str(base / "pid"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_ALLOW_INPUT": "",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "+S 2:2 +A 4",
        }

    def _write_config(self, node: Node) -> None:
        node.base.mkdir(parents=True, exist_ok=True)
        (node.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{node.amqp_port}\n"
            f"mqtt.listeners.tcp.1 = 127.0.0.1:{node.mqtt_port}\n"
            "mqtt.allow_anonymous = true\n"
            "mqtt.vhost = /\nmqtt.exchange = amq.topic\n"
            "loopback_users = none\n"
            "log.console = false\nlog.file.level = warning\n"
            "vm_memory_high_watermark.absolute = 1GB\n"
            "disk_free_limit.absolute = 50MB\n"
        )
        (node.base / "advanced.config").write_text("[].\n")

    def ctl(self, node: Node, *args: str, timeout: float = 60) -> str:
        """rabbitmqctl against `node`; raises RuntimeError with its output on failure."""
        r = subprocess.run([str(RABBIT_BIN / "rabbitmqctl"), "-n", node.name, *args],
                           env=self.env(node), capture_output=True, text=True, timeout=timeout)
        if r.returncode:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {node.name}: "
                               f"{(r.stderr or r.stdout).strip()[-400:]}")
        return r.stdout

    # -- life cycle -------------------------------------------------------------------
    def launch(self, node: Node) -> None:
        """Start the node's process (returns at once; `wait_up` waits for it)."""
        self._write_config(node)
        (node.base / "log").mkdir(exist_ok=True)
        node.proc = subprocess.Popen(
            [str(RABBIT_BIN / "rabbitmq-server")], env=self.env(node),
            stdout=open(node.base / "stdout.txt", "ab"), stderr=subprocess.STDOUT,
            start_new_session=True)

    def start_node(self, node: Node, timeout: float = 120) -> None:
        self.launch(node)
        self.wait_up(node, timeout)

    def wait_up(self, node: Node, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if node.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq node {node.name} exited; see {node.base}/log")
            try:
                socket.create_connection(("127.0.0.1", node.mqtt_port), timeout=0.3).close()
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"rabbitmq node {node.name} did not open its MQTT port in "
                           f"{timeout:.0f} s; see {node.base}/log")

    def start(self) -> RabbitCluster:
        """Start the first node, then each other one joins it (stop_app, join, start_app)."""
        first = self.nodes[0]
        for node in self.nodes:  # boot in parallel: boot time dominates
            self.launch(node)
        for node in self.nodes:
            self.wait_up(node)
        for node in self.nodes[1:]:
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
        return self

    def kill(self, node: Node) -> None:
        """SIGKILL the node's whole process group (beam, erl_child_setup): a crash."""
        if node.proc is not None and node.proc.poll() is None:
            os.killpg(node.proc.pid, signal.SIGKILL)
            node.proc.wait(10)

    def stop_node(self, node: Node) -> None:
        if node.proc is None or node.proc.poll() is not None:
            return
        try:
            self.ctl(node, "stop", timeout=30)
            node.proc.wait(30)
        except (RuntimeError, subprocess.TimeoutExpired):
            self.kill(node)

    def stop(self) -> None:
        """Stop every node, then the private epmd."""
        for node in reversed(self.nodes):
            self.stop_node(node)
        for node in self.nodes:
            self.kill(node)
        subprocess.run([shutil.which("epmd") or "epmd", "-kill"],
                       env={**os.environ, "ERL_EPMD_PORT": str(self.epmd_port)},
                       capture_output=True, timeout=10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def amqp_urls(self) -> list[str]:
        return [n.amqp_url for n in self.nodes]

    @property
    def mqtt_urls(self) -> list[str]:
        return [n.mqtt_url for n in self.nodes]
