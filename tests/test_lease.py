"""Tooling for training on a rented GPU: compact corpora, speaker subsets, time-boxed runs,
slim checkpoints to bring back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from gacflow.bundle import Bundle
from gacflow.errors import ConfigError
from gacflow.model import Codec
from gacflow.train.cli import main as train_cli

TINY = ('batch = 2\nsegment_frames = 8\nwarmup = 1\nthreads = 1\n'
        '[encoder]\ndim = 16\nhidden = 16\ndilations = [1, 2]\n'
        '[decoder]\ndim = 16\nblocks_low = 1\nblocks_high = 1\n')


@pytest.fixture
def corpus(tmp_path: Path, speech: np.ndarray) -> Path:
    """Speaker `voice` speaks; speaker `hush` is near-silent (so crops show their origin)."""
    from gacflow.train.corpus import build, folder_sources

    src = tmp_path / "wavs"
    for spk in ("hush", "voice"):
        (src / spk).mkdir(parents=True)
    for k in range(3):
        sf.write(src / "voice" / f"{k}.wav", speech[k * 16000 : k * 16000 + 40000], 16000)
        sf.write(src / "hush" / f"{k}.wav", speech[:40000] * 1e-3, 16000)
    out = tmp_path / "corpus"
    build(out, {"train": folder_sources(src), "valid": folder_sources(src / "voice")})
    return out


def test_a_packed_corpus_is_small_and_decodes_back_to_aligned_shards(tmp_path: Path,
                                                                     corpus: Path) -> None:
    from gacflow.train.compact import unpack_if_needed

    packed = tmp_path / "packed"
    assert train_cli(["pack", "--data", str(corpus), "--out", str(packed)]) == 0
    assert not list(packed.glob("*.npy"))
    ogg = sum(f.stat().st_size for f in packed.glob("*.ogg"))
    raw = sum((corpus / f"{s}.npy").stat().st_size for s in ("train", "valid"))
    assert ogg < raw / 5
    unpack_if_needed(packed)
    for split in ("train", "valid"):
        a = np.load(corpus / f"{split}.npy").astype(float)
        b = np.load(packed / f"{split}.npy").astype(float)
        assert len(a) == len(b)  # corpus.json offsets (phoneme utterances) still hold
        snr = 10 * np.log10((a**2).sum() / ((a - b) ** 2).sum())
        assert snr > 10  # same samples, not shifted: a lag would leave ~0 dB
    assert (packed / "corpus.json").read_text() == (corpus / "corpus.json").read_text()
    from gacflow.train.compact import pack

    with pytest.raises(ConfigError, match="corpus.json"):
        pack(tmp_path / "nowhere", tmp_path / "x")
    with pytest.raises(ConfigError, match="test.npy"):
        pack(corpus, tmp_path / "y", splits=("test",))
    empty = tmp_path / "empty"  # a split with no audio packs and unpacks as an empty shard
    empty.mkdir()
    (empty / "corpus.json").write_text("{}")
    np.save(empty / "valid.npy", np.zeros(0, np.int16))
    pack(empty, tmp_path / "packed-empty", splits=("valid",))
    unpack_if_needed(tmp_path / "packed-empty")
    assert len(np.load(tmp_path / "packed-empty" / "valid.npy")) == 0


def test_crops_come_only_from_the_named_speakers(corpus: Path) -> None:
    from gacflow.train.loop import CropSampler

    loud = CropSampler(corpus / "train.npy", 8, 0, (), ("voice",)).batch(64, augment=False)
    assert loud.abs().amax(dim=1).min() > 0.01
    everyone = CropSampler(corpus / "train.npy", 8, 0, ()).batch(64, augment=False)
    assert everyone.abs().amax(dim=1).min() < 0.01
    with pytest.raises(ConfigError, match="nobody"):
        CropSampler(corpus / "train.npy", 8, 0, (), ("nobody",))


def test_a_time_boxed_run_stops_on_time_at_the_low_rate_with_a_checkpoint(
        tmp_path: Path, corpus: Path) -> None:
    """max_minutes ends the run early (the step count is only a ceiling), with a validated
    checkpoint; batches come from a worker process; the schedule reaches its floor."""
    from gacflow.train.config import TrainConfig
    from gacflow.train.loop import lr_at

    cfg = tmp_path / "boxed.toml"
    cfg.write_text('steps = 100000\nloader_workers = 1\nvalid_every = 100000\n'
                   'checkpoint_every = 100000\nspeakers = ["voice"]\n' + TINY)
    run = tmp_path / "run"
    assert train_cli(["fit", "--config", str(cfg), "--run", str(run), "--data", str(corpus),
                      "--max-minutes", "0.002"]) == 0
    ck = torch.load(run / "ckpt.pt", weights_only=False)
    assert 1 <= ck["step"] < 100000
    last = json.loads((run / "log.jsonl").read_text().splitlines()[-1])
    assert last["step"] == ck["step"] and "valid_mel_275" in last
    boxed = TrainConfig.load(cfg, max_minutes=1.0)
    assert lr_at(5000, boxed, 0.0) > 0.99 * boxed.lr
    assert lr_at(5000, boxed, 30.0) < lr_at(5000, boxed, 0.0)
    assert lr_at(5000, boxed, 60.0) == pytest.approx(0.1 * boxed.lr)


def test_a_slim_checkpoint_drops_training_state_and_still_makes_a_bundle(
        tmp_path: Path, corpus: Path, speech: np.ndarray) -> None:
    cfg = tmp_path / "gan.toml"
    cfg.write_text("steps = 2\ngan_start = 0\nvalid_every = 2\npitch_weight = 0.5\n" + TINY)
    run = tmp_path / "run"
    assert train_cli(["fit", "--config", str(cfg), "--run", str(run),
                      "--data", str(corpus)]) == 0
    slim = tmp_path / "slim.pt"
    assert train_cli(["slim", str(run / "ckpt.pt"), "--out", str(slim)]) == 0
    full, ck = (torch.load(p, weights_only=False) for p in (run / "ckpt.pt", slim))
    assert {"opt", "disc", "opt_d"} <= set(full) and not {"opt", "disc", "opt_d"} & set(ck)
    assert not any(k.startswith("pitch_head.") for k in ck["model"])
    assert all(v.dtype == torch.float16 for k, v in ck["model"].items()
               if k.startswith("decoder.") and v.is_floating_point())
    assert all(torch.equal(v, full["model"][k]) for k, v in ck["model"].items()
               if k.startswith("encoder."))  # the codec id hashes these: kept exact
    assert train_cli(["bundle", str(slim), "--out", str(tmp_path / "b")]) == 0
    codec = Codec.from_bundle(Bundle.load(tmp_path / "b").root)
    assert np.isfinite(codec.decode(codec.encode(speech[:16000], "275"))).all()
    dec = tmp_path / "dec.pt"
    assert train_cli(["slim", str(run / "ckpt.pt"), "--out", str(dec), "--decoder-only"]) == 0
    assert not any(k.startswith("encoder.")
                   for k in torch.load(dec, weights_only=False)["model"])
    critics = tmp_path / "critics.pt"  # the adversarial stage can go on with its critics
    assert train_cli(["slim", str(run / "ckpt.pt"), "--out", str(critics), "--decoder-only",
                      "--discriminators"]) == 0
    kept = torch.load(critics, weights_only=False)
    assert "opt_d" not in kept and kept["disc"].keys() == full["disc"].keys()
    assert all(v.dtype == torch.float16 for v in kept["disc"].values() if v.is_floating_point())


def test_the_lease_script_runs_both_stages_and_leaves_slim_weights(tmp_path: Path,
                                                                   corpus: Path) -> None:
    """train/gpu_lease.sh end to end on CPU with tiny configs: stage 1, its large decoder
    grown from it, slim weights and one log archive in $OUT; a broken config -> exit 1."""
    import os
    import subprocess
    import sys
    import tarfile

    root = Path(__file__).resolve().parents[1]
    configs, runs, out = tmp_path / "configs", tmp_path / "runs", tmp_path / "out"
    configs.mkdir()
    (configs / "tiny.toml").write_text(f'data = "{corpus}"\nsteps = 2\nvalid_every = 2\n' + TINY)
    (configs / "tiny_large.toml").write_text(
        f'data = "{corpus}"\nsteps = 2\nvalid_every = 2\ninit_from = "{runs}/tiny/ckpt.pt"\n'
        "freeze_encoder = true\ngan_start = 0\n" + TINY.replace("blocks_high = 1",
                                                                "blocks_high = 2"))
    env = {**os.environ, "CONFIGS": str(configs), "RUNS": str(runs), "OUT": str(out),
           "PYTHON": sys.executable, "WHEELS": str(tmp_path / "none")}
    script = root / "train" / "gpu_lease.sh"
    done = subprocess.run(["bash", str(script), "tiny"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.iterdir()} == {"tiny.pt", "tiny_large.pt", "logs.tar.gz"}
    large = torch.load(out / "tiny_large.pt", weights_only=False)
    assert large["decoder_config"]["blocks_high"] == 2
    assert not any(k.startswith("encoder.") for k in large["model"]) and "disc" in large
    with tarfile.open(out / "logs.tar.gz") as tar:
        assert {"tiny.log", "tiny_large.jsonl"} <= set(tar.getnames())
    (configs / "tiny_large.toml").write_text('init_from = "/nowhere.pt"\n' + TINY)
    failed = subprocess.run(["bash", str(script), "tiny"], cwd=root,
                            env={**env, "OUT": str(tmp_path / "out2"),
                                 "RUNS": str(tmp_path / "runs2")},
                            capture_output=True, text=True, timeout=600)
    assert failed.returncode == 1 and "tiny incomplete" in failed.stderr
