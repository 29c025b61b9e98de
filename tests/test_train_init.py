"""Where a run's weights start: only the encoder, or another model's decoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gacflow.train.cli import main as train_cli  # noqa: E402

TOP = ("batch = 2\nsegment_frames = 8\nvalid_every = 1\ncheckpoint_every = 1\nwarmup = 1\n"
       "threads = 1\nlr = 0.0\n")  # lr 0: what a run starts from is what it saves
ENCODER = "[encoder]\ndim = 16\nhidden = 16\ndilations = [1, 2]\n"


def _corpus(tmp_path: Path, speech: np.ndarray) -> Path:
    import soundfile as sf

    from gacflow.train.corpus import build, folder_sources

    for spk in ("a", "b"):
        (tmp_path / "wavs" / spk).mkdir(parents=True)
        sf.write(tmp_path / "wavs" / spk / "x.wav", speech[: 5 * 16000], 16000)
    sources = folder_sources(tmp_path / "wavs")
    build(tmp_path / "corpus", {"train": sources, "valid": sources})
    return tmp_path / "corpus"


def _fit(tmp_path: Path, corpus: Path, name: str, top: str, width: int = 16) -> dict:
    cfg = tmp_path / f"{name}.toml"
    cfg.write_text(f'name = "{name}"\nsteps = 1\n{top}{TOP}{ENCODER}'
                   f"[decoder]\ndim = {width}\nblocks_low = 1\nblocks_high = 1\n")
    run = tmp_path / name
    assert train_cli(["fit", "--config", str(cfg), "--run", str(run), "--data", str(corpus)]) == 0
    return torch.load(run / "ckpt.pt", weights_only=False)["model"]


def test_init_only_and_init_decoder_from_pick_the_parts(tmp_path: Path,
                                                        speech: np.ndarray) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    corpus = _corpus(tmp_path, speech)
    a = _fit(tmp_path, corpus, "a", "seed = 1\n")
    b = _fit(tmp_path, corpus, "b", "seed = 2\n")
    a_ck, b_ck = tmp_path / "a" / "ckpt.pt", tmp_path / "b" / "ckpt.pt"
    assert not torch.equal(a["decoder.inp.weight"], b["decoder.inp.weight"])
    # a wider decoder on a's encoder: the encoder comes over, the decoder starts fresh
    w = _fit(tmp_path, corpus, "w", f'init_from = "{a_ck}"\ninit_only = ["encoder."]\n', 24)
    assert all(torch.equal(w[k], a[k]) for k in a if k.startswith("encoder."))
    assert w["decoder.inp.weight"].shape[0] == 24
    # a's encoder with b's decoder
    m = _fit(tmp_path, corpus, "m", f'init_from = "{a_ck}"\ninit_decoder_from = "{b_ck}"\n')
    assert all(torch.equal(m[k], a[k]) for k in a if k.startswith("encoder."))
    assert all(torch.equal(m[k], b[k]) for k in b if k.startswith("decoder."))
