"""The training loop: random crops, reconstruction losses, resumable checkpoints, logs."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from gacflow.model.codec import config_dict
from gacflow.model.decoder import DecoderConfig
from gacflow.model.encoder import EncoderConfig
from gacflow.spec import FRAME_SAMPLES, TokenLayout

from .config import TrainConfig
from .losses import mel_l1, multi_resolution_stft
from .model import CodecModel, load_checkpoint, save_checkpoint


class CropSampler:
    """Random fixed-length crops from an int16 shard, with gain/polarity augmentation."""

    def __init__(self, shard: Path, frames: int, seed: int) -> None:
        self.audio = np.load(shard, mmap_mode="r")
        self.n = frames * FRAME_SAMPLES
        if len(self.audio) <= self.n:
            raise ValueError(f"{shard}: too little audio for {frames}-frame crops")
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int, augment: bool = True) -> torch.Tensor:
        starts = self.rng.integers(0, len(self.audio) - self.n, size)
        x = np.stack([self.audio[s : s + self.n] for s in starts]).astype(np.float32) / 32768.0
        if augment:
            gain_db = self.rng.uniform(-12.0, 4.0, (size, 1))
            sign = self.rng.choice([-1.0, 1.0], (size, 1))
            x = np.clip(x * (10 ** (gain_db / 20)) * sign, -1, 1)
        return torch.from_numpy(x.astype(np.float32))


def mel_stats(sampler: CropSampler, model: CodecModel) -> None:
    """Set the encoder's per-bin mel normalisation from training audio."""
    with torch.no_grad():
        mel = model.mel(sampler.batch(64, augment=False))
        model.encoder.mel_mean.copy_(mel.mean(dim=(0, 1)))
        model.encoder.mel_std.copy_(mel.std(dim=(0, 1)).clamp(min=0.1))


def build_model(cfg: TrainConfig) -> CodecModel:
    enc = EncoderConfig(**{k: tuple(v) if isinstance(v, list) else v
                           for k, v in cfg.encoder.items()})
    return CodecModel(enc, DecoderConfig(**cfg.decoder), TokenLayout())


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(cfg: TrainConfig, run_dir: Path) -> Path:
    """Train (or resume) into run_dir; returns the checkpoint path."""
    from tqdm import tqdm

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "ckpt.pt"
    data = Path(cfg.data)
    sampler = CropSampler(data / "train.npy", cfg.segment_frames, cfg.seed)
    valid = CropSampler(data / "valid.npy", cfg.segment_frames, 1234).batch(16, augment=False)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.8, 0.99), weight_decay=0.01)
    step = 0
    if ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step = ck["step"]
        sampler.rng = np.random.default_rng(cfg.seed + step)
    else:
        mel_stats(sampler, model)
    (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    log = open(run_dir / "log.jsonl", "a")
    rng = np.random.default_rng(cfg.seed + 7 + step)
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.name}", unit="step")
    t0 = time.time()
    while step < cfg.steps:
        model.train()
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        wav = sampler.batch(cfg.batch)
        enh = torch.from_numpy((rng.random(cfg.batch) >= cfg.enh_drop).astype(np.float32))
        out = model(wav, enh)
        l_mel = mel_l1(model.mel, out, wav)
        l_stft = multi_resolution_stft(out, wav)
        loss = cfg.mel_weight * l_mel + cfg.stft_weight * l_stft
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(mel=f"{l_mel.item():.3f}", stft=f"{l_stft.item():.3f}")
        rec = {"step": step, "mel": l_mel.item(), "stft": l_stft.item(),
               "lr": lr_at(step, cfg), "elapsed": round(time.time() - t0, 1)}
        if step % cfg.valid_every == 0 or step == cfg.steps:
            rec.update(validate(model, valid))
        if step % 10 == 0 or "valid_mel_275" in rec:
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            save_checkpoint(ckpt_path, checkpoint_payload(model, opt, step, cfg))
    bar.close()
    return ckpt_path


@torch.no_grad()
def validate(model: CodecModel, wav: torch.Tensor) -> dict[str, float]:
    """Mel L1 on held-out speaker crops, for both operating points."""
    model.eval()
    out = {}
    for name, flag in (("275", 1.0), ("175", 0.0)):
        rec = model(wav, torch.full((len(wav),), flag))
        out[f"valid_mel_{name}"] = mel_l1(model.mel, rec, wav).item()
    return out


def checkpoint_payload(model: CodecModel, opt, step: int, cfg: TrainConfig) -> dict:
    return {
        "model": model.state_dict(),
        "opt": opt.state_dict(),
        "step": step,
        "config": asdict(cfg),
        "encoder_config": config_dict(model.encoder.cfg),
        "decoder_config": config_dict(model.decoder.cfg),
    }
