"""`Codec`: the public torch API. `encode(wav, mode) -> Tokens`, `decode(tokens) -> wav`."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from ..bitstream import SILENT
from ..bundle import Bundle
from ..entropy import EntropyModel
from ..fsq import indices_to_codes, tokens_to_indices
from ..spec import DEFAULT_MODE, FRAME_SAMPLES, TokenLayout
from ..streaming import StreamingEncoder, encode_whole
from ..timbre import TAPS, file_taps
from ..tokens import Tokens
from ..voice import VoiceSpec
from .decoder import Decoder, DecoderConfig
from .encoder import Encoder, EncoderConfig

FADE = 160  # 10 ms fades around DTX silences


class TorchEncoderRuntime:
    """`EncoderRuntime` over the torch encoder's `step` (reference backend)."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder.eval()
        self.reset()

    def reset(self) -> None:
        self.state = self.encoder.initial_state(1)

    @torch.inference_mode()
    def step(self, mel: np.ndarray) -> np.ndarray:
        # One token frame is a few small ops: extra threads only add sync cost (40x slower
        # on a busy 2-core box), so run single-threaded and restore the caller's setting.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            u, self.state = self.encoder.step(torch.from_numpy(mel)[None], self.state)
        finally:
            torch.set_num_threads(threads)
        return u[0, 0].numpy()


def load_encoder(cfg: dict[str, Any], layout: TokenLayout, state: dict) -> Encoder:
    enc = Encoder(EncoderConfig(**_tuples(cfg)), layout.all_levels)
    enc.load_state_dict(state)
    return enc.eval()


def load_decoder(cfg: dict[str, Any], layout: TokenLayout, state: dict) -> Decoder:
    dec = Decoder(DecoderConfig(**cfg), len(layout.all_levels))
    dec.load_state_dict({k: v.float() for k, v in state.items()})
    return dec.eval()


def _tuples(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}


def tokens_to_decoder_input(
    ids: np.ndarray, mode: str, layout: TokenLayout
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Token ids -> (codes [T, D], enh_present [T], active [T]); DTX frames get zero codes."""
    ids = np.asarray(ids, dtype=np.int64)
    active = ids != SILENT
    m = layout.mode(mode)
    codes = np.zeros((len(ids), len(layout.all_levels)), dtype=np.float32)
    idx = tokens_to_indices(np.where(active, ids, 0), m.levels)
    codes[:, : len(m.levels)] = indices_to_codes(idx, m.levels)
    codes[~active] = 0.0
    enh = np.full(len(ids), float(len(m.levels) == len(layout.all_levels)), dtype=np.float32)
    return codes, enh, active


def apply_dtx(wav: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Silence the samples of DTX frames, with short fades at the edges."""
    if active.all():
        return wav
    gain = np.repeat(active.astype(np.float32), FRAME_SAMPLES)[: len(wav)]
    return wav * np.convolve(gain, np.ones(FADE, np.float32) / FADE, mode="same")


def equalize(wav: torch.Tensor, taps: np.ndarray) -> torch.Tensor:
    """Filter each row of wav [B, T] by its own zero-phase FIR taps [B, TAPS] (timbre.py),
    batched on wav's device; same length out, no delay. FFT convolution: ~20x a direct
    convolution's speed on a CPU for these 129 taps."""
    t = wav.shape[-1]
    n = 1 << (t + TAPS - 2).bit_length()  # >= t + TAPS - 1: no circular wrap
    h = torch.from_numpy(np.ascontiguousarray(taps, np.float32)).to(wav.device)
    y = torch.fft.irfft(torch.fft.rfft(wav.float(), n) * torch.fft.rfft(h, n), n)
    return y[:, TAPS // 2: TAPS // 2 + t].to(wav.dtype)


class Codec:
    """A loaded codec: the encoder that makes tokens and a decoder that renders them."""

    def __init__(
        self,
        encoder: Encoder,
        decoder: Decoder,
        layout: TokenLayout,
        codec_id: str,
        device: str = "cpu",
        voice: VoiceSpec | None = None,
        entropy: EntropyModel | None = None,
    ) -> None:
        self.voice = voice
        self.entropy = entropy  # how the bundle packs tokens on the wire (None: plain)
        self.encoder = encoder.eval()
        self.decoder = decoder.eval().to(device)
        self.layout = layout
        self.codec_id = codec_id
        self.device = device

    @classmethod
    def from_bundle(
        cls, path: str | os.PathLike | None = None, decoder: str | None = None,
        device: str = "cpu",
    ) -> Codec:
        """Load a verified bundle (default: the one shipped in the package)."""
        b = Bundle.load(path)
        model = b.model_config
        enc = load_encoder(model["encoder"], b.layout, _load(b, model["encoder_file"]))
        entry = b.decoder_entry(decoder)
        dec = load_decoder(entry["config"], b.layout, _load(b, entry["file"]))
        return cls(enc, dec, b.layout, b.codec_id, device, b.voice, b.entropy)

    def streaming_encoder(self, mode: str = DEFAULT_MODE) -> StreamingEncoder:
        return StreamingEncoder(TorchEncoderRuntime(self.encoder), self.layout,
                                self.layout.mode(mode), self.voice)

    def encode(self, wav: np.ndarray, mode: str = DEFAULT_MODE) -> Tokens:
        """16 kHz mono float32 -> tokens (same as streaming the whole file at once)."""
        return encode_whole(TorchEncoderRuntime(self.encoder), self.layout, mode, self.codec_id,
                            wav, self.voice)

    def voice_condition(self, codes: list[bytes | None]) -> torch.Tensor | None:
        """Packed voice codes of a batch -> the decoder's condition [B, V] (None when the
        decoder reads no voice); a stream without a code yet gets zeros (average voice)."""
        dims = self.decoder.cfg.voice_dims
        if not dims:
            return None
        rows = np.zeros((len(codes), dims), np.float32)
        if self.voice is not None and self.voice.kind == "pca":
            for i, code in enumerate(codes):
                if code is not None:
                    rows[i] = self.voice.dequantize(self.voice.from_bytes(code))
        return torch.from_numpy(rows).to(self.device)

    @property
    def matches_timbre(self) -> bool:
        """Whether decoded audio is equalised to the stream's envelope code (timbre.py)."""
        return self.voice is not None and self.voice.kind == "envelope"

    @torch.inference_mode()
    def decode(self, tokens: Tokens) -> np.ndarray:
        """Tokens -> 16 kHz mono float32 waveform (DTX frames rendered as silence)."""
        if tokens.codec_id != self.codec_id:
            from ..errors import CodecMismatchError

            raise CodecMismatchError(
                f"tokens are from codec {tokens.codec_id!r}, this decoder holds "
                f"{self.codec_id!r}; decode with the bundle that encoded them"
            )
        if len(tokens) == 0:
            return np.zeros(0, dtype=np.float32)
        codes, enh, active = tokens_to_decoder_input(tokens.ids, tokens.mode, self.layout)
        wav = self.decoder(
            torch.from_numpy(codes)[None].to(self.device),
            torch.from_numpy(enh)[None].to(self.device),
            self.voice_condition([tokens.voice]),
        )
        if tokens.voice is not None and self.matches_timbre:
            taps = file_taps(wav[0].float().cpu().numpy(), tokens.voice, self.voice)
            wav = equalize(wav, taps[None])
        wav = apply_dtx(wav[0].float().cpu().numpy(), active)
        if tokens.num_samples:
            wav = wav[: tokens.num_samples]
        return np.clip(wav, -1.0, 1.0).astype(np.float32)


def _load(bundle: Bundle, name: str) -> dict:
    return torch.load(bundle.path(name), map_location="cpu", weights_only=True)


def config_dict(cfg: EncoderConfig | DecoderConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def torch_encoder_runtime(bundle: Bundle) -> TorchEncoderRuntime:
    """The reference backend for `gacflow.backends.encoder_runtime`."""
    model = bundle.model_config
    return TorchEncoderRuntime(
        load_encoder(model["encoder"], bundle.layout, _load(bundle, model["encoder_file"]))
    )
