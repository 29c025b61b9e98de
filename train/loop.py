"""The training loop: random crops, reconstruction losses, resumable checkpoints, logs."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from gacflow.errors import ConfigError
from gacflow.model.checkpoint import save_checkpoint
from gacflow.model.codec import config_dict
from gacflow.model.decoder import DecoderConfig
from gacflow.model.encoder import EncoderConfig
from gacflow.spec import FRAME_SAMPLES, TokenLayout
from gacflow.voice import VoiceSpec

from .augment import apply as apply_augment
from .augment import raw_length
from .channel import check_tools as check_channel_tools
from .channel import through_channel
from .compact import unpack_if_needed
from .config import TrainConfig
from .ctc import PhonemeHead, PhonemeSampler, ctc
from .losses import mel_l1, multi_resolution_stft, rounding_margin
from .model import CodecModel, init_state, load_checkpoint, load_grown
from .pitch import PitchHead, cents_error, f0_targets, pitch_loss
from .qat import consistency_loss as qat_consistency
from .qat import enable as enable_qat
from .qat import set_active as qat_active
from .recognizer import IntelligibilityLoss
from .voice import batch_voice, load_spec


class CropSampler:
    """Random fixed-length crops from an int16 shard, augmented as the config says."""

    def __init__(self, shard: Path, frames: int, seed: int,
                 augment: tuple[str, ...] = ("gain",), speakers: tuple[str, ...] = (),
                 channel: float = 0.0) -> None:
        self.audio = np.load(shard, mmap_mode="r")
        self.channel = channel
        self.n = frames * FRAME_SAMPLES
        self.augment = augment
        self.raw = raw_length(augment, self.n)
        self.spans = speaker_spans(shard, speakers, self.raw) if speakers else None
        if self.spans is None and len(self.audio) <= self.raw:
            raise ValueError(f"{shard}: too little audio for {frames}-frame crops")
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int, augment: bool = True) -> torch.Tensor:
        length = self.raw if augment else self.n
        if self.spans is None:
            starts = self.rng.integers(0, len(self.audio) - length, size)
        else:  # uniform over the chosen speakers' audio
            first, last = self.spans
            pick = self.rng.integers(0, len(first), size)
            starts = first[pick] + (self.rng.random(size) * (last[pick] - first[pick])).astype(int)
        x = np.stack([self.audio[s : s + length] for s in starts]).astype(np.float32) / 32768.0
        if augment:
            x = apply_augment(x, self.augment, self.rng, self.n)
        return torch.from_numpy(x.astype(np.float32))

    def pair(self, size: int) -> torch.Tensor:
        """[2, B, N]: the encoder's input (through a device channel) and the clean target."""
        target = self.batch(size)
        if self.channel <= 0:
            return torch.stack([target, target])
        heard = through_channel(target.numpy(), self.rng, self.channel)
        return torch.stack([torch.from_numpy(heard), target])


def speaker_spans(shard: Path, speakers: tuple[str, ...],
                  length: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last crop start of every file of the named speakers (corpus.json), so a
    run can train on part of a corpus without a new shard."""
    files = json.loads((shard.parent / "corpus.json").read_text())["splits"][shard.stem]["files"]
    spans = [(f["offset"], f["offset"] + f["samples"] - length) for f in files
             if f["speaker"] in speakers and f["samples"] > length]
    if not spans:
        raise ConfigError(f"{shard.parent}: no {shard.stem} files of speakers {list(speakers)} "
                          "long enough for a crop")
    first, last = (np.array(x, dtype=np.int64) for x in zip(*spans, strict=True))
    return first, last


class CropStream(torch.utils.data.IterableDataset):
    """Endless augmented batches from worker processes, so a GPU step never waits for the
    NumPy augmentation (speed, pitch, reverb) of the next batch."""

    def __init__(self, sampler: CropSampler, size: int, seed: int) -> None:
        self.sampler, self.size, self.seed = sampler, size, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        self.sampler.rng = np.random.default_rng([self.seed, info.id if info else 0])
        while True:
            yield self.sampler.pair(self.size)


def batches(sampler: CropSampler, cfg: TrainConfig, step: int):
    """Training batches: drawn in this process, or by `loader_workers` processes."""
    if cfg.loader_workers <= 0:
        while True:
            yield sampler.pair(cfg.batch)
    loader = torch.utils.data.DataLoader(
        CropStream(sampler, cfg.batch, cfg.seed + step), batch_size=None,
        num_workers=cfg.loader_workers, prefetch_factor=4, persistent_workers=True)
    yield from loader


def mel_stats(sampler: CropSampler, model: CodecModel) -> None:
    """Set the encoder's per-bin mel normalisation from training audio."""
    with torch.no_grad():
        mel = model.mel(sampler.batch(64, augment=False))
        model.encoder.mel_mean.copy_(mel.mean(dim=(0, 1)))
        model.encoder.mel_std.copy_(mel.std(dim=(0, 1)).clamp(min=0.1))


def build_model(cfg: TrainConfig) -> CodecModel:
    layout = TokenLayout(enh_levels=tuple(cfg.enh_levels))
    enc = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.encoder.items()}
    enc["latent_dims"] = len(layout.all_levels)
    return CodecModel(EncoderConfig(**enc), DecoderConfig(**cfg.decoder), layout)


def lr_at(step: int, cfg: TrainConfig, elapsed: float = 0.0) -> float:
    """Warm-up, then cosine decay to 10 % over the steps, or over `max_minutes` of wall
    time when that ends first (a time-boxed GPU lease still ends at the low rate)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    if cfg.max_minutes > 0:
        progress = max(progress, min(1.0, elapsed / (60 * cfg.max_minutes)))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def train(cfg: TrainConfig, run_dir: Path) -> Path:
    """Train (or resume) into run_dir; returns the checkpoint path."""
    from tqdm import tqdm

    from .discriminators import Discriminators, discriminator_loss, generator_losses

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / "ckpt.pt"
    data = Path(cfg.data)
    unpack_if_needed(data)
    if cfg.intel_data:
        unpack_if_needed(Path(cfg.intel_data))
    if cfg.channel > 0:
        check_channel_tools()
    sampler = CropSampler(data / "train.npy", cfg.segment_frames, cfg.seed, cfg.augment,
                          tuple(cfg.speakers), cfg.channel)
    valid = CropSampler(data / "valid.npy", cfg.segment_frames, 1234).batch(16, augment=False)
    model = build_model(cfg)
    voice = voice_spec(cfg, model)
    valid_voice = None if voice is None else batch_voice(valid, voice, 0.0, rng_valid())
    phonemes = phoneme_sampler(cfg, data, model)
    valid_phonemes = None  # held-out utterances with phonemes (corpus --valid-extra)
    if phonemes is not None and len(held := PhonemeSampler(data, "valid", 1234)):
        valid_phonemes = held
    if cfg.pitch_weight > 0:
        model.pitch_head = PitchHead(len(model.layout.all_levels))
    intel = intelligibility(cfg, data)
    disc = Discriminators() if cfg.gan_start >= 0 else None
    step = 0
    kept_digits = None  # digits of a grown token that must not change (frozen encoder)
    if ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        kept_digits = ck.get("kept_digits")
    elif cfg.init_from:
        origin = Path(cfg.init_from)
        start = load_checkpoint(origin) if origin.is_file() else None  # read once
        init = start["model"] if start else init_state(origin, cfg.init_decoder)
        if cfg.init_only:
            init = {k: v for k, v in init.items() if k.startswith(tuple(cfg.init_only))}
        if cfg.init_decoder_from:  # the decoder (and its critics) from elsewhere
            dec_origin = Path(cfg.init_decoder_from)
            dec_start = load_checkpoint(dec_origin) if dec_origin.is_file() else None
            other = dec_start["model"] if dec_start else init_state(dec_origin,
                                                                    cfg.init_decoder)
            init = {**{k: v for k, v in init.items() if not k.startswith("decoder.")},
                    **{k: v for k, v in other.items() if k.startswith("decoder.")}}
            start = dec_start if dec_start and "disc" in dec_start else start
        fresh = load_grown(model, init)
        if fresh:
            print(f"grown from {cfg.init_from}: {len(fresh)} new tensors start as identity")
        kept_digits = grown_digits(model, init)
        ck = None
        if disc is not None and cfg.init_critics_from:  # critics kept in their own file
            start = load_checkpoint(Path(cfg.init_critics_from))
        if disc is not None and start and "disc" in start:  # its discriminators, if any
            disc.load_state_dict(start["disc"])
    else:
        ck = None
        mel_stats(sampler, model)
    if ck is not None:
        model.load_state_dict(ck["model"])
        step = ck["step"]
        if disc is not None and "disc" in ck:
            disc.load_state_dict(ck["disc"])
    keep = None
    if cfg.freeze_encoder:
        model.encoder.requires_grad_(False)
        if kept_digits:  # the new digits' head rows learn; the old rows stay bit-exact
            model.encoder.head.requires_grad_(True)
            keep = KeptRows(model.encoder.head, kept_digits)
    if cfg.train_only:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith(tuple(cfg.train_only)))
    quantizers = enable_qat(model.encoder) if cfg.qat else torch.nn.ModuleList()
    qat_active(quantizers, not cfg.qat_consistency)  # consistency: tokens from float path
    if quantizers and ck is not None and "qat" in ck:  # resume with the learned ranges
        quantizers.load_state_dict(ck["qat"])
    model.to(device)
    quantizers.to(device)
    if intel is not None:
        intel.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(param_groups(model, cfg, kept_digits), lr=cfg.lr,
                            betas=(0.8, 0.99), weight_decay=0.01)
    opt_d = None
    if disc is not None:
        disc.to(device)
        opt_d = torch.optim.AdamW(disc.parameters(), lr=cfg.disc_lr, betas=(0.8, 0.99))
    if ck is not None and "opt" in ck:
        opt.load_state_dict(ck["opt"])
        if opt_d is not None and "opt_d" in ck:
            opt_d.load_state_dict(ck["opt_d"])
    sampler.rng = np.random.default_rng(cfg.seed + step)
    if intel is not None:  # a resumed run draws new utterances, not the first ones again
        intel.train.rng = np.random.default_rng(cfg.seed + 13 + step)
    (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=1))
    log = open(run_dir / "log.jsonl", "a")
    rng = np.random.default_rng(cfg.seed + 7 + step)
    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {cfg.name}", unit="step")
    t0 = time.time()
    stream = batches(sampler, cfg, step)
    while step < cfg.steps:
        model.train()
        quantizers.train()
        elapsed = time.time() - t0
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg, elapsed) * g.get("lr_scale", 1.0)
        heard, wav = next(stream).to(device, non_blocking=True)  # input, clean target
        enh = torch.from_numpy((rng.random(cfg.batch) >= cfg.enh_drop).astype(np.float32))
        cond = None if voice is None else batch_voice(wav, voice, cfg.voice_drop, rng)
        with amp:
            codes, latents = model.codes_and_latents(heard)
            out = model.decode(codes, enh.to(device), cond).float()
        l_mel = mel_l1(model.mel, out, wav)
        l_stft = multi_resolution_stft(out, wav)
        loss = cfg.mel_weight * l_mel + cfg.stft_weight * l_stft
        rec = {"step": step + 1, "mel": l_mel.item(), "stft": l_stft.item()}
        if quantizers and cfg.qat_consistency > 0:
            l_cons = qat_consistency(model.encoder, model.mel(heard), latents, quantizers, amp)
            loss = loss + cfg.qat_consistency * l_cons
            rec["qat_consistency"] = l_cons.item()
        if cfg.margin_weight > 0:
            l_margin = rounding_margin(latents, cfg.margin)
            loss = loss + cfg.margin_weight * l_margin
            rec["margin"] = l_margin.item()
        if phonemes is not None:
            l_ctc = ctc_step(model, phonemes, cfg.ctc_batch, device, amp)
            loss = loss + cfg.ctc_weight * l_ctc
            rec["ctc"] = l_ctc.item()
        if cfg.pitch_weight > 0:
            with amp:
                guess = model.pitch_head(codes)
            l_pitch = pitch_loss(guess, *f0_targets(wav))
            loss = loss + cfg.pitch_weight * l_pitch
            rec["pitch"] = l_pitch.item()
        if intel is not None:
            l_int, l_int_mel = intel(model, cfg.intel_batch, device, amp)
            loss = loss + cfg.intel_weight * l_int + cfg.intel_mel_weight * l_int_mel
            rec.update(intel_ctc=l_int.item(), intel_mel=l_int_mel.item())
        gan = disc is not None and step >= cfg.gan_start
        if gan:
            real, fake = gan_window(wav, out, cfg.gan_crop_frames, rng)
            with amp:
                l_d = discriminator_loss(disc(real), disc(fake.detach()))
            opt_d.zero_grad(set_to_none=True)
            l_d.backward()
            opt_d.step()
            with amp:
                adv, fm = generator_losses(disc(real), disc(fake))
            loss = loss + cfg.adv_weight * adv + cfg.fm_weight * fm
            rec.update(disc=l_d.item(), adv=adv.item(), fm=fm.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if keep is not None:
            keep.restore()
        step += 1
        bar.update(1)
        bar.set_postfix(mel=f"{l_mel.item():.3f}", stft=f"{l_stft.item():.3f}")
        elapsed = time.time() - t0
        rec.update(lr=lr_at(step, cfg, elapsed), elapsed=round(elapsed, 1))
        last = (step == cfg.steps or (cfg.max_minutes > 0 and elapsed >= 60 * cfg.max_minutes)
                or (cfg.chunk_minutes > 0 and elapsed >= 60 * cfg.chunk_minutes))
        if step % cfg.valid_every == 0 or last:
            quantizers.eval()  # validate through the running ranges
            rec.update(validate(model, valid.to(device),
                                None if valid_voice is None else valid_voice.to(device)))
            if valid_phonemes is not None:
                valid_phonemes.rng = np.random.default_rng(1234)  # same utterances each time
                with torch.no_grad():
                    rec["valid_ctc"] = ctc_step(model.eval(), valid_phonemes, 8, device,
                                                amp).item()
            if cfg.pitch_weight > 0:
                with torch.no_grad():
                    guess = model.pitch_head(model.codes(valid.to(device))).float()
                rec["valid_pitch_cents"] = cents_error(guess, *f0_targets(valid.to(device)))
            if intel is not None:
                rec.update(intel.validate(model, device, amp))
        if step % 10 == 0 or "valid_mel_275" in rec:
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if step % cfg.checkpoint_every == 0 or last:
            payload = checkpoint_payload(model, opt, step, cfg, disc, opt_d, voice)
            if quantizers:  # the fake-INT8 ranges are training state, not weights
                payload["qat"] = {k: v.cpu() for k, v in quantizers.state_dict().items()}
            if kept_digits:
                payload["kept_digits"] = kept_digits
            save_checkpoint(ckpt_path, payload)
        if last:
            break
    bar.close()
    return ckpt_path


GROWN_LAYERS = ("encoder.head.", "decoder.inp.")  # where a grown token's new digits enter


def param_groups(model: CodecModel, cfg: TrainConfig, kept_digits: int | None) -> list[dict]:
    """Trainable parameters; with a grown token, the layers its new digits pass through
    learn `grown_lr_scale` times faster (they start from zero, everything else is trained)."""
    scale = cfg.grown_lr_scale if kept_digits else 1.0
    grown = [p for n, p in model.named_parameters() if p.requires_grad and
             n.startswith(GROWN_LAYERS)] if scale != 1.0 else []
    ids = {id(p) for p in grown}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    groups = [{"params": rest, "lr_scale": 1.0}]
    if grown:
        groups.append({"params": grown, "lr_scale": scale})
    return groups


class KeptRows:
    """Holds the first rows of a layer at their loaded values through optimizer steps (weight
    decay included), so the digits a grown token already had keep their exact tokens."""

    def __init__(self, layer: torch.nn.Module, rows: int) -> None:
        self.layer, self.rows = layer, rows
        self.saved = [p.detach()[:rows].clone() for p in layer.parameters()]

    def restore(self) -> None:
        with torch.no_grad():
            for p, saved in zip(self.layer.parameters(), self.saved, strict=True):
                p[: self.rows] = saved.to(p.device)


def grown_digits(model: CodecModel, state: dict[str, torch.Tensor]) -> int | None:
    """How many token digits the starting weights had, when the config adds digits."""
    had = state["encoder.head.weight"].shape[0]
    return had if had < model.encoder.head.weight.shape[0] else None


def rng_valid() -> np.random.Generator:
    return np.random.default_rng(1234)


def voice_spec(cfg: TrainConfig, model: CodecModel) -> VoiceSpec | None:
    """The fixed voice basis when the decoder is conditioned on voice codes."""
    dims = model.decoder.cfg.voice_dims
    if not dims and not cfg.voice:
        return None
    if not cfg.voice:
        raise ConfigError("decoder.voice_dims is set but no `voice` basis file is given "
                          "(make one with `gacflow-train voice-fit`)")
    spec = load_spec(cfg.voice)
    if spec.dims != dims:
        raise ConfigError(f"voice basis {cfg.voice} has {spec.dims} components, "
                          f"decoder.voice_dims is {dims}")
    return spec


def phoneme_sampler(cfg: TrainConfig, data: Path, model: CodecModel) -> PhonemeSampler | None:
    """The CTC data and head when the config asks for the semantic auxiliary."""
    if cfg.ctc_weight <= 0:
        return None
    sampler = PhonemeSampler(data, "train", cfg.seed + 11)
    if not len(sampler):
        raise ConfigError(f"ctc_weight is set but {data}/corpus.json lists no training files "
                          "with phonemes: add a `gacflow-train synth` folder with --extra")
    model.ctc_head = PhonemeHead(len(model.layout.all_levels))
    return sampler


def intelligibility(cfg: TrainConfig, data: Path) -> IntelligibilityLoss | None:
    """The recogniser loss on decoded speech, when the config asks for it."""
    if cfg.intel_weight <= 0:
        return None
    if not cfg.recognizer:
        raise ConfigError("intel_weight is set but no `recognizer` checkpoint is given "
                          "(train one with `gacflow-train recognizer`)")
    return IntelligibilityLoss(cfg.recognizer, Path(cfg.intel_data or data), cfg.seed,
                               cfg.intel_seconds)


def ctc_step(model: CodecModel, sampler: PhonemeSampler, size: int, device: torch.device,
             amp) -> torch.Tensor:
    """Phoneme CTC loss of a batch of whole utterances, read from their quantized codes."""
    wav, frames, labels = sampler.batch(size)
    with amp:
        log_probs = model.ctc_head(model.codes(wav.to(device)))
    return ctc(log_probs.cpu(), frames, labels)


def gan_window(real: torch.Tensor, fake: torch.Tensor, frames: int,
               rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random window of reference and decoded audio: discriminators dominate a
    CPU step's cost, and judging part of each crop halves it without changing the target."""
    n = frames * FRAME_SAMPLES
    if frames <= 0 or n >= real.shape[-1]:
        return real, fake
    start = int(rng.integers(0, real.shape[-1] - n + 1))
    return real[:, start : start + n], fake[:, start : start + n]


@torch.no_grad()
def validate(model: CodecModel, wav: torch.Tensor,
             voice: torch.Tensor | None = None) -> dict[str, float]:
    """Mel L1 on held-out speaker crops, for both operating points."""
    model.eval()
    out = {}
    for name, flag in (("275", 1.0), ("175", 0.0)):
        rec = model(wav, torch.full((len(wav),), flag, device=wav.device), voice)
        out[f"valid_mel_{name}"] = mel_l1(model.mel, rec, wav).item()
    return out


def checkpoint_payload(model: CodecModel, opt, step: int, cfg: TrainConfig, disc=None,
                       opt_d=None, voice: VoiceSpec | None = None) -> dict:
    extra = {} if disc is None else {"disc": disc.state_dict(), "opt_d": opt_d.state_dict()}
    if voice is not None:
        extra["voice"] = voice.to_manifest()
    return {
        **extra,
        "model": {k: v.cpu() for k, v in model.state_dict().items()},
        "opt": opt.state_dict(),
        "step": step,
        "config": asdict(cfg),
        "encoder_config": config_dict(model.encoder.cfg),
        "decoder_config": config_dict(model.decoder.cfg),
    }
