"""The export's validation report: does INT8 keep the tokens, the sound, and the speed?

For every exported encoder file, run through the same edge runtime the device uses
(loaded from the verified bundle), on held-out speech:
- token agreement with the fp32 torch encoder (mode 275 and 175),
- quality after decoding with the bundle's torch decoder: STOI against the input and a
  log-mel distance, for the fp32 tokens and the format's tokens (the change is what INT8
  costs),
- encoder time per second of audio on one thread (25 `step` calls, per-call overhead
  included), file size.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from gacflow.bundle import Bundle
from gacflow.features import log_mel
from gacflow.fsq import latent_to_tokens
from gacflow.model.codec import load_decoder, tokens_to_decoder_input
from gacflow.model.encoder import Encoder
from gacflow.spec import FRAME_RATE, SAMPLE_RATE

from .audio_data import utterance_mels

FORMAT_FILES = {"onnx-fp32": "encoder.fp32.onnx", "onnx-int8": "encoder.int8.onnx",
                "tflite-int8": "encoder.int8.tflite"}


def _runtime(bundle: Bundle, fmt: str):
    if fmt.startswith("onnx"):
        from gacflow.edge.runtime_onnx import OnnxEncoderRuntime

        return OnnxEncoderRuntime(bundle, threads=1, file=FORMAT_FILES[fmt])
    from gacflow.edge.runtime_litert import LiteRTEncoderRuntime

    return LiteRTEncoderRuntime(bundle, threads=1, file=FORMAT_FILES[fmt])


def stream_latents(runtime, mels: np.ndarray) -> tuple[np.ndarray, float]:
    """Latents [T, D] of one utterance and the seconds spent in `step`."""
    runtime.reset()
    out = []
    t0 = time.perf_counter()
    for m in mels:
        out.append(runtime.step(m))
    return np.stack(out), time.perf_counter() - t0


@torch.no_grad()
def torch_latents(encoder: Encoder, mels: np.ndarray) -> np.ndarray:
    return encoder(torch.from_numpy(mels.reshape(1, -1, mels.shape[-1])))[0].numpy()


@torch.no_grad()
def decode(decoder, ids: np.ndarray, mode: str, bundle: Bundle) -> np.ndarray:
    codes, enh, _ = tokens_to_decoder_input(ids, mode, bundle.layout)
    wav = decoder(torch.from_numpy(codes)[None], torch.from_numpy(enh)[None])[0]
    return wav.float().numpy()


def mel_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute log-mel difference (natural log units)."""
    n = min(len(a), len(b))
    return float(np.abs(log_mel(a[:n]) - log_mel(b[:n])).mean())


def stoi(ref: np.ndarray, deg: np.ndarray) -> float:
    from pystoi import stoi as _stoi

    n = min(len(ref), len(deg))
    return float(_stoi(ref[:n], deg[:n], SAMPLE_RATE, extended=False))


def validate_bundle(bundle: Bundle, encoder: Encoder, utterances: list[np.ndarray],
                    formats: list[str]) -> dict[str, Any]:
    """Compare each format's tokens and decoded audio with the fp32 torch encoder's."""
    dec_entry = bundle.decoder_entry()
    decoder = load_decoder(dec_entry["config"], bundle.layout,
                           torch.load(bundle.path(dec_entry["file"]), map_location="cpu",
                                      weights_only=True))
    layout = bundle.layout
    mels = [utterance_mels(u) for u in utterances]
    ref_lat = [torch_latents(encoder, m) for m in mels]
    n_frames = sum(len(m) for m in mels)
    wav = np.concatenate(utterances)
    ref_ids = {mode: [latent_to_tokens(u, layout, layout.mode(mode)) for u in ref_lat]
               for mode in ("275", "175")}
    ref_wav = np.concatenate([decode(decoder, ids, "275", bundle)[: len(u)]
                              for ids, u in zip(ref_ids["275"], utterances, strict=True)])
    report: dict[str, Any] = {
        "held_out_seconds": round(len(wav) / SAMPLE_RATE, 1), "frames": n_frames,
        "reference": {"stoi": round(stoi(wav, ref_wav), 4),
                      "mel_distance_to_input": round(mel_distance(wav, ref_wav), 4)},
        "formats": {},
    }
    for fmt in formats:
        rt = _runtime(bundle, fmt)
        lats, secs = [], 0.0
        for m in mels:
            lat, dt = stream_latents(rt, m)
            lats.append(lat)
            secs += dt
        entry: dict[str, Any] = {
            "file": FORMAT_FILES[fmt], "bytes": bundle.path(FORMAT_FILES[fmt]).stat().st_size,
            "max_abs_latent_diff": float(max(np.abs(a - b).max()
                                             for a, b in zip(lats, ref_lat, strict=True))),
        }
        for mode in ("275", "175"):
            same = sum(int((latent_to_tokens(lat, layout, layout.mode(mode)) == r).sum())
                       for lat, r in zip(lats, ref_ids[mode], strict=True))
            entry[f"token_agreement_{mode}"] = round(same / n_frames, 4)
        ids = [latent_to_tokens(lat, layout, layout.mode("275")) for lat in lats]
        out_wav = np.concatenate([decode(decoder, i, "275", bundle)[: len(u)]
                                  for i, u in zip(ids, utterances, strict=True)])
        entry["stoi"] = round(stoi(wav, out_wav), 4)
        entry["stoi_change"] = round(entry["stoi"] - report["reference"]["stoi"], 4)
        entry["mel_distance_to_input"] = round(mel_distance(wav, out_wav), 4)
        entry["mel_distance_to_fp32_decode"] = round(mel_distance(ref_wav, out_wav), 4)
        ms_per_frame = secs / n_frames * 1e3
        entry["ms_per_second_audio_1thread"] = round(ms_per_frame * FRAME_RATE, 3)
        entry["real_time_percent_1thread"] = round(ms_per_frame * FRAME_RATE / 10, 3)
        report["formats"][fmt] = entry
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as a markdown table (printed at the end of every export)."""
    lines = [
        f"Validation on {report['held_out_seconds']} s of held-out speech "
        f"({report['frames']} frames); fp32 torch tokens decoded: STOI "
        f"{report['reference']['stoi']:.3f}",
        "",
        "| format | bytes | tokens = fp32 (275) | (175) | STOI | dSTOI | mel dist vs fp32 "
        "| ms per s audio (1 thread) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for fmt, e in report["formats"].items():
        lines.append(
            f"| {fmt} | {e['bytes']:,} | {e['token_agreement_275']:.2%} | "
            f"{e['token_agreement_175']:.2%} | {e['stoi']:.3f} | {e['stoi_change']:+.4f} | "
            f"{e['mel_distance_to_fp32_decode']:.3f} | {e['ms_per_second_audio_1thread']:.2f} |")
    return "\n".join(lines)
