"""The training recipe runs end to end on a folder of audio: corpus -> fit (GAN on) -> bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from gacflow.bundle import Bundle
from gacflow.model import Codec
from gacflow.train.cli import main as train_cli


def test_recipe_on_a_user_folder(tmp_path: Path, speech: np.ndarray) -> None:
    torch.set_num_threads(1)
    src = tmp_path / "wavs"
    for spk in ("a", "b"):
        (src / spk).mkdir(parents=True)
        sf.write(src / spk / "x.flac", speech[:8 * 16000], 16000)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        'name = "tiny"\nsteps = 3\nbatch = 2\nsegment_frames = 8\nvalid_every = 3\n'
        "checkpoint_every = 2\ngan_start = 1\nwarmup = 1\nthreads = 1\n"
        "[encoder]\ndim = 16\nhidden = 16\ndilations = [1, 2]\n"
        "[decoder]\ndim = 16\nblocks_low = 1\nblocks_high = 1\n"
    )
    corpus = tmp_path / "corpus"
    from gacflow.train.corpus import build, folder_sources

    sources = folder_sources(src)
    build(corpus, {"train": sources, "valid": sources})
    run = tmp_path / "run"
    assert train_cli(["fit", "--config", str(cfg), "--run", str(run), "--data", str(corpus)]) == 0
    ck = torch.load(run / "ckpt.pt", weights_only=False)
    assert ck["step"] == 3 and "disc" in ck
    log = (run / "log.jsonl").read_text()
    assert "valid_mel_275" in log and "adv" in log
    assert train_cli(["bundle", str(run / "ckpt.pt"), "--out", str(tmp_path / "b")]) == 0
    codec = Codec.from_bundle(Bundle.load(tmp_path / "b").root)
    out = codec.decode(codec.encode(speech[:16000], "175"))
    assert out.shape == (16000,) and np.isfinite(out).all()


def test_synthetic_english_has_audio_text_and_phonemes(tmp_path: Path) -> None:
    import shutil

    import pytest

    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not installed")
    from gacflow.audio import read_audio
    from gacflow.train.synth import build_synthetic

    m = build_synthetic(tmp_path, 2, seed=1)
    wavs = sorted(tmp_path.rglob("*.wav"))
    assert len(wavs) == 2 and len(m["items"]) == 2
    for w in wavs:
        assert len(read_audio(w)) > 16000 // 2
        assert w.with_suffix(".txt").read_text().strip()
        assert w.with_suffix(".phn").read_text().strip()
