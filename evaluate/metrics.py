"""Quality metrics. Each one is optional: a missing package makes its column "n/a" with a note.

Intrusive metrics (STOI, ESTOI, PESQ-WB, speaker similarity) compare the decoded clip with
the reference; WER compares an ASR transcript with the clip's text; DistillMOS judges the
decoded clip alone. `score` returns None where a metric does not apply to a clip (e.g. no
transcript) and NaN where it failed on that clip (e.g. PESQ finds no speech).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from gacflow.errors import ConfigError
from gacflow.spec import SAMPLE_RATE

from .data import Clip


class MetricUnavailable(Exception):
    """The metric's package or model cannot be loaded; the message says how to fix it."""


class Metric:
    """Base: lazy `load()` (once), then `score(ref, deg, clip)` per decoded clip."""

    key = ""
    column = ""
    hint = ""  # pip package(s) that provide it

    def __init__(self) -> None:
        self._loaded = False
        self.error: str | None = None

    def available(self) -> bool:
        """Load on first call; remember why it failed so the report can say so."""
        if not self._loaded and self.error is None:
            try:
                self.load()
                self._loaded = True
            except MetricUnavailable as exc:
                self.error = str(exc)
            except Exception as exc:  # a broken optional package must not stop the run
                self.error = f"{self.column} failed to load: {type(exc).__name__}: {exc}"
        return self._loaded

    def load(self) -> None:
        raise NotImplementedError

    def score(self, ref: np.ndarray, deg: np.ndarray, clip: Clip) -> float | None:
        raise NotImplementedError

    def _import(self, module: str) -> Any:
        import importlib

        try:
            return importlib.import_module(module)
        except ImportError as exc:
            raise MetricUnavailable(
                f"{self.column}: {module} not installed (pip install {self.hint})"
            ) from exc


class Stoi(Metric):
    key, column, hint = "stoi", "STOI", "pystoi"
    extended = False

    def load(self) -> None:
        self._stoi = self._import("pystoi").stoi

    def score(self, ref: np.ndarray, deg: np.ndarray, clip: Clip) -> float | None:
        return float(self._stoi(ref, deg, SAMPLE_RATE, extended=self.extended))


class Estoi(Stoi):
    key, column = "estoi", "ESTOI"
    extended = True


class Pesq(Metric):
    key, column, hint = "pesq", "PESQ-WB", "pesq"

    def load(self) -> None:
        self._pesq = self._import("pesq").pesq

    def score(self, ref: np.ndarray, deg: np.ndarray, clip: Clip) -> float | None:
        try:
            return float(self._pesq(SAMPLE_RATE, ref, deg, "wb"))
        except Exception:  # PESQ raises on clips it finds no utterance in
            return math.nan


class SpeakerSim(Metric):
    """Cosine similarity of Resemblyzer d-vectors (GE2E speaker encoder it ships)."""

    key, column, hint = "spksim", "speaker sim", "resemblyzer --no-deps webrtcvad-wheels"

    def load(self) -> None:
        rz = self._import("resemblyzer")
        self._prep = rz.preprocess_wav
        self._enc = rz.VoiceEncoder(device="cpu", verbose=False)
        self._ref_cache: dict[str, np.ndarray] = {}

    def _embed(self, wav: np.ndarray) -> np.ndarray | None:
        wav = self._prep(wav.astype(np.float32), source_sr=SAMPLE_RATE)
        if len(wav) < SAMPLE_RATE // 4:  # all trimmed as silence
            return None
        return self._enc.embed_utterance(wav)

    def score(self, ref: np.ndarray, deg: np.ndarray, clip: Clip) -> float | None:
        if clip.name not in self._ref_cache:
            self._ref_cache[clip.name] = self._embed(ref)
        a, b = self._ref_cache[clip.name], self._embed(deg)
        if a is None or b is None:
            return math.nan
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-9))


def normalise_text(text: str) -> str:
    """Lower-case words only, so punctuation and case do not count as ASR errors."""
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def is_english(text: str) -> bool:
    """The ASR model is en-us: skip transcripts whose letters are mostly non-Latin."""
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(c.isascii() for c in letters) / len(letters) > 0.9


class Wer(Metric):
    """Word error rate of pocketsphinx (en-us) on the decoded clip; a relative measure."""

    key, column, hint = "wer", "WER", "pocketsphinx jiwer"

    def load(self) -> None:
        ps = self._import("pocketsphinx")
        self._jiwer = self._import("jiwer")
        self._decoder = ps.Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
        self._cmn = self._decoder.get_cmn()

    def transcribe(self, wav: np.ndarray) -> str:
        """Each clip from the same starting point: pocketsphinx's live cepstral mean and noise
        estimate carry over between utterances, so a transcript depended on the clip (of any
        system) decoded before it."""
        pcm = (np.clip(wav, -1, 1) * 32767).astype("<i2").tobytes()
        d = self._decoder
        d.reinit_feat()  # noise estimate and cepstral mean back to their initial state
        d.set_cmn(self._cmn)
        d.start_utt()
        d.process_raw(pcm, full_utt=True)
        d.end_utt()
        hyp = d.hyp()
        return hyp.hypstr if hyp is not None else ""

    def score(self, ref: np.ndarray, deg: np.ndarray, clip: Clip) -> float | None:
        if not clip.text or not is_english(clip.text):
            return None
        truth = normalise_text(clip.text)
        if not truth:
            return None
        return float(self._jiwer.wer(truth, normalise_text(self.transcribe(deg))))


class DistillMos(Metric):
    """DistillMOS: a small MOS predictor distilled from XLS-R SQA; weights ship in the wheel."""

    key, column, hint = "dmos", "DistillMOS", "distillmos"

    def load(self) -> None:
        import contextlib
        import io

        import torch

        with _without_torchaudio():
            dm = self._import("distillmos")
        self._torch = torch
        with contextlib.redirect_stdout(io.StringIO()):  # it prints where it loaded weights
            self._model = dm.ConvTransformerSQAModel().eval()
        self._window = int(getattr(dm.sqa, "SEQ_LEN", 122880))

    def score(self, ref: np.ndarray, deg: np.ndarray, clip: Clip) -> float | None:
        """Mean over evenly spread 7.68 s windows (the model's input length).

        The library's own segmenting hops by 1 s, i.e. ~8x overlap and a batch that grows
        with the clip (minutes of CPU and GBs of memory for a 1-minute clip); windows that
        just cover the clip give the same score on clips up to 7.68 s and nearly the same
        on longer ones, at a fraction of the cost.
        """
        torch = self._torch
        seg = self._window
        wav = np.ascontiguousarray(deg, dtype=np.float32)
        over = max(len(wav) - seg, 0)
        starts = np.linspace(0, over, int(np.ceil(over / seg)) + 1).astype(int)
        with torch.inference_mode():
            scores = [float(self._model(torch.from_numpy(wav[s: s + seg])[None]).reshape(-1)[0])
                      for s in starts]
        return float(np.mean(scores))


@contextmanager
def _without_torchaudio() -> Iterator[None]:
    """distillmos imports torchaudio only for its file-loading CLI, which we do not use.

    PyPI has no torchaudio built for torch 2.13 (2.11's CUDA wheel fails to load), so when
    torchaudio cannot be imported, an empty placeholder stands in for the import and is
    removed again afterwards: our waveforms go to the model as tensors.
    """
    import importlib.util
    import sys
    import types

    try:
        usable = importlib.util.find_spec("torchaudio") is not None
        if usable:
            import torchaudio  # noqa: F401
    except Exception:
        usable = False
    if usable:
        yield
        return
    had = sys.modules.pop("torchaudio", None)
    sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    try:
        yield
    finally:
        sys.modules.pop("torchaudio", None)
        if had is not None:
            sys.modules["torchaudio"] = had


METRICS: dict[str, type[Metric]] = {
    m.key: m for m in (Stoi, Estoi, Pesq, SpeakerSim, Wer, DistillMos)
}
DEFAULT_METRICS = tuple(METRICS)


def make_metrics(keys: list[str]) -> list[Metric]:
    """Metric names -> fresh metric objects; an unknown name is a user error."""
    unknown = [k for k in keys if k not in METRICS]
    if unknown:
        raise ConfigError(f"unknown metric {unknown[0]!r} (have {', '.join(METRICS)})")
    return [METRICS[k]() for k in keys]
