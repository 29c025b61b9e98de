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
from gacflow.tokenlm import FORMAT, MIN_COUNT, NEURAL_FORMAT, NeuralTokenLM, TokenLM

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


def spec_tokens(bundle: Bundle, spec: str, cache: Path | None = None, every: int = 1
                ) -> list[np.ndarray]:
    """275-mode token ids of every clip of `spec` (every `every`th one), as `gacflow
    encode` makes them (silence included: files and streams without DTX send it). With
    `cache`, kept per codec id and spec, so a refit or a report does not encode again."""
    if every < 1:
        raise ConfigError(f"--every must be at least 1, not {every}")
    if cache is not None:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec)
        path = cache / f"{bundle.codec_id}-{safe}{f'-every{every}' if every > 1 else ''}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                return np.split(z["ids"].astype(np.int64), z["ends"][:-1])
        seqs = spec_tokens(bundle, spec, every=every)
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, ids=np.concatenate(seqs).astype(np.int16),
                 ends=np.cumsum([len(s) for s in seqs]))
        return seqs
    from tqdm import tqdm

    from gacflow.backends import encoder_runtime, resolve_backend
    from gacflow.streaming import encode_whole

    from .corpus import load_any

    runtime = encoder_runtime(bundle, resolve_backend(bundle, "auto"))
    if spec.startswith(ASTERISK):
        wavs = (load_any(p) for p in asterisk_files(spec)[::every])
    else:
        from gacflow.eval.data import ClipFilter, load_clips

        clips = load_clips(spec, None, ClipFilter(min_seconds=0.2, min_speech=0.0))[::every]
        wavs = (c.wav for c in clips)
    out = []
    for wav in tqdm(wavs, desc=f"tokens of {spec}", unit="file"):
        if len(wav) >= 8000:
            out.append(encode_whole(runtime, bundle.layout, "275", bundle.codec_id, wav,
                                    bundle.voice).ids)
    return out


def spec_speakers(spec: str, every: int = 1) -> list[str]:
    """The speaker of each clip `spec_tokens` encodes, in the same order (no encoding)."""
    from .corpus import ASTERISK_ROOT, load_any

    if spec.startswith(ASTERISK):
        return [p.relative_to(ASTERISK_ROOT).parts[0] for p in asterisk_files(spec)[::every]
                if len(load_any(p)) >= 8000]
    from gacflow.eval.data import ClipFilter, load_clips

    clips = load_clips(spec, None, ClipFilter(min_seconds=0.2, min_speech=0.0))[::every]
    return [c.name.split("/")[0] if "/" in c.name else spec for c in clips
            if len(c.wav) >= 8000]


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


NEURAL_INC = 64  # beside the net, the adaptive tables may follow the speaker faster
MIXES = ((1, 0, 3), (1, 1, 3), (1, 1, 4), (1, 1, 6), (2, 1, 6))  # adaptive, fast, net


def fit_neural(sequences: list[np.ndarray], speakers: list[str], tables: TokenLM
               ) -> NeuralTokenLM:
    """A probe net trained without one speaker in ten; the mixture weights that code
    those speakers' clips in the fewest bits, clip by clip and (counted three times, the
    tighter budget) joined into 30 s streams: voices the probe has not heard, as the
    coder will meet them. Then the net trained again on all of them."""
    from .lm_net import train_net

    voices = sorted(set(speakers))
    unheard = set(voices[::10]) if len(voices) >= 10 else set(voices[-1:])
    rest = [s for s, v in zip(sequences, speakers, strict=True) if v not in unheard]
    held = [s for s, v in zip(sequences, speakers, strict=True) if v in unheard]
    held = held + streams(held) + streams(held[1::2]) + streams(held[::2])

    def model(net, mix) -> NeuralTokenLM:
        return NeuralTokenLM(tables.layout, tables.prior,
                             tuple(({}, {}) for _ in tables.layout.all_levels), NEURAL_INC,
                             tables.limit, tables.legacy, mix=mix, net=net)

    probe = train_net(rest, tables.layout, epochs=3)
    cost = {mix: sum(model(probe, mix).code_bits(s, "275") for s in held) for mix in MIXES}
    frames = sum(map(len, held))
    print("mixture (adaptive, fast, net) -> bit/frame on unheard speakers: " + ", ".join(
        f"{m}: {c / frames:.3f}" for m, c in cost.items()))
    return model(train_net(sequences, tables.layout), min(cost, key=cost.get))


KEEP_PREVIOUS = 2  # token models a bundle keeps after a refit, so their packets still read


def kept_models(section: Any) -> list[dict[str, Any]]:
    """The sections of the token models a refit replaces (the current one first), without
    their v1 tables (the new section keeps those); v1-only sections are not kept."""
    if not isinstance(section, dict) or section.get("format") not in (FORMAT, NEURAL_FORMAT):
        return []
    old = {k: v for k, v in section.items() if k not in ("legacy", "previous")}
    return [old, *section.get("previous", [])][:KEEP_PREVIOUS]


def fit_lm(bundle_dir: Path, data: list[str], held_out: list[str], smoothing: float = 4.0,
           min_count: int = MIN_COUNT, cache: Path | None = None, every: int = 1,
           kind: str = "neural") -> dict[str, Any]:
    """Fit on `data` (every `every`th clip), report on `held_out` against the v1 tables,
    write the manifest."""
    bundle = Bundle.load(bundle_dir)
    current = bundle.entropy
    legacy = current.legacy if isinstance(current, TokenLM) else current
    sequences = [s for spec in data for s in spec_tokens(bundle, spec, cache, every)]
    speakers = [v for spec in data for v in spec_speakers(spec, every)]
    if not sequences:
        raise ConfigError("lm-fit: no training clips found in " + ", ".join(data))
    tables = TokenLM.fit(sequences, bundle.layout, smoothing, min_count=min_count,
                         legacy=legacy)
    model = tables if kind == "tables" else fit_neural(sequences, speakers, tables)
    v1 = legacy if legacy is not None else EntropyModel.fit(sequences, bundle.layout)
    report: dict[str, Any] = {"fit_frames": sum(len(s) for s in sequences), "tag":
                              f"{model.tag:02x}", "kind": kind, "held_out": {}}
    for spec in held_out:
        seqs = spec_tokens(bundle, spec, cache)
        report["held_out"][spec] = {"frames": sum(len(s) for s in seqs),
                                    "v1": rates(v1, seqs), "tables": rates(tables, seqs)}
        if model is not tables:
            report["held_out"][spec]["neural"] = rates(model, seqs)
    manifest = json.loads((bundle.root / MANIFEST).read_text())
    extra = manifest_extras(manifest)
    extra["entropy"] = {**model.to_manifest(), "fitted_on": data if every == 1 else
                        [f"{spec} (every {every}th clip)" for spec in data],
                        "previous": kept_models(manifest.get("entropy"))}
    write_manifest(bundle.root, manifest["codec"]["name"], bundle.codec_id, bundle.layout,
                   manifest["model"], extra)
    return report


def print_report(report: dict[str, Any]) -> None:
    print(f"token LM {report['tag']} ({report['kind']}) fitted on {report['fit_frames']} "
          "frames")
    print("| held-out data | frames | model | clip bit/frame | 1 s packets | 30 s streams "
          "| 175 mode clip |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for spec, r in report["held_out"].items():
        best = "neural" if "neural" in r else "tables"
        for name in ("v1", "tables", "neural")[: 3 if best == "neural" else 2]:
            x = r[name]
            print(f"| {spec} | {r['frames']} | {name} | {x['clip']:.3f} | {x['1s']:.3f} | "
                  f"{x['30s']:.3f} | {x['clip175']:.3f} |")
        saved = [f"{1 - r[best][k] / r['v1'][k]:.1%}" if r["v1"][k] else "n/a (under 30 s)"
                 for k in ("clip", "1s", "30s", "clip175")]
        print(f"| {spec} | | {best}: saved vs v1 | " + " | ".join(saved) + " |")
