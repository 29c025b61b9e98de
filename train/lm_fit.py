"""Fit a bundle's token language model (sdk/tokenlm.py) and store it in the bundle.

    gacflow-train lm-fit --bundle sdk/bundles/default \
        --data asterisk:es_MX_f_Allison,fr_CA_f_June,it_IT_m_Carlo \
        --held-out asterisk:ru_RU_f_IvrvoiceRU

The model only changes how tokens are packed, not what they mean: the codec id, the
encoder exports and every decoder stay valid. The bundle's previous v1 tables are kept
in the section (`legacy`) so version 1 packets and files still decode. Fit on the
codec's training voices only; `--held-out` reports bits per frame, against the v1 tables,
on voices neither the codec nor the model has heard. Rerun it after a new codec: the
tokens, and so the tables, belong to one encoder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from gacflow.bundle import MANIFEST, Bundle, manifest_extras, write_manifest
from gacflow.entropy import EntropyModel
from gacflow.errors import ConfigError
from gacflow.spec import FRAME_RATE
from gacflow.tokenlm import MIN_COUNT, TokenLM

ASTERISK = "asterisk:"


def asterisk_files(spec: str) -> list[Path]:
    """`asterisk:VOICE[,VOICE...]`: the installed Asterisk prompts of those voices."""
    from .corpus import ASTERISK_ROOT

    files = []
    for voice in spec[len(ASTERISK):].split(","):
        found = sorted(p for p in (ASTERISK_ROOT / voice).rglob("*")
                       if p.suffix in (".g722", ".wav"))
        if not found:
            raise ConfigError(f"no Asterisk prompts for voice {voice!r} under {ASTERISK_ROOT} "
                              f"(apt-get install asterisk-core-sounds-{voice[:2]}-g722)")
        files += found
    return files


def spec_tokens(bundle: Bundle, spec: str, cache: Path | None = None) -> list[np.ndarray]:
    """275-mode token ids of every clip of `spec`, as `gacflow encode` makes them (silence
    included: files and streams without DTX send it). With `cache`, kept per codec id
    and spec, so a refit or a report does not encode again."""
    if cache is not None:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec)
        path = cache / f"{bundle.codec_id}-{safe}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                return np.split(z["ids"].astype(np.int64), z["ends"][:-1])
        seqs = spec_tokens(bundle, spec)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, ids=np.concatenate(seqs).astype(np.int16),
                 ends=np.cumsum([len(s) for s in seqs]))
        return seqs
    from tqdm import tqdm

    from gacflow.backends import encoder_runtime, resolve_backend
    from gacflow.streaming import encode_whole

    from .corpus import load_any

    if not spec.startswith(ASTERISK):
        from gacflow.model import Codec

        from .entropy_fit import clip_tokens

        return clip_tokens(Codec.from_bundle(bundle.root), spec)
    runtime = encoder_runtime(bundle, resolve_backend(bundle, "auto"))
    out = []
    for path in tqdm(asterisk_files(spec), desc=f"tokens of {spec}", unit="file"):
        wav = load_any(path)
        if len(wav) >= 8000:
            out.append(encode_whole(runtime, bundle.layout, "275", bundle.codec_id, wav,
                                    bundle.voice).ids)
    return out


def streams(sequences: list[np.ndarray], seconds: float = 30.0) -> list[np.ndarray]:
    """Clips joined into streams of about `seconds` (how a long recording is coded)."""
    out, cur = [], []
    for s in sequences:
        cur.append(s)
        if sum(map(len, cur)) >= seconds * FRAME_RATE:
            out.append(np.concatenate(cur))
            cur = []
    return out


def rates(model: Any, sequences: list[np.ndarray]) -> dict[str, float]:
    """Ideal bits per frame: whole clips (a .gac file), 1 s packets (live), 30 s streams,
    and the 175 mode over whole clips."""
    base = model.layout.base_tokens
    long = streams(sequences)
    packets = [s[i:i + FRAME_RATE] for s in long for i in range(0, len(s), FRAME_RATE)]

    def per_frame(seqs: list[np.ndarray], mode: str) -> float:
        frames = sum(len(s) for s in seqs)
        return sum(model.code_bits(s if mode == "275" else base(s), mode)
                   for s in seqs) / max(frames, 1)

    return {"clip": per_frame(sequences, "275"), "1s": per_frame(packets, "275"),
            "30s": per_frame(long, "275"), "clip175": per_frame(sequences, "175")}


def fit_lm(bundle_dir: Path, data: list[str], held_out: list[str], smoothing: float = 4.0,
           min_count: int = MIN_COUNT, cache: Path | None = None) -> dict[str, Any]:
    """Fit on `data`, report on `held_out` against the v1 tables, write the manifest."""
    bundle = Bundle.load(bundle_dir)
    current = bundle.entropy
    legacy = current.legacy if isinstance(current, TokenLM) else current
    sequences = [s for spec in data for s in spec_tokens(bundle, spec, cache)]
    if not sequences:
        raise ConfigError("lm-fit: no training clips found in " + ", ".join(data))
    model = TokenLM.fit(sequences, bundle.layout, smoothing, min_count=min_count,
                        legacy=legacy)
    v1 = legacy if legacy is not None else EntropyModel.fit(sequences, bundle.layout)
    report: dict[str, Any] = {"fit_frames": sum(len(s) for s in sequences), "tag":
                              f"{model.tag:02x}", "held_out": {}}
    for spec in held_out:
        seqs = spec_tokens(bundle, spec, cache)
        report["held_out"][spec] = {"frames": sum(len(s) for s in seqs),
                                    "v1": rates(v1, seqs), "lm": rates(model, seqs)}
    manifest = json.loads((bundle.root / MANIFEST).read_text())
    extra = manifest_extras(manifest)
    extra["entropy"] = {**model.to_manifest(), "fitted_on": data}
    write_manifest(bundle.root, manifest["codec"]["name"], bundle.codec_id, bundle.layout,
                   manifest["model"], extra)
    return report


def print_report(report: dict[str, Any]) -> None:
    print(f"token LM {report['tag']} fitted on {report['fit_frames']} frames")
    print("| held-out data | frames | model | clip bit/frame | 1 s packets | 30 s streams "
          "| 175 mode clip |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for spec, r in report["held_out"].items():
        for name in ("v1", "lm"):
            x = r[name]
            print(f"| {spec} | {r['frames']} | {name} | {x['clip']:.3f} | {x['1s']:.3f} | "
                  f"{x['30s']:.3f} | {x['clip175']:.3f} |")
        saved = 1 - r["lm"]["30s"] / r["v1"]["30s"]
        print(f"| {spec} | | saved | {1 - r['lm']['clip'] / r['v1']['clip']:.1%} | "
              f"{1 - r['lm']['1s'] / r['v1']['1s']:.1%} | {saved:.1%} | "
              f"{1 - r['lm']['clip175'] / r['v1']['clip175']:.1%} |")
