"""Write a model bundle from a training checkpoint.

The codec id is derived from what fixes the stream (encoder weights, token layout and the
voice-code basis, when the codec sends one), not from the decoders, so a larger decoder
added later reads the same streams.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from gacflow.bundle import Bundle, layout_section, manifest_extras, write_manifest
from gacflow.model.checkpoint import checkpoint_layout, read_checkpoint, split_state
from gacflow.spec import TokenLayout

ENCODER_FILE = "encoder.pt"
VALIDATION_FILE = "validation.json"  # the export's INT8 report (export/pipeline.py)


def _state_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buf = io.BytesIO()
    for k in sorted(state):
        buf.write(k.encode())
        buf.write(state[k].detach().cpu().contiguous().numpy().tobytes())
    return buf.getvalue()


def codec_id_for(name: str, encoder_state: dict[str, torch.Tensor], layout: TokenLayout,
                 voice: dict[str, Any] | None = None) -> str:
    h = hashlib.sha256(_state_bytes(encoder_state))
    h.update(json.dumps(layout_section(layout), sort_keys=True).encode())
    if voice is not None:
        h.update(json.dumps(voice, sort_keys=True).encode())
    return f"{name}-{h.hexdigest()[:8]}"


def _write_decoder(out: Path, size: str, ck: dict[str, Any]) -> dict[str, Any]:
    """decoder.<size>.pt in fp16 (half the bytes, same audio) and its manifest entry."""
    state = {k: v.half() if v.is_floating_point() else v
             for k, v in split_state(ck["model"], "decoder.").items()}
    fname = f"decoder.{size}.pt"
    torch.save(state, out / fname)
    return {"file": fname, "config": ck["decoder_config"],
            "params": sum(v.numel() for v in state.values()), "trained_steps": ck["step"]}


def add_decoder(bundle_dir: Path, checkpoint: Path, size: str, default: bool = False) -> str:
    """Add (or replace) one decoder size in an existing bundle; returns the codec id.

    Refused unless the checkpoint's encoder is the bundle's encoder: a decoder trained on
    other tokens would turn every stream into noise. A decoder that reads voice codes must
    use the bundle's voice basis; the first one added to a bundle without a basis brings
    its basis along (and with it a new codec id).
    """
    from gacflow.bundle import MANIFEST, Bundle
    from gacflow.errors import BundleError

    bundle = Bundle.load(bundle_dir)
    ck = read_checkpoint(checkpoint)
    name = bundle.manifest["codec"]["name"]
    enc_state = split_state(ck["model"], "encoder.")
    has_voice = bundle.manifest.get("voice")
    got = codec_id_for(name, enc_state, bundle.layout, has_voice)
    if got != bundle.codec_id:
        raise BundleError(f"{checkpoint}: its encoder makes codec {got}, the bundle is "
                          f"{bundle.codec_id}; train the decoder with freeze_encoder")
    voice = has_voice
    if ck["decoder_config"].get("voice_dims", 0):
        if _voice_readers(bundle, skip=size) and ck.get("voice") != has_voice:
            raise BundleError(f"{checkpoint}: its decoder reads a different voice basis than "
                              f"bundle {bundle_dir}'s; train it with the bundle's basis")
        # a bundle's code is read by its decoders or, for an envelope code, by no decoder
        # (receiver EQ): the decoder's basis takes the slot, and the EQ goes with it
        voice = ck.get("voice")
    codec_id = codec_id_for(name, enc_state, bundle.layout, voice)
    root = Path(bundle_dir)
    manifest = json.loads((root / MANIFEST).read_text())
    model = manifest["model"]
    model["decoders"][size] = _write_decoder(root, size, ck)
    if default:
        model["default_decoder"] = size
    extra = manifest_extras(manifest)
    if voice is not None:
        # the first voice decoder brings the basis: streams now carry a code, so the codec
        # id changes (the same encoder, its INT8 files and their report stay valid)
        extra["voice"] = voice
        _relabel_report(root, codec_id)
    write_manifest(root, name, codec_id, bundle.layout, model, extra)
    return codec_id


def _voice_readers(bundle: Bundle, skip: str | None = None) -> list[str]:
    """The bundle's decoders (but `skip`) that read its voice code as a condition."""
    return [n for n, d in bundle.model_config["decoders"].items()
            if n != skip and d["config"].get("voice_dims", 0)]


def _bundle_encoder_state(bundle: Bundle) -> dict[str, torch.Tensor]:
    """The fp32 encoder weights a bundle's codec id is hashed from."""
    return torch.load(bundle.path(bundle.model_config["encoder_file"]), map_location="cpu",
                      weights_only=True)


def _relabel_report(root: Path, codec_id: str) -> None:
    """Point the INT8 validation report at a new codec id (same encoder, same files)."""
    report = root / VALIDATION_FILE
    if report.is_file():
        data = json.loads(report.read_text())
        data["codec_id"] = codec_id
        report.write_text(json.dumps(data, indent=2) + "\n")


def set_voice(bundle_dir: Path, voice: dict[str, Any]) -> str:
    """Give a bundle a voice-code section (the edge then sends codes, receivers read them);
    returns the new codec id. Refused when a decoder reads codes of another basis."""
    from gacflow.bundle import MANIFEST, Bundle
    from gacflow.errors import BundleError

    bundle = Bundle.load(bundle_dir)
    readers = _voice_readers(bundle)
    if readers and bundle.manifest.get("voice") != voice:
        raise BundleError(f"{bundle_dir}: decoders {readers} read its current voice basis")
    root = Path(bundle_dir)
    manifest = json.loads((root / MANIFEST).read_text())
    name = manifest["codec"]["name"]
    codec_id = codec_id_for(name, _bundle_encoder_state(bundle), bundle.layout, voice)
    _relabel_report(root, codec_id)
    extra = {**manifest_extras(manifest), "voice": voice}
    write_manifest(root, name, codec_id, bundle.layout, manifest["model"], extra)
    return codec_id


def carry_bundle_parts(origin: Path, out: Path) -> None:
    """Give `out` (just written from `origin`'s encoder) every decoder of bundle `origin`,
    its default decoder and its other manifest sections (entropy tables, voice basis),
    so re-exporting a bundle only remakes the encoder files instead of turning its
    default decoder into the only one, named "small". Refused unless both have the same
    encoder weights (a new `--name` changes the codec id, not what the decoders read)."""
    from gacflow.bundle import MANIFEST, Bundle
    from gacflow.errors import BundleError

    src, dst = Bundle.load(origin), Bundle.load(out)
    manifest = json.loads((dst.root / MANIFEST).read_text())
    theirs = _bundle_encoder_state(src)  # the same check as add_decoder: the codec id
    if codec_id_for(manifest["codec"]["name"], theirs, src.layout,
                    manifest.get("voice")) != dst.codec_id:
        raise BundleError(f"{out}: its encoder is not {origin}'s; cannot carry its decoders")
    model = manifest["model"]
    for entry in model["decoders"].values():
        (dst.root / entry["file"]).unlink()
    model["decoders"] = src.model_config["decoders"]
    model["default_decoder"] = src.model_config["default_decoder"]
    for entry in model["decoders"].values():
        shutil.copy(src.path(entry["file"]), dst.root / entry["file"])
    extra = {**manifest_extras(src.manifest), **manifest_extras(manifest)}  # ours: edge
    codec_id = dst.codec_id
    if extra.get("voice") is not None:  # the codec id covers the voice section it carries
        codec_id = codec_id_for(manifest["codec"]["name"], theirs, src.layout, extra["voice"])
        _relabel_report(dst.root, codec_id)
    write_manifest(dst.root, manifest["codec"]["name"], codec_id, dst.layout, model, extra)


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
    ck = read_checkpoint(checkpoint)
    layout = checkpoint_layout(ck)
    enc_state = split_state(ck["model"], "encoder.")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.save(enc_state, out / ENCODER_FILE)
    dec_entries = {}
    for size, path in (decoders or {default_decoder: checkpoint}).items():
        dck = ck if Path(path) == Path(checkpoint) else read_checkpoint(path)
        dec_entries[size] = _write_decoder(out, size, dck)
    for fname, src in (extra_files or {}).items():
        shutil.copy(src, out / fname)
    model = {
        "encoder": ck["encoder_config"],
        "encoder_file": ENCODER_FILE,
        "encoder_trained_steps": ck["step"],
        "decoders": dec_entries,
        "default_decoder": default_decoder,
    }
    voice = ck.get("voice")
    extra = dict(extra_manifest or {})
    if voice is not None:
        extra["voice"] = voice
    write_manifest(out, name, codec_id_for(name, enc_state, layout, voice), layout, model,
                   extra)
    return out
