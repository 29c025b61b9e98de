"""Errors name what is wrong, start-up writes nothing before it has checked its inputs,
and a stopped agent exits promptly without losing its queue (issue 27: 3, 5c, 6b, 6c)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def receiver_config(tmp_path: Path, **extra: object) -> Path:
    """A receiver TOML whose output paths all lie in tmp_path (none created yet)."""
    values = {"broker": f"mqtt://127.0.0.1:{closed_port()}", "out": str(tmp_path / "audio"),
              "archive": str(tmp_path / "state" / "archive.sqlite"), **extra}
    lines = ["[cloud]"] + [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}"
                           for k, v in values.items()]
    path = tmp_path / "receiver.toml"
    path.write_text("\n".join(lines).replace("'", '"') + "\n")
    return path


def run_receiver(capsys, cfg: Path) -> tuple[int, str]:
    from gacflow.cloud.cli import main

    rc = main(["--config", str(cfg)])
    return rc, capsys.readouterr().err


def assert_nothing_created(tmp_path: Path) -> None:
    assert not (tmp_path / "audio").exists()
    assert not (tmp_path / "state").exists()


def test_missing_ca_file_is_named_and_nothing_is_created(tmp_path, capsys):
    ca = tmp_path / "etc" / "ca.crt"
    cfg = receiver_config(tmp_path, broker="mqtts://127.0.0.1:8883", ca_file=str(ca),
                          metrics_port=0)
    rc, err = run_receiver(capsys, cfg)
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"ca_file: {ca}: no such file" in err
    assert_nothing_created(tmp_path)


def test_bad_pem_is_named(tmp_path, capsys):
    ca = tmp_path / "ca.crt"
    ca.write_text("not a certificate\n")
    cfg = receiver_config(tmp_path, broker="mqtts://127.0.0.1:8883", ca_file=str(ca))
    rc, err = run_receiver(capsys, cfg)
    assert rc == 2 and f"ca_file: {ca}: not a usable CA certificate" in err
    assert_nothing_created(tmp_path)


def test_taken_metrics_port_is_named(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        rc, err = run_receiver(capsys, receiver_config(tmp_path, metrics_port=port))
    assert rc == 2 and err.count("\n") == 1
    assert f"metrics port 127.0.0.1:{port} is already in use" in err
    assert "--metrics-port" in err
    assert_nothing_created(tmp_path)


def test_bad_broker_url_before_anything_is_created(tmp_path, capsys):
    rc, err = run_receiver(capsys, receiver_config(tmp_path, broker="http://x"))
    assert rc == 2 and "expected mqtt://HOST" in err
    assert_nothing_created(tmp_path)


def test_edge_tls_files_are_named(tmp_path):
    from gacflow.edge import config
    from gacflow.errors import ConfigError

    missing = tmp_path / "ca.pem"
    with pytest.raises(ConfigError, match=f"ca_file: {missing}: no such file"):
        config.validate(config.EdgeConfig(broker="mqtts://h", ca_file=str(missing)))
    with pytest.raises(ConfigError, match=f"key_file: {tmp_path}: not a file"):
        config.validate(config.EdgeConfig(broker="mqtts://h", key_file=str(tmp_path)))
    missing.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=f"ca_file: {missing}: not a usable CA certificate"):
        config.validate(config.EdgeConfig(broker="mqtts://h", ca_file=str(missing)))


# --- 6b: status log without unknown fields ---------------------------------------------------
def test_offline_without_birth_logs_no_none(caplog):
    from gacflow.cloud.receiver import Receiver, status_details

    rx = SimpleNamespace(status={}, codec=SimpleNamespace(codec_id="c1"), warned=set())
    rx._warn = lambda *a: Receiver._warn(rx, *a)
    with caplog.at_level(logging.INFO, logger="gacflow.cloud"):
        Receiver._status(rx, "dev1", b'{"online": false}')  # a will, no birth seen
    lines = [r.getMessage() for r in caplog.records]
    assert "device dev1 offline" in lines and not any("None" in line for line in lines)
    assert status_details("c1", "275") == " (codec c1, mode 275)"
    assert status_details(None, "175") == " (mode 175)" and status_details(None, None) == ""


# --- 6c: too little calibration audio ----------------------------------------------------------
def test_calibration_warning_threshold():
    from gacflow.export.audio_data import calibration_warning, total_seconds

    utts = [np.zeros(16000 * 9, np.float32), np.zeros(16000 * 9, np.float32)]
    assert calibration_warning(total_seconds(utts)) == (
        "warning: only 18 s of calibration audio (300 s recommended); INT8 ranges may be poor")
    assert calibration_warning(300.0) is None and calibration_warning(60.0) is None


# --- 5c: a stopped agent does not wait out the drain ------------------------------------------
def test_sigterm_with_unreachable_broker_exits_promptly(tmp_path):
    queue = tmp_path / "queue.db"
    args = [sys.executable, "-m", "gacflow.edge.cli", "--broker",
            f"mqtt://127.0.0.1:{closed_port()}", "--device-id", "t1", "--input",
            str(ROOT / "sdk" / "samples" / "speech_ru.wav"), "--queue", str(queue),
            "--drain-timeout", "60", "--reconnect-max-delay", "2",
            "--status-interval", "1"]  # a line a second: the read loop below never stalls
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        out: list[str] = []
        deadline = time.monotonic() + 120
        for line in proc.stdout:  # the whole file is queued, then the drain waits
            out.append(line)
            if "event=stream_end" in line or time.monotonic() > deadline:
                break
        assert any("event=stream_end" in line for line in out), "".join(out)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert elapsed < 5, elapsed
    assert "event=stopped_with_queue" in rest
    with sqlite3.connect(queue) as db:
        (left,) = db.execute("SELECT COUNT(*) FROM packets").fetchone()
    assert left > 0 and f"queued={left}" in rest


def test_second_signal_ends_a_connected_drain():
    from gacflow.edge.agent import EdgeAgent

    agent = EdgeAgent.__new__(EdgeAgent)  # only the drain logic, no model or broker
    agent._stopping, agent._abort = threading.Event(), threading.Event()
    agent.source = SimpleNamespace(stop=lambda: None)
    agent.queue = [b"packet"] * 3  # never acknowledged
    connected = threading.Event()
    connected.set()
    agent.publisher = SimpleNamespace(connected=connected, fatal=None,
                                      drain=lambda timeout: time.sleep(timeout) or False)
    agent._tick = lambda force=False: None
    agent.stop()  # first signal: a connected broker still gets its chance
    threading.Timer(0.5, agent.stop).start()  # the second one ends it
    t0 = time.monotonic()
    assert agent._drain(30.0) is False
    assert time.monotonic() - t0 < 3
