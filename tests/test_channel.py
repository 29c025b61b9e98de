"""Device-channel augmentation: every link codec really runs, lengths hold, target stays clean."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gacflow.errors import ConfigError  # noqa: E402
from gacflow.train import channel  # noqa: E402
from gacflow.train.cli import main as train_cli  # noqa: E402
from gacflow.train.loop import CropSampler  # noqa: E402

NEEDS = {"gsm": "sox", "opus": "opusenc", "codec2": "c2enc"}


def _snr_db(ref: np.ndarray, out: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(ref**2) / np.mean((ref - out) ** 2)))


@pytest.mark.parametrize("name", sorted(channel.LINKS))
def test_each_link_codec_round_trips_speech(name: str, speech: np.ndarray) -> None:
    if name in NEEDS and not shutil.which(NEEDS[name]):
        pytest.skip(f"{NEEDS[name]} is not installed")
    row = speech[16000:16000 + 25600].astype(np.float32)
    out = channel.LINKS[name](row, np.random.default_rng(0))
    assert out.shape == row.shape and np.isfinite(out).all()
    assert not np.allclose(out, row)  # the link changed the signal
    # ... but it is still speech: the band under 3.4 kHz keeps most of its energy
    spec_in, spec_out = (np.abs(np.fft.rfft(x)) ** 2 for x in (row, out))
    band = np.fft.rfftfreq(len(row), 1 / 16000) < 3400
    assert spec_out[band].sum() > 0.2 * spec_in[band].sum()


def test_narrowband_links_remove_the_upper_band(speech: np.ndarray) -> None:
    row = speech[16000:16000 + 25600].astype(np.float32)
    hz = np.fft.rfftfreq(len(row), 1 / 16000)
    for name in ("telephone", "g711"):
        out = channel.LINKS[name](row, np.random.default_rng(1))
        spec = np.abs(np.fft.rfft(out)) ** 2
        assert spec[hz > 4500].sum() < 0.01 * spec.sum(), name


def test_noise_lands_between_5_and_30_db(speech: np.ndarray) -> None:
    row = speech[16000:32000].astype(np.float32)
    others = np.stack([speech[40000:56000], speech[60000:76000]]).astype(np.float32)
    for seed in range(12):
        out = channel.noise(row, np.random.default_rng(seed), others)
        assert 4.5 < _snr_db(row, out) < 30.5


def test_channel_batch_is_reproducible_and_spares_some_crops(speech: np.ndarray) -> None:
    x = np.stack([speech[i * 8000: i * 8000 + 12800] for i in range(12)]).astype(np.float32)
    a = channel.through_channel(x, np.random.default_rng(5), 0.5)
    b = channel.through_channel(x, np.random.default_rng(5), 0.5)
    assert np.array_equal(a, b) and a.shape == x.shape and np.abs(a).max() <= 1.0
    touched = [i for i in range(len(x)) if not np.allclose(a[i], x[i])]
    assert 0 < len(touched) < len(x)


def test_sampler_pairs_a_heard_input_with_a_clean_target(tmp_path: Path,
                                                         speech: np.ndarray) -> None:
    shard = tmp_path / "train.npy"
    np.save(shard, (speech * 32767).astype(np.int16))
    pair = CropSampler(shard, 10, seed=2, augment=("gain",), channel=1.0).pair(4)
    clean = CropSampler(shard, 10, seed=2, augment=("gain",)).batch(4)
    assert pair.shape == (2, 4, 6400)
    assert torch.equal(pair[1], clean)  # the target is the crop before the channel
    assert not torch.equal(pair[0], pair[1])
    plain = CropSampler(shard, 10, seed=2, augment=("gain",)).pair(4)
    assert torch.equal(plain[0], plain[1])  # no channel: input is the target


def test_a_missing_channel_tool_is_one_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(channel.shutil, "which", lambda tool: None)
    with pytest.raises(ConfigError, match="sox"):
        channel.check_tools()


def test_training_in_chunks_resumes_where_it_stopped(tmp_path: Path,
                                                    speech: np.ndarray) -> None:
    """`--chunk-minutes` stops without touching the schedule; rerunning goes on."""
    import json

    from gacflow.train.corpus import build, folder_sources

    torch.set_num_threads(1)
    src = tmp_path / "wavs"
    for spk in ("a", "b"):
        (src / spk).mkdir(parents=True)
        import soundfile as sf

        sf.write(src / spk / "x.wav", speech[: 6 * 16000], 16000)
    sources = folder_sources(src)
    build(tmp_path / "corpus", {"train": sources, "valid": sources})
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        'name = "tiny"\nsteps = 4\nbatch = 2\nsegment_frames = 8\nvalid_every = 2\n'
        "checkpoint_every = 1\nwarmup = 1\nthreads = 1\nchannel = 0.5\n"
        "[encoder]\ndim = 16\nhidden = 16\ndilations = [1, 2]\n"
        "[decoder]\ndim = 16\nblocks_low = 1\nblocks_high = 1\n")
    run = tmp_path / "run"
    args = ["fit", "--config", str(cfg), "--run", str(run), "--data", str(tmp_path / "corpus")]
    assert train_cli([*args, "--chunk-minutes", "0.0001"]) == 0
    first = torch.load(run / "ckpt.pt", weights_only=False)["step"]
    assert 1 <= first < 4
    assert train_cli(args) == 0
    assert torch.load(run / "ckpt.pt", weights_only=False)["step"] == 4
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps[-1] == 4
