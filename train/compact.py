"""Compact corpus shards: Ogg Opus copies of a corpus's int16 shards, for carrying a
corpus to a rented GPU machine (a few tens of MB instead of hundreds).

`pack` writes each split as numbered Opus chunks plus `compact.json` (chunk lengths) and
copies `corpus.json`; `unpack_if_needed` turns them back into `<split>.npy` shards of
exactly the original length, so file offsets in `corpus.json` (phoneme utterances) still
hold. Opus at ~25 kbit/s is near-transparent for 16 kHz speech; the original shards stay
the reference for evaluation.
"""

from __future__ import annotations

import io
import json
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from gacflow.errors import ConfigError
from gacflow.fileio import atomic_path
from gacflow.spec import SAMPLE_RATE

CHUNK_SECONDS = 600  # one Opus file per 10 min: decoded in parallel on the GPU machine
MANIFEST = "compact.json"


def _encode_chunk(pcm: np.ndarray, level: float) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, pcm, SAMPLE_RATE, format="OGG", subtype="OPUS", compression_level=level)
    return buf.getvalue()


def _decode_chunk(path: Path, samples: int) -> np.ndarray:
    import soundfile as sf

    pcm, rate = sf.read(path, dtype="int16")
    if rate != SAMPLE_RATE:
        raise ConfigError(f"{path}: {rate} Hz, expected {SAMPLE_RATE}")
    out = np.zeros(samples, np.int16)  # the codec keeps the length; guard against +-1 frame
    out[: min(samples, len(pcm))] = pcm[:samples]
    return out


def pack(data: Path, out: Path, level: float = 0.92, splits: tuple[str, ...] = ("train", "valid"),
         workers: int = 2) -> dict:
    """Write Opus chunks of each split's shard to `out`; returns the compact manifest."""
    from tqdm import tqdm

    if not (data / "corpus.json").is_file():
        raise ConfigError(f"{data} is not a corpus folder (no corpus.json)")
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(data / "corpus.json", out / "corpus.json")
    manifest: dict = {"level": level, "splits": {}}
    step = CHUNK_SECONDS * SAMPLE_RATE
    for split in splits:
        if not (data / f"{split}.npy").is_file():
            raise ConfigError(f"{data} has no {split}.npy shard (build it with gacflow-train "
                              "corpus)")
        shard = np.load(data / f"{split}.npy", mmap_mode="r")
        starts = range(0, len(shard), step)
        chunks = []
        with ProcessPoolExecutor(workers) as pool:
            jobs = [pool.submit(_encode_chunk, np.array(shard[s : s + step]), level)
                    for s in starts]
            for i, (s, job) in enumerate(tqdm(list(zip(starts, jobs, strict=True)),
                                              desc=f"pack {split}", unit="chunk")):
                name = f"{split}.{i:03d}.ogg"
                with atomic_path(out / name) as tmp:
                    tmp.write_bytes(job.result())
                chunks.append({"file": name, "samples": int(min(step, len(shard) - s))})
        manifest["splits"][split] = chunks
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def unpack_if_needed(data: Path, workers: int = 8) -> None:
    """Decode a compact corpus's Opus chunks into `<split>.npy` shards, once."""
    meta_path = data / MANIFEST
    if not meta_path.is_file():
        return
    meta = json.loads(meta_path.read_text())
    for split, chunks in meta["splits"].items():
        if (data / f"{split}.npy").is_file():
            continue
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_decode_chunk, [data / c["file"] for c in chunks],
                                  [c["samples"] for c in chunks]))
        with atomic_path(data / f"{split}.npy") as tmp, tmp.open("wb") as f:
            np.save(f, np.concatenate(parts) if parts else np.zeros(0, np.int16))
