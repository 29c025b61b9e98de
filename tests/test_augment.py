"""Training augmentation: reproducible, right shapes, the promised SNR, bad names refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gacflow.errors import ConfigError  # noqa: E402
from gacflow.train import augment  # noqa: E402
from gacflow.train.config import TrainConfig  # noqa: E402
from gacflow.train.loop import CropSampler  # noqa: E402


def test_sampler_crops_are_reproducible_and_the_right_length(tmp_path: Path,
                                                             speech: np.ndarray) -> None:
    shard = tmp_path / "train.npy"
    np.save(shard, (speech * 32767).astype(np.int16))
    names = augment.check(["noise", "gain", "pitch", "speed", "reverb"])
    assert names == ("speed", "pitch", "reverb", "noise", "gain")
    a = CropSampler(shard, 10, seed=3, augment=names).batch(6)
    b = CropSampler(shard, 10, seed=3, augment=names).batch(6)
    assert a.shape == (6, 6400) and torch.equal(a, b)
    assert a.abs().max() <= 1.0 and torch.isfinite(a).all()
    plain = CropSampler(shard, 10, seed=3, augment=()).batch(6)
    assert not torch.equal(a, plain)


def test_noise_lands_in_the_snr_range_and_speed_moves_pitch() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 200 * t)[None].repeat(40, 0)
    noisy = augment.noise(tone, rng)
    changed = [i for i in range(40) if not np.allclose(noisy[i], tone[i])]
    assert 5 < len(changed) < 35  # about half the crops
    for i in changed:
        snr = 10 * np.log10(np.mean(tone[i] ** 2) / np.mean((noisy[i] - tone[i]) ** 2))
        assert 9.5 <= snr <= 40.5
    for seed in range(4):
        factor = np.random.default_rng(seed).uniform(*augment.SPEED_RANGE)
        moved = augment.speed(tone[:1].astype(np.float32), np.random.default_rng(seed), 8000)[0]
        peak_hz = np.argmax(np.abs(np.fft.rfft(moved))) * 16000 / 8000
        assert abs(peak_hz - 200 * factor) <= 2.0


@pytest.mark.parametrize("semitones", [-3.0, -1.0, 2.0, 3.0])
def test_pitch_shift_moves_a_tone_and_keeps_length_and_level(semitones: float) -> None:
    t = np.arange(25600) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    shifted = augment.shift_pitch(tone, semitones)
    assert shifted.shape == tone.shape
    middle = shifted[2000:-2000]
    peak_hz = np.argmax(np.abs(np.fft.rfft(middle * np.hanning(len(middle))))) * 16000 / len(
        middle)
    assert abs(peak_hz - 200 * 2 ** (semitones / 12)) <= 2.0
    rms = np.sqrt(np.mean(middle**2))
    assert 0.8 < rms / np.sqrt(np.mean(tone**2)) < 1.2


def test_pitch_augmentation_touches_about_half_the_crops() -> None:
    x = np.random.default_rng(1).uniform(-0.3, 0.3, (40, 6400)).astype(np.float32)
    out = augment.pitch(x, np.random.default_rng(5))
    changed = sum(not np.allclose(a, b) for a, b in zip(out, x, strict=True))
    assert out.shape == x.shape and 5 < changed < 35


def test_reverb_keeps_length_and_adds_a_tail() -> None:
    x = np.zeros((8, 8000), np.float32)
    x[:, 100] = 0.9
    wet = augment.reverb(x, np.random.default_rng(2))
    assert wet.shape == x.shape
    assert any(np.abs(row[2000:]).max() > 1e-4 for row in wet)


def test_eq_reshapes_the_long_term_spectrum_smoothly_within_its_range() -> None:
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((20, 16000)) * 0.05).astype(np.float32)
    out = augment.eq(x, np.random.default_rng(4))
    assert out.shape == x.shape
    changed = [i for i in range(len(x)) if not np.allclose(out[i], x[i])]
    assert 10 <= len(changed) < 20  # most crops, not all
    for i in changed:
        ratio_db = 10 * np.log10(np.abs(np.fft.rfft(out[i])) ** 2
                                 / (np.abs(np.fft.rfft(x[i])) ** 2 + 1e-20) + 1e-20)
        assert np.abs(ratio_db[1:]).max() <= augment.EQ_DB + 1e-6
        assert np.abs(np.diff(ratio_db[1:])).max() < 0.5  # smooth: no ripple between bins


def test_unknown_augmentation_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('augment = ["gain", "chorus"]\n')
    with pytest.raises(ConfigError, match="chorus"):
        TrainConfig.load(cfg)
    cfg.write_text('augment = ["noise", "speed"]\n')
    assert TrainConfig.load(cfg).augment == ("speed", "noise")


def test_every_shipped_training_config_loads() -> None:
    """The recipes under train/configs are documented commands: each must parse."""
    configs = sorted((Path(__file__).parents[1] / "train" / "configs").glob("*.toml"))
    assert len(configs) >= 5
    for path in configs:
        cfg = TrainConfig.load(path)
        assert cfg.steps > 0 and cfg.data, path.name
