"""Semantic auxiliary: phoneme CTC read from the token sequence, where transcripts exist.

Reconstruction losses alone let the encoder spend its 10 bits on whatever lowers spectral
error (pitch, loudness, room). A small head that must read the phonemes from the
*quantized* codes pushes the tokens toward what was said, the part a generative decoder
cannot invent. The head is training-only: it never ships in a bundle.

Phonemes are espeak-ng `-x` strings (what `gacflow-train synth` writes as `.phn`), read
one ASCII symbol at a time with stress marks and word breaks dropped: a fixed alphabet,
so every corpus and checkpoint agrees on the ids without a vocabulary file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gacflow.spec import FRAME_SAMPLES

IGNORED = set("',_ \t\n")  # stress marks, pauses, word breaks
SYMBOLS = [chr(c) for c in range(33, 127) if chr(c) not in IGNORED]
BLANK = 0
VOCAB = len(SYMBOLS) + 1  # + the CTC blank
_INDEX = {s: i + 1 for i, s in enumerate(SYMBOLS)}


def phoneme_ids(phonemes: str) -> list[int]:
    """espeak-ng `-x` phonemes -> label ids (1..VOCAB-1); unknown characters are skipped."""
    return [_INDEX[c] for c in phonemes if c in _INDEX]


class PhonemeHead(nn.Module):
    """Codes [B, T, D] -> per-frame phoneme log-probabilities [B, T, VOCAB]."""

    def __init__(self, code_dims: int, dim: int = 128) -> None:
        super().__init__()
        self.inp = nn.Conv1d(code_dims, dim, 5, padding=2)
        self.mid = nn.Conv1d(dim, dim, 5, padding=2)
        self.out = nn.Linear(dim, VOCAB)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.inp(codes.transpose(1, 2)))
        h = F.gelu(self.mid(h)).transpose(1, 2)
        return self.out(h).log_softmax(-1)


def ctc(log_probs: torch.Tensor, frames: torch.Tensor, labels: list[list[int]]) -> torch.Tensor:
    """Mean CTC loss per label; utterances too short for their labels contribute zero."""
    targets = torch.tensor([i for lab in labels for i in lab], dtype=torch.long)
    lengths = torch.tensor([len(lab) for lab in labels], dtype=torch.long)
    return F.ctc_loss(log_probs.transpose(0, 1).float(), targets, frames, lengths,
                      blank=BLANK, reduction="mean", zero_infinity=True)


class PhonemeSampler:
    """Whole utterances that have phonemes, from a corpus shard and its corpus.json."""

    def __init__(self, corpus: Path, split: str, seed: int, max_seconds: float = 8.0) -> None:
        manifest = json.loads((corpus / "corpus.json").read_text())
        files = manifest["splits"].get(split, {}).get("files", [])
        limit = int(max_seconds * 16000)
        self.items = [(f["offset"], f["samples"], phoneme_ids(f["phonemes"]))
                      for f in files if f.get("phonemes") and f["samples"] <= limit]
        self.items = [it for it in self.items if it[2]]
        self.audio = np.load(corpus / f"{split}.npy", mmap_mode="r") if self.items else None
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
        """Zero-padded audio [B, N], token frames per utterance [B], label ids."""
        picks = [self.items[i] for i in self.rng.integers(0, len(self.items), size)]
        n = max(samples for _, samples, _ in picks)
        n += -n % FRAME_SAMPLES
        wav = np.zeros((size, n), np.float32)
        for row, (offset, samples, _) in zip(wav, picks, strict=True):
            row[:samples] = self.audio[offset : offset + samples] / 32768.0
        frames = torch.tensor([samples // FRAME_SAMPLES for _, samples, _ in picks])
        return torch.from_numpy(wav), frames, [labels for _, _, labels in picks]
