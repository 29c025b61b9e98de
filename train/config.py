"""Training configuration: one TOML file per model, every field with a default."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomllib

from gacflow.errors import ConfigError


@dataclass
class TrainConfig:
    name: str = "base"
    data: str = "data/corpus"
    steps: int = 20_000
    batch: int = 12
    segment_frames: int = 40  # 1.6 s crops
    speakers: tuple[str, ...] = ()  # train crops only from these speakers (corpus.json); all
    lr: float = 6e-4
    warmup: int = 300
    augment: tuple[str, ...] = ("gain",)  # gain, speed, pitch, eq, noise, reverb (augment.py)
    channel: float = 0.0  # chance a crop reaches the encoder through a device channel
    #   (microphone, room, noise, clipping, link codec: channel.py); the target stays clean
    enh_drop: float = 0.5  # chance of training a crop as the 175 mode
    enh_levels: tuple[int, ...] = (4, 4)  # FSQ levels of the 275 mode's enhancement digits
    grown_lr_scale: float = 1.0  # lr multiplier for the layers new token digits enter
    gan_start: int = -1  # step at which the adversarial stage starts (-1: never)
    gan_crop_frames: int = 0  # token frames the discriminators judge per crop (0: all)
    adv_weight: float = 1.0
    fm_weight: float = 2.0
    disc_lr: float = 2e-4
    ctc_weight: float = 0.0  # phoneme CTC from the codes (needs corpus files with phonemes)
    ctc_batch: int = 4  # whole utterances per step for the CTC loss
    pitch_weight: float = 0.0  # F0 + voicing read from the codes (pitch.py)
    recognizer: str = ""  # frozen phoneme recogniser (`gacflow-train recognizer`)
    intel_weight: float = 0.0  # its CTC on decoded utterances (intelligibility loss)
    intel_batch: int = 2  # whole utterances per step for it
    intel_mel_weight: float = 0.0  # mel distance of those decoded utterances
    intel_data: str = ""  # corpus with phonemes for it (default: `data`)
    intel_seconds: float = 6.0  # longest utterance it decodes
    margin_weight: float = 0.0  # keep latents away from FSQ rounding boundaries (INT8 edge)
    margin: float = 0.1  # in FSQ levels: a latent nearer a boundary than this is penalised
    qat: bool = False  # fake uint8 activations in the encoder, as the INT8 edge graph has
    qat_consistency: float = 0.0  # with qat: tokens from the float path, and this weight on
    #   |quantized latent - float latent| (hundredths of a level), so both round alike
    freeze_encoder: bool = False  # train a decoder for an existing encoder's tokens
    train_only: tuple[str, ...] = ()  # if set, only parameters with these name prefixes learn
    init_from: str = ""  # checkpoint file or bundle dir to start from (e.g. to grow a decoder)
    init_only: tuple[str, ...] = ()  # if set, only these parameter-name prefixes come from
    #   init_from (e.g. ["encoder."]: a wider decoder starts fresh on a trained encoder)
    init_decoder_from: str = ""  # checkpoint or bundle whose decoder replaces init_from's
    #   (e.g. a shipped adversarially trained decoder, fine-tuned to a new encoder's tokens)
    init_critics_from: str = ""  # checkpoint holding the discriminators to go on with
    #   (slim checkpoints can keep them in a file of their own, beside the decoder's)
    init_decoder: str = ""  # with a bundle dir: which decoder size (default: its default)
    voice: str = ""  # voice basis JSON (`gacflow-train voice-fit`); needs decoder.voice_dims
    voice_drop: float = 0.1  # share of crops decoded without a voice code
    device: str = "auto"  # auto | cpu | cuda
    max_minutes: float = 0.0  # stop (and checkpoint) after this much wall time; 0: steps only
    chunk_minutes: float = 0.0  # stop after this much wall time *without* fitting the lr
    #   schedule to it: the next run resumes (background CPU training in chunks)
    loader_workers: int = 0  # processes preparing augmented batches (GPU runs); 0: inline
    mel_weight: float = 1.0
    stft_weight: float = 1.0
    checkpoint_every: int = 100
    valid_every: int = 500
    seed: int = 0
    threads: int = 2
    encoder: dict[str, Any] = field(default_factory=dict)
    decoder: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path | None, **overrides: Any) -> TrainConfig:
        raw: dict[str, Any] = {}
        if path:
            try:
                raw = tomllib.loads(Path(path).read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"training config {path}: {exc}") from exc
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ConfigError(f"training config {path}: unknown keys {sorted(unknown)}")
        raw.update({k: v for k, v in overrides.items() if v is not None})
        if "enh_levels" in raw:
            raw["enh_levels"] = tuple(int(x) for x in raw["enh_levels"])
        if "augment" in raw:
            from .augment import check

            raw["augment"] = check(raw["augment"])
        return cls(**raw)
