"""Three real edge agents (INT8 ONNX, subprocesses) -> mosquitto -> receiver -> three WAVs.

Their STOI against the inputs must match an offline `Codec.decode` of the very tokens
the agents sent (read back from the receiver's archive). Needs a bundle with
encoder.int8.onnx (the shipped one, or $GACFLOW_BUNDLE); skipped otherwise.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from gacflow.audio import write_wav
from gacflow.bitstream import decode_packet
from gacflow.bundle import Bundle
from gacflow.tokens import Tokens

ENTROPY = Bundle.load().entropy  # the shipped tables: the agent codes its packets

pytest.importorskip("onnxruntime")
HAS_INT8 = Bundle.load().has("encoder.int8.onnx")
pytestmark = pytest.mark.skipif(not HAS_INT8, reason="bundle has no encoder.int8.onnx")


def test_three_edge_agents_decode_like_offline(broker, speech, tmp_path):
    from test_cloud_e2e import SEG, RunningReceiver, stoi

    from gacflow.model import Codec

    codec = Codec.from_bundle()
    rx = RunningReceiver(codec, broker.url, tmp_path / "out", client_id="rx-edge")
    inputs, agents = {}, []
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        for i in range(3):
            dev = f"edge{i}"
            inputs[dev] = speech[i * SEG : (i + 1) * SEG]
            write_wav(tmp_path / f"{dev}.wav", inputs[dev])
            agents.append(subprocess.Popen(
                [sys.executable, "-m", "gacflow.edge.cli", "--broker", broker.url,
                 "--device-id", dev, "--input", str(tmp_path / f"{dev}.wav"),
                 "--backend", "onnx", "--batch-seconds", "1", "--no-dtx",
                 "--queue", str(tmp_path / f"{dev}.db")],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env))
        for a in agents:
            _, err = a.communicate(timeout=120)
            assert a.returncode == 0, err.decode()
        done = rx.wait_sessions(3, timeout=60)
        assert sorted(done) == sorted(inputs)
        for dev, wav in inputs.items():
            s, path = done[dev]
            got, _ = sf.read(path, dtype="float32")
            rows = rx.rx.archive.packets(dev, s.name)
            packets = [decode_packet(p, ENTROPY) for _, p in rows]
            ids = np.concatenate([p.tokens for p in packets])
            # the agent sends the bundle's voice code; the receiver's EQ reads it
            # (first in the packet that completes 2 s of audio: edge/packetizer.py)
            assert any(p.voice is not None for p in packets) == (codec.voice is not None)
            offline = codec.decode(Tokens(ids, "275", codec.codec_id))
            assert s.gaps == 0 and len(got) == len(ids) * 640
            assert abs(stoi(wav, got) - stoi(wav, offline)) < 0.02
    finally:
        for a in agents:
            if a.poll() is None:
                a.kill()
        rx.close()
