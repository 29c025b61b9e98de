"""Write a model bundle from a training checkpoint.

The codec id is derived from what fixes the tokens (encoder weights and token layout),
not from the decoders, so a larger decoder added later reads the same streams.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from gacflow.bundle import layout_section, write_manifest
from gacflow.spec import TokenLayout

ENCODER_FILE = "encoder.pt"


def _state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    for k in sorted(state):
        buf.write(k.encode())
        buf.write(state[k].detach().cpu().contiguous().numpy().tobytes())
    return buf.getvalue()


def codec_id_for(name: str, encoder_state: dict[str, torch.Tensor], layout: TokenLayout) -> str:
    h = hashlib.sha256(_state_bytes(encoder_state))
    h.update(json.dumps(layout_section(layout), sort_keys=True).encode())
    return f"{name}-{h.hexdigest()[:8]}"


def split_state(model_state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in model_state.items() if k.startswith(prefix)}


def write_torch_bundle(
    checkpoint: Path,
    out: Path,
    name: str = "gacflow-base",
    decoders: dict[str, Path] | None = None,
    default_decoder: str = "small",
    extra_files: dict[str, Path] | None = None,
    extra_manifest: dict[str, Any] | None = None,
) -> Path:
    """Bundle = encoder (fp32), one or more decoders (fp16), manifest.

    `decoders` maps a size name to a checkpoint whose decoder reads this encoder's tokens;
    by default the checkpoint's own decoder becomes "small".
    """
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    layout = TokenLayout()
    enc_state = split_state(ck["model"], "encoder.")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.save(enc_state, out / ENCODER_FILE)
    dec_entries = {}
    for size, path in (decoders or {default_decoder: checkpoint}).items():
        dck = ck if Path(path) == Path(checkpoint) else torch.load(
            path, map_location="cpu", weights_only=False)
        state = {k: v.half() if v.is_floating_point() else v
                 for k, v in split_state(dck["model"], "decoder.").items()}
        fname = f"decoder.{size}.pt"
        torch.save(state, out / fname)
        dec_entries[size] = {"file": fname, "config": dck["decoder_config"],
                             "params": sum(v.numel() for v in state.values()),
                             "trained_steps": dck["step"]}
    for fname, src in (extra_files or {}).items():
        shutil.copy(src, out / fname)
    model = {
        "encoder": ck["encoder_config"],
        "encoder_file": ENCODER_FILE,
        "encoder_trained_steps": ck["step"],
        "decoders": dec_entries,
        "default_decoder": default_decoder,
    }
    write_manifest(out, name, codec_id_for(name, enc_state, layout), layout, model,
                   extra_manifest)
    return out
