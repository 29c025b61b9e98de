"""`gacflow-cloud --partition I/N`: two receiver processes share devices on a real mosquitto.

Every worker gets every packet (plain subscription, own persistent session) and keeps
only the devices whose CRC-32 falls in its partition, so each device's stream is whole on
exactly one worker: the thing `--group` cannot promise with mosquitto's per-message
round-robin.
"""

from __future__ import annotations

import os
import signal
import subprocess
import urllib.request
import zlib

import pytest
import soundfile as sf
from broker import free_port
from test_cloud_restart import CLI, wait_for

from gacflow.cloud.cli import default_client_id
from gacflow.cloud.loadgen import Publisher, packetize
from gacflow.cloud.partition import Partition, parse_partition, partition_of
from gacflow.errors import ConfigError

FRAMES = 50  # 2 s per device, in packets of 5 frames: a split stream would show at once


def test_hash_is_stable_and_spread():
    # pinned: changing the hash would move devices (and their live sessions) between workers
    assert [partition_of(d, 3) for d in ("kitchen", "garage", "dev-1", "dev-2")] == [1, 2, 2, 0]
    assert partition_of("kitchen", 1024) == 3936603700 % 1024 == zlib.crc32(b"kitchen") % 1024
    counts = [0] * 4
    for i in range(400):
        counts[partition_of(f"device-{i}", 4)] += 1
    assert min(counts) > 60  # no partition starves


@pytest.mark.parametrize("text, needle", [
    ("3", "must be I/N"), ("a/b", "must be I/N"), ("1/2/3", "must be I/N"),
    ("2/2", "need 0 <= I < N <= 1024"), ("-1/2", "need 0 <= I"), ("0/0", "need 0 <= I"),
    ("0/1025", "N <= 1024"),
])
def test_bad_partitions(text, needle):
    with pytest.raises(ConfigError) as err:
        parse_partition(text)
    assert needle in str(err.value)


def test_partition_config_and_client_ids():
    from gacflow.cloud import config
    from gacflow.cloud.cli import build_parser

    cfg = config.resolve(build_parser().parse_args([]), env={"GACFLOW_CLOUD_PARTITION": "1/3"})
    assert cfg.partition_spec == Partition(1, 3) and parse_partition(" 0/1 ") == Partition(0, 1)
    with pytest.raises(ConfigError, match="partition and group exclude each other"):
        config.resolve(build_parser().parse_args(["--partition", "0/2", "--group", "g"]), env={})
    ids = {default_client_id("out", None, Partition(i, 3)) for i in range(3)}
    assert len(ids) == 3 and default_client_id("out") not in ids


def start_worker(url: str, out, part: str, port: int, log):
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    return subprocess.Popen(
        CLI + ["--broker", url, "--out", str(out), "--partition", part, "--threads", "1",
               "--idle-timeout", "2", "--reorder-timeout", "0.5", "--metrics-port", str(port)],
        stdout=subprocess.DEVNULL, stderr=open(log, "ab"), env=env)


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_two_partitions_split_devices_whole(broker, tmp_path, speech):
    import torch

    from gacflow.model import Codec

    torch.set_num_threads(1)
    candidates = [f"dev-{i}" for i in range(20)]
    devices = [d for d in candidates if partition_of(d, 2) == 0][:2] + \
              [d for d in candidates if partition_of(d, 2) == 1][:2]
    assert len(devices) == 4
    codec = Codec.from_bundle()
    ids = codec.encode(speech[: 16000 * 8]).ids
    packets = {d: packetize(ids[k * FRAMES : (k + 1) * FRAMES], "275", codec.layout,
                            frames_per_packet=5) for k, d in enumerate(devices)}

    outs = [tmp_path / "w0", tmp_path / "w1"]
    logs = [tmp_path / "w0.log", tmp_path / "w1.log"]
    ports = [free_port(), free_port()]
    workers = [start_worker(broker.url, outs[i], f"{i}/2", ports[i], logs[i]) for i in range(2)]
    try:
        for log in logs:
            wait_for(lambda log=log: log.exists() and b"connected to" in log.read_bytes(),
                     60, f"{log.name} connected")
        pubs = [Publisher(broker.url, d, codec.codec_id) for d in devices]
        infos = [p.publish(packets[p.device][k])  # interleaved, as live devices send
                 for k in range(len(packets[devices[0]])) for p in pubs]
        for info in infos:
            info.wait_for_publish(30)
        wait_for(lambda: all(list((outs[partition_of(d, 2)] / d).glob("*.wav"))
                             for d in devices), 60, "one WAV per device")
        for d in devices:
            owner = partition_of(d, 2)
            assert not (outs[1 - owner] / d).exists(), f"{d} leaked to worker {1 - owner}"
            (wav,) = list((outs[owner] / d).glob("*.wav"))
            got, sr = sf.read(wav, dtype="float32")
            assert sr == 16000 and len(got) == FRAMES * 640  # whole: no packet went elsewhere
        per_device = len(packetize(ids[:FRAMES], "275", codec.layout, frames_per_packet=5))
        for i in range(2):  # each worker acknowledged and dropped the other's two devices
            wait_for(lambda i=i: metric(ports[i], "gacflow_packets_other_partition_total")
                     == 2 * per_device, 10, "other-partition count")
            assert metric(ports[i], "gacflow_devices") == 2
        for p in pubs:
            p.close()
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        codes = [w.wait(30) for w in workers]
    assert codes == [0, 0]
    for log in logs:
        text = log.read_bytes()
        assert b"Traceback" not in text and b"partition" in text
