"""`gacflow-cloud` as a process: SIGKILL mid-stream and restart loses no packet; CLI errors."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gacflow.cloud.loadgen import Publisher, packetize

CLI = [sys.executable, "-m", "gacflow.cloud.cli"]


def start_receiver(url: str, out, log):
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    return subprocess.Popen(
        CLI + ["--broker", url, "--out", str(out), "--idle-timeout", "2", "--threads", "1",
               "--reorder-timeout", "0.5"],
        stdout=subprocess.DEVNULL, stderr=open(log, "ab"), env=env,
    )


def wait_for(pred, timeout=60.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def archived(out) -> int:
    db = out / "archive.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as c:
            return c.execute("SELECT count(*) FROM packets").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_sigkill_mid_stream_then_restart_loses_nothing(broker, tmp_path, speech):
    from gacflow.model import Codec

    codec = Codec.from_bundle()
    tokens = codec.encode(speech[: 16000 * 8])
    packets = packetize(tokens.ids, "275", codec.layout)  # 8 packets of 1 s
    out, log = tmp_path / "out", tmp_path / "rx.log"
    rx = start_receiver(broker.url, out, log)
    try:
        wait_for(lambda: b"connected to" in log.read_bytes() if log.exists() else False,
                 what="receiver connected")
        pub = Publisher(broker.url, "kill", codec.codec_id)
        pub.send(packets[:3])
        wait_for(lambda: archived(out) >= 3, what="first packets archived")
        rx.send_signal(signal.SIGKILL)
        rx.wait(10)
        pub.send(packets[3:])  # the broker queues these for the receiver's session
        rx = start_receiver(broker.url, out, log)
        wait_for(lambda: list((out / "kill").glob("*.wav")), what="session WAV")
        (wav,) = list((out / "kill").glob("*.wav"))
        got, _ = sf.read(wav, dtype="float32")
        tokens.voice = None  # the packets carry tokens only (no voice code: no timbre EQ)
        ref = codec.decode(tokens)
        assert len(got) == len(tokens) * 640
        assert np.abs(got[: len(ref)] - ref).max() < 2e-3
        with sqlite3.connect(out / "archive.sqlite") as c:
            gaps, frames = c.execute("SELECT gaps, frames FROM sessions").fetchone()
        assert gaps == 0 and frames == len(tokens)
        assert b"resumed 1 live session" in log.read_bytes()
        pub.close()
    finally:
        rx.terminate()
        assert rx.wait(20) == 0  # SIGTERM is a clean stop
    assert b"Traceback" not in log.read_bytes()


@pytest.mark.parametrize("argv, message", [
    (["--broker", "ftp://x"], "expected mqtt://HOST"),
    (["--idle-timeout", "soon"], "--idle-timeout: bad value for idle_timeout"),
    (["--partition", "0/2", "--group", "g"], "partition and group exclude each other"),
    (["--partition", "2/2"], "need 0 <= I < N"),
    (["--config", "/nonexistent.toml"], "not found"),
    (["redecode", "--archive", "/nonexistent.sqlite", "--out", "x"], "not found"),
])
def test_user_errors_are_one_line(argv, message):
    r = subprocess.run(CLI + argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_config_precedence_flag_env_file(tmp_path):
    from gacflow.cloud import config
    from gacflow.cloud.cli import build_parser

    f = tmp_path / "rx.toml"
    f.write_text('[cloud]\nidle-timeout = 7.5\ngroup = "file"\nbroker = "mqtt://file:1"\n')
    args = build_parser().parse_args(["--config", str(f), "--broker", "mqtts://flag:8883"])
    cfg = config.resolve(args, env={"GACFLOW_CLOUD_GROUP": "env"})
    assert cfg.broker == "mqtts://flag:8883" and cfg.group == "env"
    assert cfg.idle_timeout == 7.5 and cfg.reorder_timeout == 1.0
    assert config.parse_broker(cfg.broker).tls
    example = Path(__file__).resolve().parents[1] / "examples" / "cloud" / "receiver.toml"
    cfg = config.resolve(build_parser().parse_args(["--config", str(example)]), env={})
    assert cfg.metrics_port == 9108 and config.parse_broker(cfg.broker).port == 8883
    f.write_text("colour = 1\n")
    with pytest.raises(Exception, match="unknown setting 'colour'"):
        config.resolve(build_parser().parse_args(["--config", str(f)]), env={})
