"""Voice-activity detection per 40 ms token frame: silero-vad (ONNX, no torch) or an energy gate.

silero-vad ships its ONNX model inside its PyPI wheel, but the wheel declares torch as a
dependency. The agent never imports the `silero_vad` package: it only locates the
package's folder (importlib.util.find_spec does not execute it) and runs its
`data/silero_vad_16k_op15.onnx` (or `data/silero_vad.onnx`) with ONNX Runtime. Install the
wheel without its dependencies: `pip install --no-deps silero-vad` (about 11 MB, MIT
licence), or point --vad-model at a copy of the model. Without it the energy gate is used.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Protocol

import numpy as np

from gacflow.bitstream import SILENT
from gacflow.errors import ConfigError
from gacflow.spec import FRAME_SAMPLES, SAMPLE_RATE

log = logging.getLogger("gacflow.edge.vad")

SILERO_WINDOW = 512  # samples per silero-vad call at 16 kHz (32 ms)
SILERO_CONTEXT = 64  # samples of the previous window the v5 model expects in front
# the 16 kHz-only graph is smaller in memory (about 9 MB less RSS); older wheels lack it
SILERO_FILES = ("silero_vad_16k_op15.onnx", "silero_vad.onnx")


class FrameVad(Protocol):
    """Feed audio in any chunks; get one speech decision per completed 40 ms frame."""

    name: str

    def push(self, audio: np.ndarray) -> np.ndarray: ...

    def reset(self) -> None: ...


def find_silero_model() -> Path | None:
    """silero_vad.onnx inside the installed silero-vad package, without importing it."""
    try:
        spec = importlib.util.find_spec("silero_vad")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for name in SILERO_FILES:
        for folder in spec.submodule_search_locations:
            model = Path(folder) / "data" / name
            if model.is_file():
                return model
    return None


class _Framer:
    """Cuts pushed audio into whole 40 ms frames."""

    def __init__(self) -> None:
        self._buf = np.zeros(0, np.float32)

    def frames(self, audio: np.ndarray) -> list[np.ndarray]:
        self._buf = np.concatenate([self._buf, np.asarray(audio, np.float32).reshape(-1)])
        n = len(self._buf) // FRAME_SAMPLES
        out = [self._buf[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(n)]
        self._buf = self._buf[n * FRAME_SAMPLES :]
        return out

    def reset(self) -> None:
        self._buf = np.zeros(0, np.float32)


class EnergyVad:
    """Frame energy above an adaptive noise floor (and above an absolute floor) is speech.

    The noise floor follows the quietest recent frames quickly and rises slowly, so a
    steady background hum is learnt while speech does not drag the floor up.
    """

    name = "energy"

    def __init__(self, margin_db: float = 12.0, floor_dbfs: float = -55.0) -> None:
        self.margin_db = margin_db
        self.floor_dbfs = floor_dbfs
        self._framer = _Framer()
        self.reset()

    def reset(self) -> None:
        self._framer.reset()
        self.noise_db = -70.0

    def push(self, audio: np.ndarray) -> np.ndarray:
        out = []
        for frame in self._framer.frames(audio):
            db = 10.0 * np.log10(float(np.mean(frame.astype(np.float64) ** 2)) + 1e-10)
            rate = 0.3 if db < self.noise_db else 0.01
            self.noise_db += rate * (db - self.noise_db)
            out.append(db > max(self.floor_dbfs, self.noise_db + self.margin_db))
        return np.array(out, dtype=bool)


class SileroVad:
    """silero-vad v5 through ONNX Runtime: 32 ms windows, hysteresis on the probability.

    A frame is speech when any window ending inside it says so; the decision uses only
    audio up to the end of the frame (no look-ahead).
    """

    name = "silero"

    def __init__(self, model: str | Path, threshold: float = 0.5) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.enable_cpu_mem_arena = False  # tiny tensors: the arena only costs memory
        try:
            self.session = ort.InferenceSession(str(model), opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ConfigError(f"vad-model {model}: not a loadable ONNX model ({exc})") from exc
        self.threshold = threshold
        self.neg_threshold = max(0.0, threshold - 0.15)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), np.float32)
        self._context = np.zeros(SILERO_CONTEXT, np.float32)
        self._pending = np.zeros(0, np.float32)  # samples not yet in a silero window
        self._frame_fill = 0  # samples of the current 40 ms frame seen so far
        self._frame_speech = False
        self._triggered = False
        self.last_prob = 0.0

    def _window(self, x: np.ndarray) -> bool:
        inp = np.concatenate([self._context, x])[None, :]
        prob, self._state = self.session.run(
            None, {"input": inp, "state": self._state, "sr": np.array(SAMPLE_RATE, np.int64)}
        )
        self._context = x[-SILERO_CONTEXT:]
        self.last_prob = float(prob.reshape(-1)[0])
        if self.last_prob >= self.threshold:
            self._triggered = True
        elif self.last_prob < self.neg_threshold:
            self._triggered = False
        return self._triggered

    def push(self, audio: np.ndarray) -> np.ndarray:
        out: list[bool] = []
        x = np.asarray(audio, np.float32).reshape(-1)
        pos = 0
        while pos < len(x):
            # advance to whichever comes first: a full silero window or the frame's end
            to_window = SILERO_WINDOW - len(self._pending)
            to_frame = FRAME_SAMPLES - self._frame_fill
            step = min(to_window, to_frame, len(x) - pos)
            self._pending = np.concatenate([self._pending, x[pos : pos + step]])
            self._frame_fill += step
            pos += step
            if len(self._pending) == SILERO_WINDOW:
                self._frame_speech |= self._window(self._pending)
                self._pending = np.zeros(0, np.float32)
            if self._frame_fill == FRAME_SAMPLES:
                out.append(self._frame_speech or self._triggered)
                self._frame_speech = False
                self._frame_fill = 0
        return np.array(out, dtype=bool)


def make_vad(kind: str = "auto", model: str = "", threshold: float = 0.5) -> FrameVad:
    """'auto' -> silero-vad when its model is found, else the energy gate."""
    if kind == "energy":
        return EnergyVad()
    path = Path(model) if model else find_silero_model()
    if path is not None and not path.is_file():
        raise ConfigError(f"vad-model {path}: no such file")
    if path is None:
        if kind == "silero":
            raise ConfigError("vad silero: model not found; `pip install --no-deps silero-vad` "
                              "or pass --vad-model PATH/silero_vad.onnx")
        log.info("event=vad_fallback vad=energy reason=silero_vad_not_installed")
        return EnergyVad()
    return SileroVad(path, threshold)


class DtxGate:
    """Turns per-frame speech decisions into which frames are sent.

    A frame is sent if speech is within `preroll` frames after it (so onsets are not cut;
    this delays tokens by `preroll` frames, a fixed look-ahead) or within `hangover`
    frames before it (so word endings and short pauses survive). Everything else is
    marked SILENT.
    """

    def __init__(self, hangover_frames: int = 5, preroll_frames: int = 2) -> None:
        self.hangover = hangover_frames
        self.preroll = preroll_frames
        self.reset()

    def reset(self) -> None:
        self._tokens: list[int] = []
        self._speech: list[bool] = []
        self._since_speech = 10**9  # frames since the last speech frame (released ones)

    def push(self, tokens: np.ndarray, speech: np.ndarray) -> np.ndarray:
        """Add frames; return the released frames' tokens, SILENT where not sent."""
        self._tokens.extend(int(t) for t in tokens)
        self._speech.extend(bool(s) for s in speech)
        n = min(len(self._tokens), len(self._speech)) - self.preroll
        return self._release(max(0, n))

    def flush(self) -> np.ndarray:
        """Release everything held back (end of stream); frames without a decision are sent."""
        missing = len(self._tokens) - len(self._speech)
        self._speech.extend([True] * max(0, missing))
        out = self._release(len(self._tokens))
        self.reset()
        return out

    def _release(self, n: int) -> np.ndarray:
        out = np.empty(n, dtype=np.int64)
        for i in range(n):
            if self._speech[i]:
                self._since_speech = 0
            else:
                self._since_speech += 1
            ahead = any(self._speech[i + 1 : i + 1 + self.preroll])
            send = self._since_speech <= self.hangover or ahead
            out[i] = self._tokens[i] if send else SILENT
        del self._tokens[:n]
        del self._speech[:n]
        return out
