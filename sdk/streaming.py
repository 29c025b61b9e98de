"""Backend-independent streaming encoder: audio chunks in, tokens out, bit-exact.

Audio is cut into 40 ms token frames; each frame's log-mel (NumPy) goes through an
`EncoderRuntime.step` (torch, ONNX Runtime or LiteRT, each keeping its own conv state),
and the shared FSQ step turns the latent into a token. Every frame is computed with
the same shapes whatever the chunking, so streaming and whole-file encoding agree
token for token. Latency: a token leaves as soon as its 640th sample arrives.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .features import CONTEXT, token_frame_mels
from .fsq import latent_to_tokens
from .spec import FRAME_SAMPLES, Mode, TokenLayout
from .tokens import Tokens
from .voice import VoiceSpec, VoiceStats


class EncoderRuntime(Protocol):
    """One encoder backend: stateful, one token frame per call."""

    def reset(self) -> None: ...

    def step(self, mel: np.ndarray) -> np.ndarray:
        """log-mel [4, 80] float32 -> bounded latent [D] float32."""
        ...


class StreamingEncoder:
    """Feed audio with `push` in any chunk sizes; `flush` pads and ends the stream."""

    def __init__(self, runtime: EncoderRuntime, layout: TokenLayout, mode: Mode,
                 voice: VoiceSpec | None = None) -> None:
        self.runtime = runtime
        self.layout = layout
        self.mode = mode
        self.voice = voice
        self.voice_stats = VoiceStats(voice.weighting if voice is not None else 1.0)
        self.reset()

    def reset(self) -> None:
        self.runtime.reset()
        self._audio = np.zeros(CONTEXT, dtype=np.float32)  # history + not yet encoded
        self.samples_in = 0
        self.frames_out = 0
        self.voice_stats.reset()

    def voice_code(self) -> bytes | None:
        """The packed voice code of the stream so far (None: codec without one, or no audio)."""
        stat = self.voice_stats.mean() if self.voice is not None else None
        return None if stat is None else self.voice.to_bytes(self.voice.quantize(stat))

    def push(self, audio: np.ndarray) -> np.ndarray:
        """Add 16 kHz float32 samples; return tokens of the frames completed by them."""
        chunk = np.asarray(audio, dtype=np.float32).reshape(-1)
        self.samples_in += len(chunk)
        self._audio = np.concatenate([self._audio, chunk])
        n = (len(self._audio) - CONTEXT) // FRAME_SAMPLES
        return self._encode_frames(n)

    def _latents(self, n: int) -> np.ndarray:
        out = np.empty((n, len(self.layout.all_levels)), dtype=np.float32)
        for j in range(n):
            span = self._audio[j * FRAME_SAMPLES : j * FRAME_SAMPLES + CONTEXT + FRAME_SAMPLES]
            mel = token_frame_mels(span)
            if self.voice is not None:
                self.voice_stats.push(mel)
            out[j] = self.runtime.step(mel)[: out.shape[1]]
        self._audio = self._audio[n * FRAME_SAMPLES :]
        return out

    def _encode_frames(self, n: int) -> np.ndarray:
        if n <= 0:
            return np.zeros(0, dtype=np.int64)
        tokens = latent_to_tokens(self._latents(n), self.layout, self.mode)
        self.frames_out += n
        return tokens

    def flush(self) -> np.ndarray:
        """Zero-pad the last partial frame, encode it, and reset for a new stream.

        A stream of at least one sample always yields at least one frame.
        """
        pending = len(self._audio) - CONTEXT  # < FRAME_SAMPLES after every push
        if pending > 0:
            pad = np.zeros(FRAME_SAMPLES - pending, np.float32)
            self._audio = np.concatenate([self._audio, pad])
        tokens = self._encode_frames((len(self._audio) - CONTEXT) // FRAME_SAMPLES)
        self.reset()
        return tokens


def encode_whole(
    runtime: EncoderRuntime, layout: TokenLayout, mode: str, codec_id: str, wav: np.ndarray,
    voice: VoiceSpec | None = None,
) -> Tokens:
    """Whole-file encoding is streaming in one chunk: one code path, identical tokens.
    The voice code is the whole file's (what a live stream converges to)."""
    enc = StreamingEncoder(runtime, layout, layout.mode(mode), voice)
    ids = enc.push(wav)
    code = enc.voice_code()
    ids = np.concatenate([ids, enc.flush()])
    return Tokens(ids, str(mode), codec_id, num_samples=len(wav), voice=code)
