"""A small phoneme recogniser, trained on clean speech, used as an intelligibility loss.

The adversarial decoder learns detail that sounds natural but need not be the phones the
tokens carry: pocketsphinx understands the large decoder's English less well than the
small one's, on the same tokens. A recogniser trained only on clean speech, frozen, and
run on the decoder's output turns "can a listener still tell the phones apart" into a
differentiable loss (CTC against the espeak-ng phonemes of the utterance). It is
training-only: it never ships in a bundle, and it is not the recogniser `gacflow eval`
scores with (pocketsphinx), so the decoder is not trained on the metric.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gacflow.errors import ConfigError
from gacflow.model.checkpoint import read_checkpoint, save_checkpoint
from gacflow.model.features import LogMel
from gacflow.spec import MELS_PER_TOKEN, N_MELS

from .augment import apply as apply_augment
from .ctc import BLANK, VOCAB, PhonemeSampler, ctc
from .losses import mel_l1

HOP_PER_OUTPUT = 2  # 100 Hz mel frames per output frame (50 Hz)
# Length-preserving, so labels and padding stay put; pitch (which moves formants too) and
# EQ make the recogniser indifferent to who speaks, so its gradient asks the decoder for
# phones, not for the synthetic voices it was trained on.
AUGMENT = ("gain", "pitch", "eq", "noise")


class PhonemeRecognizer(nn.Module):
    """Waveform [B, N] -> phoneme log-probabilities [B, N / 320, VOCAB] (50 Hz)."""

    def __init__(self, dim: int = 256, hidden: int = 192, utterance_mean: bool = False) -> None:
        super().__init__()
        self.dims = {"dim": dim, "hidden": hidden, "utterance_mean": utterance_mean}
        self.utterance_mean = utterance_mean
        self.mel = LogMel()
        self.register_buffer("mel_mean", torch.zeros(N_MELS))
        self.register_buffer("mel_std", torch.ones(N_MELS))
        self.inp = nn.Conv1d(N_MELS, dim, 5, padding=2)
        self.down = nn.Conv1d(dim, dim, 5, stride=HOP_PER_OUTPUT, padding=2)
        self.rnn = nn.GRU(dim, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * hidden, VOCAB)

    def features(self, wav: torch.Tensor,
                 token_frames: torch.Tensor | None = None) -> torch.Tensor:
        """Log-mel [B, T, N_MELS]; with utterance_mean, each utterance's own mean over its
        token_frames (its length before zero padding) is removed: the speaker's and the
        channel's long-term spectrum, which say nothing about the phones."""
        mel = self.mel(wav)
        if not self.utterance_mean:
            return mel
        n = mel.shape[1]
        lengths = (torch.full((len(mel),), n) if token_frames is None
                   else token_frames * MELS_PER_TOKEN)
        mask = (torch.arange(n)[None, :] < lengths.to(mel.device)[:, None]).to(mel.dtype)
        mean = (mel * mask[..., None]).sum(1) / mask.sum(1).clamp(min=1)[:, None]
        return (mel - mean[:, None, :]) * mask[..., None]

    def forward(self, wav: torch.Tensor, token_frames: torch.Tensor | None = None) -> torch.Tensor:
        x = ((self.features(wav, token_frames) - self.mel_mean) / self.mel_std).transpose(1, 2)
        x = F.gelu(self.down(F.gelu(self.inp(x)))).transpose(1, 2)
        x, _ = self.rnn(x)
        return self.out(x).log_softmax(-1)


def output_frames(token_frames: torch.Tensor) -> torch.Tensor:
    """Recogniser frames of an utterance of so many token frames (40 ms -> 2 x 20 ms)."""
    return token_frames * (MELS_PER_TOKEN // HOP_PER_OUTPUT)


def greedy_errors(log_probs: torch.Tensor, frames: torch.Tensor,
                  labels: list[list[int]]) -> tuple[int, int]:
    """(edit distance, reference length) of best-path decoding, summed over the batch."""
    errors = total = 0
    for row, n, ref in zip(log_probs.argmax(-1), frames.tolist(), labels, strict=True):
        path = row[:n].tolist()
        hyp = [p for i, p in enumerate(path) if p != BLANK and (i == 0 or p != path[i - 1])]
        errors += edit_distance(hyp, ref)
        total += len(ref)
    return errors, total


def edit_distance(a: list[int], b: list[int]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def fit_recognizer(data: Path, out: Path, steps: int, batch: int = 12, lr: float = 1e-3,
                   seed: int = 0, threads: int = 2, max_seconds: float = 8.0) -> dict:
    """Train on a corpus's utterances with phonemes; validate phone error rate on its
    held-out split (e.g. `gacflow-train corpus --valid-extra`). Resumes from `out`."""
    from tqdm import tqdm

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    train_set = PhonemeSampler(data, "train", seed, max_seconds)
    if not len(train_set):
        raise ConfigError(f"{data}/corpus.json lists no training files with phonemes "
                          "(build it from `gacflow-train synth` folders)")
    valid_set = PhonemeSampler(data, "valid", 1234, max_seconds)
    model = PhonemeRecognizer(utterance_mean=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    step, log = 0, []
    if out.exists():
        ck = read_checkpoint(out, ("model", "opt", "step", "log"))
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        step, log = ck["step"], ck["log"]
    else:
        with torch.no_grad():
            wav, frames, _ = train_set.batch(32)
            mel = model.features(wav, frames)
            model.mel_mean.copy_(mel.mean(dim=(0, 1)))
            model.mel_std.copy_(mel.std(dim=(0, 1)).clamp(min=0.1))
    rng = np.random.default_rng(seed + step)
    train_set.rng = np.random.default_rng(seed + 1 + step)
    bar = tqdm(total=steps, initial=step, desc="train recogniser", unit="step")
    t0 = time.time()
    while step < steps:
        model.train()
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / 200) * (0.1 + 0.9 * (1 - step / steps))
        wav, frames, labels = train_set.batch(batch)
        wav = torch.from_numpy(apply_augment(wav.numpy(), AUGMENT, rng, wav.shape[1]))
        loss = ctc(model(wav.float(), frames), output_frames(frames), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(ctc=f"{loss.item():.3f}")
        if step % 250 == 0 or step == steps:
            rec = {"step": step, "ctc": round(loss.item(), 4),
                   "elapsed": round(time.time() - t0, 1)}
            if len(valid_set):
                rec["valid_per"] = round(phone_error_rate(model, valid_set), 4)
            log.append(rec)
            bar.write(json.dumps(rec))
            save_recognizer(out, model, opt, step, log)
    bar.close()
    return log[-1] if log else {}


def phone_error_rate(model: PhonemeRecognizer, sampler: PhonemeSampler,
                     utterances: int = 40) -> float:
    """Greedy phone error rate on the same held-out utterances every time."""
    sampler.rng = np.random.default_rng(1234)
    model.eval()
    errors = total = 0
    with torch.no_grad():
        for _ in range(0, utterances, 8):
            wav, frames, labels = sampler.batch(8)
            e, t = greedy_errors(model(wav, frames), output_frames(frames), labels)
            errors, total = errors + e, total + t
    return errors / max(1, total)


def save_recognizer(path: Path, model: PhonemeRecognizer, opt, step: int, log: list) -> None:
    save_checkpoint(path, {"model": model.state_dict(), "dims": model.dims,
                           "opt": opt.state_dict(), "step": step, "log": log})


def load_recognizer(path: str | Path) -> PhonemeRecognizer:
    """The frozen recogniser for the intelligibility loss."""
    ck = read_checkpoint(Path(path), ("model", "dims"))
    model = PhonemeRecognizer(**ck["dims"])
    model.load_state_dict(ck["model"])
    model.eval().requires_grad_(False)
    return model


class IntelligibilityLoss:
    """CTC of the frozen recogniser on *decoded* whole utterances (275 mode), and their mel
    distance (`intel_mel_weight`: keeps the phones from being bought with artefacts the
    discriminators never see, but also pulls the decoder toward those voices)."""

    def __init__(self, recognizer: str | Path, data: Path, seed: int,
                 max_seconds: float) -> None:
        self.recognizer = load_recognizer(recognizer)
        self.train = PhonemeSampler(data, "train", seed + 13, max_seconds)
        if not len(self.train):
            raise ConfigError(f"intel_weight is set but {data}/corpus.json lists no training "
                              "files with phonemes (set `intel_data` to such a corpus)")
        self.valid = PhonemeSampler(data, "valid", 1234, max_seconds)

    def to(self, device: torch.device) -> IntelligibilityLoss:
        self.recognizer.to(device)
        return self

    def __call__(self, model: nn.Module, size: int, device: torch.device, amp,
                 sampler: PhonemeSampler | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(recogniser CTC, mel L1) of a batch of decoded utterances."""
        wav, frames, labels = (sampler or self.train).batch(size)
        wav = wav.to(device)
        with amp:
            out = model(wav, torch.ones(size, device=device)).float()
        log_probs = self.recognizer(out, frames.to(device))
        return (ctc(log_probs.cpu(), output_frames(frames), labels),
                mel_l1(model.mel, out, wav))

    @torch.no_grad()
    def validate(self, model: nn.Module, device: torch.device, amp) -> dict[str, float]:
        """Recogniser CTC on the same held-out decoded utterances every time."""
        if not len(self.valid):
            return {}
        self.valid.rng = np.random.default_rng(1234)
        loss, _ = self(model.eval(), 8, device, amp, self.valid)
        return {"valid_intel_ctc": loss.item()}
