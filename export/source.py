"""Where an export starts: a training checkpoint or an existing bundle directory.

Both give the same thing: the fp32 torch encoder and decoder(s), their configs and the
token layout, so the rest of the toolchain does not care which one the user passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gacflow.bundle import Bundle
from gacflow.errors import BundleError, ConfigError
from gacflow.model.checkpoint import checkpoint_layout, read_checkpoint, split_state
from gacflow.model.codec import load_decoder, load_encoder
from gacflow.model.decoder import Decoder
from gacflow.model.encoder import Encoder
from gacflow.spec import TokenLayout


@dataclass
class ExportSource:
    """The fp32 models an export reads, plus what is needed to write a bundle again."""

    encoder: Encoder
    decoder: Decoder
    encoder_config: dict[str, Any]
    decoder_config: dict[str, Any]
    layout: TokenLayout
    step: int
    name: str
    origin: Path
    voice: dict[str, Any] | None = None  # the manifest's voice section, if the codec has one


def from_checkpoint(path: Path, name: str = "gacflow-base") -> ExportSource:
    ck = read_checkpoint(path)
    layout = checkpoint_layout(ck)
    enc = load_encoder(ck["encoder_config"], layout, split_state(ck["model"], "encoder."))
    dec = load_decoder(ck["decoder_config"], layout, split_state(ck["model"], "decoder."))
    return ExportSource(enc, dec, ck["encoder_config"], ck["decoder_config"], layout,
                        int(ck.get("step", 0)), name, path, ck.get("voice"))


def from_bundle(path: Path, decoder: str | None = None) -> ExportSource:
    """The bundle's encoder with one of its decoders (default: the bundle's default)."""
    b = Bundle.load(path)
    model = b.model_config
    dec_entry = b.decoder_entry(decoder)
    try:
        enc_state = torch.load(b.path(model["encoder_file"]), map_location="cpu",
                               weights_only=True)
        dec_state = torch.load(b.path(dec_entry["file"]), map_location="cpu", weights_only=True)
        enc = load_encoder(model["encoder"], b.layout, enc_state)
        dec = load_decoder(dec_entry["config"], b.layout, dec_state)
    except (KeyError, TypeError) as exc:
        raise BundleError(f"bundle {path}: model section is incomplete ({exc})") from exc
    return ExportSource(enc, dec, model["encoder"], dec_entry["config"], b.layout,
                        int(model.get("encoder_trained_steps", 0)),
                        str(b.manifest["codec"].get("name", "gacflow-base")), path,
                        b.manifest.get("voice"))


def load_source(path: Path, decoder: str | None = None) -> ExportSource:
    """A directory is read as a bundle (with `decoder`, or its default), a file as a
    training checkpoint."""
    path = Path(path)
    if path.is_dir():
        return from_bundle(path, decoder)
    if not path.is_file():
        raise ConfigError(f"{path}: no such checkpoint file or bundle directory")
    return from_checkpoint(path)


def as_checkpoint(src: ExportSource, encoder: Encoder | None = None) -> dict[str, Any]:
    """A checkpoint dict `write_torch_bundle` can read (optionally with a fine-tuned encoder)."""
    enc = encoder if encoder is not None else src.encoder
    model = {f"encoder.{k}": v.detach().clone() for k, v in enc.state_dict().items()}
    model.update({f"decoder.{k}": v.detach().clone()
                  for k, v in src.decoder.state_dict().items()})
    extra = {} if src.voice is None else {"voice": src.voice}
    return {"model": model, "step": src.step, "encoder_config": src.encoder_config,
            "decoder_config": src.decoder_config, **extra}
