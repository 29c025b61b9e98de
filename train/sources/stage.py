"""Stage every voice source into `<out>/<speaker>/*.wav` and the speaker manifest.

Resumable: a speaker whose folder holds `.done` is skipped, so an interrupted run picks up
at the speaker it was on. Each speaker is capped (`max_minutes`) so that one long source
(Joe in the Queen, 25-minute Asterisk voices) does not outweigh a dozen short ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gacflow.audio import resample, write_wav
from gacflow.errors import ConfigError

from . import SOURCES, Speaker, entry, save_manifest, speakers_of

MIN_SECONDS = 0.5
MALE_BELOW_HZ = 165.0  # median F0 under this: a male voice (adult male ~85-155, female ~165-255)
F0_SAMPLE_SECONDS = 120.0
ROW = 640 * 25  # analyse in 1 s rows


def stage(out: Path, sources: list[str] | None = None, cache: Path | None = None,
          max_minutes: float = 12.0) -> dict:
    from tqdm import tqdm

    out = Path(out)
    cache = Path(cache) if cache else out / ".cache"
    names = sources or list(SOURCES)
    unknown = sorted(set(names) - set(SOURCES))
    if unknown:
        raise ConfigError(f"unknown voice source(s) {unknown}; known: {', '.join(SOURCES)}")
    out.mkdir(parents=True, exist_ok=True)
    manifest = _existing(out)
    for name in names:
        for spk in speakers_of(name, cache):
            folder = out / spk.id
            if (folder / ".done").is_file() and spk.id in manifest["speakers"]:
                continue
            folder.mkdir(parents=True, exist_ok=True)
            manifest["speakers"][spk.id] = _stage_speaker(spk, folder, max_minutes, tqdm)
            save_manifest(out, manifest)
            (folder / ".done").touch()
    return manifest


def _existing(out: Path) -> dict:
    import json

    path = out / "speakers.json"
    return json.loads(path.read_text()) if path.is_file() else {"speakers": {}}


def _stage_speaker(spk: Speaker, folder: Path, max_minutes: float, tqdm) -> dict:
    seconds, files, rate, f0_audio = 0.0, 0, 0, []
    bar = tqdm(desc=f"voices {spk.id}", unit="s", total=round(60 * max_minutes))
    for utt in spk.utterances():
        dur = len(utt.wav) / utt.sample_rate
        if dur < MIN_SECONDS or not np.any(np.abs(utt.wav) > 1e-3):
            continue
        write_wav(folder / f"{utt.name}.wav", np.clip(utt.wav, -1, 1), utt.sample_rate)
        if utt.text:
            (folder / f"{utt.name}.txt").write_text(utt.text + "\n", encoding="utf-8")
        seconds, files, rate = seconds + dur, files + 1, utt.sample_rate
        if sum(len(a) for a in f0_audio) < F0_SAMPLE_SECONDS * 16000:
            f0_audio.append(resample(utt.wav, utt.sample_rate, 16000))
        bar.update(round(dur))
        if seconds >= 60 * max_minutes:
            break
    bar.close()
    if not files:
        raise ConfigError(f"voice {spk.id} ({spk.source}): no usable audio")
    sex, sex_from = spk.sex, spk.sex_from
    median = median_f0(np.concatenate(f0_audio))
    if sex == "?":
        sex, sex_from = ("m" if median < MALE_BELOW_HZ else "f"), "median F0"
    d = entry(spk, files, seconds, rate, sex, sex_from)
    d["median_f0_hz"] = round(median, 1)
    return d


def median_f0(wav: np.ndarray) -> float:
    """Median F0 of the voiced 40 ms frames (YIN, as the pitch auxiliary computes it)."""
    import torch

    from gacflow.train.pitch import f0_targets

    n = len(wav) // ROW * ROW
    if n == 0:
        return 0.0
    rows = torch.from_numpy(wav[:n].astype(np.float32)).reshape(-1, ROW)
    log2_f0, voiced = f0_targets(rows)
    f0 = 2.0 ** log2_f0[voiced].double()
    return float(f0.median()) if f0.numel() else 0.0
