"""Systems under test: our codec at each operating point/decoder, and the anchor codecs.

Every system maps a 16 kHz reference to (decoded 16 kHz audio, bytes it needed). The bytes
are what a receiver must get: the .gac file for ours (header and packet headers included),
the raw Codec 2 bit file, the Ogg Opus file (container overhead included).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from gacflow.audio import read_audio, resample, write_wav
from gacflow.errors import ConfigError, GacflowError
from gacflow.spec import SAMPLE_RATE

CODEC2_MODES = {"3200": 3200, "1200": 1200, "700C": 700, "450": 450}
OPUS_PREFIX = "opus-"
CODEC2_PREFIX = "codec2-"
TOOL_TIMEOUT = 120


@dataclass
class Coded:
    """One system's output for one clip."""

    wav: np.ndarray
    bytes: int


class System(Protocol):
    name: str
    nominal_bps: float

    def run(self, wav: np.ndarray) -> Coded: ...


def fit_length(wav: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad to `n` samples so outputs line up with the reference."""
    wav = np.asarray(wav, dtype=np.float32)
    return wav[:n] if len(wav) >= n else np.pad(wav, (0, n - len(wav)))


def to_pcm16(wav: np.ndarray) -> np.ndarray:
    return (np.clip(wav, -1.0, 1.0) * 32767.0).round().astype("<i2")


class Reference:
    """The uncoded input (16-bit PCM), to show what each metric gives on clean speech."""

    name = "reference (PCM 16 kHz)"
    nominal_bps = 256000.0

    def run(self, wav: np.ndarray) -> Coded:
        return Coded(wav.astype(np.float32), len(wav) * 2)


class Ours:
    """gacflow at one operating point with one decoder from the bundle."""

    def __init__(self, codec, mode: str, decoder: str) -> None:
        self.codec, self.mode = codec, mode
        m = codec.layout.mode(mode)
        self.width = m.bits
        self.nominal_bps = float(m.bits * 25)
        self.name = f"gacflow-{mode} ({decoder})"

    def run(self, wav: np.ndarray) -> Coded:
        from gacflow.container import dumps

        tokens = self.codec.encode(wav, self.mode)
        out = self.codec.decode(tokens)
        return Coded(fit_length(out, len(wav)),
                     len(dumps(tokens, self.width, self.codec.entropy)))


def _run_tool(cmd: list[str]) -> None:
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=TOOL_TIMEOUT)
    except subprocess.CalledProcessError as exc:
        err = exc.stderr.decode(errors="replace").strip().splitlines()
        raise GacflowError(f"{cmd[0]} failed: {err[-1] if err else exc.returncode}") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GacflowError(f"{cmd[0]} failed: {exc}") from exc


class Codec2:
    """Codec 2 (8 kHz narrowband): 16 kHz -> 8 kHz -> c2enc/c2dec -> back to 16 kHz."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.name = f"codec2-{mode}"
        self.nominal_bps = float(CODEC2_MODES[mode])

    def run(self, wav: np.ndarray) -> Coded:
        with tempfile.TemporaryDirectory(prefix="gacflow-c2-") as tmp:
            raw, bits, dec = (Path(tmp) / n for n in ("in.raw", "out.bit", "out.raw"))
            raw.write_bytes(to_pcm16(resample(wav, SAMPLE_RATE, 8000)).tobytes())
            _run_tool(["c2enc", self.mode, str(raw), str(bits)])
            _run_tool(["c2dec", self.mode, str(bits), str(dec)])
            pcm = np.frombuffer(dec.read_bytes(), dtype="<i2").astype(np.float32) / 32768.0
            size = bits.stat().st_size
        return Coded(fit_length(resample(pcm, 8000, SAMPLE_RATE), len(wav)), size)


class Opus:
    """Opus via opus-tools at a nominal bitrate (kbit/s); size is the whole Ogg file."""

    def __init__(self, kbps: float) -> None:
        self.kbps = kbps
        self.name = f"opus-{kbps:g}"
        self.nominal_bps = kbps * 1000.0

    def run(self, wav: np.ndarray) -> Coded:
        with tempfile.TemporaryDirectory(prefix="gacflow-opus-") as tmp:
            src, enc, dec = (Path(tmp) / n for n in ("in.wav", "out.opus", "out.wav"))
            write_wav(src, wav)
            _run_tool(["opusenc", "--quiet", "--bitrate", f"{self.kbps:g}", str(src), str(enc)])
            _run_tool(["opusdec", "--quiet", "--rate", str(SAMPLE_RATE), str(enc), str(dec)])
            out = read_audio(dec)
            size = enc.stat().st_size
        return Coded(fit_length(out, len(wav)), size)


def anchor(name: str) -> System:
    """`codec2-<3200|1200|700C|450>` or `opus-<kbps>` -> a runnable anchor system."""
    if name.startswith(CODEC2_PREFIX):
        mode = name[len(CODEC2_PREFIX):]
        match = {m.lower(): m for m in CODEC2_MODES}.get(mode.lower())
        if match is None:
            raise ConfigError(f"unknown Codec 2 mode {mode!r} (have {', '.join(CODEC2_MODES)})")
        _need_tools("c2enc", "c2dec", package="codec2")
        return Codec2(match)
    if name.startswith(OPUS_PREFIX):
        try:
            kbps = float(name[len(OPUS_PREFIX):])
        except ValueError as exc:
            raise ConfigError(f"bad Opus anchor {name!r} (want e.g. opus-6)") from exc
        if not 6 <= kbps <= 256:
            raise ConfigError(f"Opus bitrate {kbps:g} kbit/s outside opusenc's 6..256")
        _need_tools("opusenc", "opusdec", package="opus-tools")
        return Opus(kbps)
    raise ConfigError(f"unknown anchor {name!r} (want codec2-<mode> or opus-<kbps>)")


class ToolMissing(ConfigError):
    """An anchor's command-line codec is not installed: the run skips it with a note."""


def _need_tools(*tools: str, package: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise ToolMissing(f"anchor needs {', '.join(missing)} (install the {package} package)")
