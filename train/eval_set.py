"""A held-out evaluation folder for `gacflow eval`: whole speakers training never heard.

Clips come from staged voices (train/sources) and any folders with transcripts (e.g. a
Kokoro English set for WER); `--narrowband` folders are also written through the G.711
telephone link (8 kHz files), so narrowband WER has known text too. `subsets.json` names
the male, female, narrowband and English groups, which `gacflow eval` reports separately.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np

from gacflow.audio import read_audio, write_wav
from gacflow.errors import ConfigError

CLIP_SECONDS = (2.0, 10.0)


def _pick(files: list[Path], count: int, seed: int) -> list[Path]:
    files = list(files)
    random.Random(seed).shuffle(files)
    picked = []
    for p in files:
        import soundfile as sf

        seconds = sf.info(str(p)).duration
        if CLIP_SECONDS[0] <= seconds <= CLIP_SECONDS[1]:
            picked.append(p)
        if len(picked) == count:
            break
    return sorted(picked)


def build_eval_set(out: Path, voices: list[Path], speakers: list[str], texts: list[Path],
                   narrowband: list[Path], per_speaker: int = 8, seed: int = 0) -> dict:
    from gacflow.train.channel import g711

    from .sources import load_manifest

    out = Path(out)
    manifest = {sid: (Path(root), info) for root in voices
                for sid, info in load_manifest(root)["speakers"].items()}
    unknown = sorted(set(speakers) - set(manifest))
    if unknown:
        raise ConfigError(f"no such speaker(s) {unknown} in the staged voices")
    subsets: dict[str, list[str]] = {"male": [], "female": [], "narrowband": [], "english": []}
    info_out = {}
    for sid in speakers:
        root, info = manifest[sid]
        files = _pick(sorted((root / sid).glob("*.wav")), per_speaker, seed)
        (out / sid).mkdir(parents=True, exist_ok=True)
        for p in files:
            shutil.copy2(p, out / sid / p.name)
            if p.with_suffix(".txt").is_file():
                shutil.copy2(p.with_suffix(".txt"), out / sid / p.with_suffix(".txt").name)
        subsets["male" if info["sex"] == "m" else "female"].append(sid)
        if info["band"] == "narrow":
            subsets["narrowband"].append(sid)
        info_out[sid] = {k: info[k] for k in ("source", "sex", "sex_from", "band", "language")}
        info_out[sid]["clips"] = len(files)
    for folder in texts + narrowband:
        speakers_here = sorted(d for d in Path(folder).iterdir() if d.is_dir())
        if not speakers_here:
            raise ConfigError(f"{folder}: want one sub-folder per speaker")
    sex_of: dict[Path, str] = {}
    for folder in texts:
        for spk_dir in sorted(d for d in Path(folder).iterdir() if d.is_dir()):
            name = f"{Path(folder).name}-{spk_dir.name}"
            _copy_with_text(spk_dir, out / name)
            sex_of[spk_dir] = _sex_by_f0(out / name)
            subsets["english"].append(name)
            subsets["male" if sex_of[spk_dir] == "m" else "female"].append(name)
            info_out[name] = {"source": str(folder), "band": "wide", "sex": sex_of[spk_dir],
                              "sex_from": "median F0",
                              "clips": len(list((out / name).glob("*.wav")))}
    for folder in narrowband:
        rng = np.random.default_rng(seed)
        for spk_dir in sorted(d for d in Path(folder).iterdir() if d.is_dir()):
            name = f"{Path(folder).name}-{spk_dir.name}-g711"
            (out / name).mkdir(parents=True, exist_ok=True)
            for p in sorted(spk_dir.glob("*.wav")):
                from gacflow.audio import resample

                wav = g711(read_audio(p).astype(np.float32), rng)
                write_wav(out / name / p.name, resample(wav, 16000, 8000), 8000)
                if p.with_suffix(".txt").is_file():
                    shutil.copy2(p.with_suffix(".txt"), out / name / p.with_suffix(".txt").name)
            sex = sex_of.get(spk_dir) or _sex_by_f0(out / name)
            subsets["narrowband"].append(name)
            subsets["english"].append(name)
            subsets["male" if sex == "m" else "female"].append(name)
            info_out[name] = {"source": f"{folder} through G.711 (8 kHz)", "band": "narrow",
                              "sex": sex, "sex_from": "median F0",
                              "clips": len(list((out / name).glob("*.wav")))}
    subsets = {k: v for k, v in subsets.items() if v}
    (out / "subsets.json").write_text(json.dumps(subsets, indent=1))
    (out / "speakers.json").write_text(json.dumps(info_out, indent=1))
    return {"subsets": subsets, "speakers": info_out}


def _sex_by_f0(folder: Path) -> str:
    from .sources.stage import MALE_BELOW_HZ, median_f0

    wav = np.concatenate([read_audio(p) for p in sorted(folder.glob("*.wav"))[:20]])
    return "m" if median_f0(wav.astype(np.float32)) < MALE_BELOW_HZ else "f"


def _copy_with_text(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for p in sorted(src.glob("*.wav")):
        shutil.copy2(p, dst / p.name)
        if p.with_suffix(".txt").is_file():
            shutil.copy2(p.with_suffix(".txt"), dst / p.with_suffix(".txt").name)
