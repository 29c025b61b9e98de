"""Training checkpoints: the one file format that training writes and export reads.

A checkpoint is a torch-saved dict (`model` state, `encoder_config`, `decoder_config`,
`config`, `step`, optimiser and discriminator states). Kept here, beside the model it
holds, so training and export share one reader instead of one borrowing the other's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..fileio import atomic_path
from ..spec import TokenLayout

CODEC_KEYS = ("model", "encoder_config", "decoder_config")


def read_checkpoint(path: Path, needs: tuple[str, ...] = CODEC_KEYS) -> dict[str, Any]:
    """A training checkpoint, or one clear error for a missing, broken or foreign file."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a bad file
        raise ConfigError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(ck, dict) or not set(needs) <= set(ck):
        raise ConfigError(f"{path} is not a gacflow training checkpoint "
                          f"(needs {', '.join(needs)})")
    return ck


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Atomic save: a power cut never leaves a half-written checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def checkpoint_layout(ck: dict[str, Any]) -> TokenLayout:
    """The token layout a checkpoint was trained with (its config's `enh_levels`)."""
    enh = (ck.get("config") or {}).get("enh_levels")
    return TokenLayout(enh_levels=tuple(enh)) if enh else TokenLayout()


def split_state(model_state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of one sub-module (`encoder.`, `decoder.`) without the prefix."""
    return {k[len(prefix):]: v for k, v in model_state.items() if k.startswith(prefix)}


def _half(v: torch.Tensor) -> torch.Tensor:
    return v.half() if v.is_floating_point() else v


def slim_checkpoint(path: Path, out: Path, parts: tuple[str, ...] = ("encoder", "decoder"),
                    discriminators: bool = False) -> None:
    """A weights-only copy: no optimiser, discriminator or training-head state; decoder
    weights in fp16 (the bundle ships them so), encoder in fp32 (its hash is the codec id and
    INT8 export calibrates from it). `parts=("decoder",)` leaves the encoder out, for a
    frozen-encoder run whose encoder came back already. `discriminators` keeps them too
    (fp16, ~1.7 MB), so an adversarial stage can go on from the slim file with its critics
    (fresh ones first undo what the decoder learned). Loads like any checkpoint."""
    ck = read_checkpoint(path)
    prefixes = tuple(f"{p}." for p in parts)
    model = {k: _half(v) if k.startswith("decoder.") else v
             for k, v in ck["model"].items() if k.startswith(prefixes)}
    keep = {k: v for k, v in ck.items() if k not in ("opt", "opt_d", "disc", "model")}
    if discriminators and "disc" in ck:
        keep["disc"] = {k: _half(v) for k, v in ck["disc"].items()}
    save_checkpoint(out, {**keep, "model": model})
