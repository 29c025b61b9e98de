"""Audio sources: file (optionally paced at real time), raw PCM on stdin, microphone.

Every source yields 16 kHz mono float32 blocks of `block` samples (the last may be
shorter) and stops at end of input or when `stop()` is called. Small blocks (20 ms by
default) bound the capture latency: a token frame is encoded as soon as its 40 ms are in.

stdin takes raw little-endian signed 16-bit mono PCM at 16 kHz, what
`arecord -f S16_LE -r 16000 -c 1 -t raw` writes.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from collections.abc import Iterator
from typing import BinaryIO, Protocol

import numpy as np

from gacflow.audio import pcm16_to_float, read_audio
from gacflow.errors import AudioError, ConfigError
from gacflow.spec import SAMPLE_RATE


class Source(Protocol):
    name: str
    live: bool  # True: runs until EOF/stop (mic, stdin); False: a finite file

    def blocks(self) -> Iterator[np.ndarray]: ...

    def stop(self) -> None: ...


class FileSource:
    """A WAV/FLAC file, resampled to 16 kHz; `pace`=1 plays it at real-time speed."""

    live = False

    def __init__(self, path: str, block: int, pace: float = 0.0,
                 max_seconds: float | None = None) -> None:
        self.name = path
        self.block = block
        self.pace = pace
        self.audio = read_audio(path, max_seconds=max_seconds)
        self._stop = threading.Event()

    def blocks(self) -> Iterator[np.ndarray]:
        start = time.monotonic()
        for i in range(0, len(self.audio), self.block):
            if self._stop.is_set():
                return
            if self.pace > 0:
                due = start + (i + self.block) / SAMPLE_RATE / self.pace
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
            yield self.audio[i : i + self.block]

    def stop(self) -> None:
        self._stop.set()


class StdinSource:
    """Raw S16_LE 16 kHz mono PCM from a pipe (arecord, ffmpeg, sox)."""

    live = True
    name = "stdin"

    def __init__(self, block: int, stream: BinaryIO | None = None) -> None:
        self.block = block
        self.stream = stream if stream is not None else sys.stdin.buffer
        self._stop = threading.Event()

    def _read(self, n: int) -> bytes | None:
        """Up to n bytes; b"" at EOF; None when nothing arrived within 0.2 s (so that
        SIGTERM is noticed even while the pipe is quiet)."""
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            return self.stream.read(n)
        ready, _, _ = select.select([fd], [], [], 0.2)
        return os.read(fd, n) if ready else None

    def blocks(self) -> Iterator[np.ndarray]:
        want = self.block * 2
        carry = b""
        while not self._stop.is_set():
            data = self._read(want - len(carry))
            if data is None:
                continue
            if not data:
                break
            carry += data
            if len(carry) >= want:
                yield pcm16_to_float(carry[:want])
                carry = carry[want:]
        usable = len(carry) - len(carry) % 2
        if usable:
            yield pcm16_to_float(carry[:usable])

    def stop(self) -> None:
        self._stop.set()


def _import_pyaudio():
    try:
        import pyaudio
    except ImportError as exc:
        raise ConfigError(
            "microphone input needs PyAudio: sudo apt install portaudio19-dev && "
            "pip install 'gacflow[mic]' (or pipe arecord into --input -)"
        ) from exc
    return pyaudio


def list_devices() -> list[tuple[int, str, int, int]]:
    """(index, name, input channels, default rate) of every capture device."""
    pyaudio = _import_pyaudio()
    pa = pyaudio.PyAudio()
    try:
        out = []
        for i in range(pa.get_device_count()):
            info = pa.get_device_info_by_index(i)
            if int(info.get("maxInputChannels", 0)) > 0:
                out.append((i, str(info["name"]), int(info["maxInputChannels"]),
                            int(info.get("defaultSampleRate", 0))))
        return out
    finally:
        pa.terminate()


def pick_device(devices: list[tuple[int, str, int, int]], wanted: str) -> int | None:
    """Index of the device named (substring, case-insensitive) or numbered `wanted`."""
    if not devices:
        raise AudioError("no microphone found (no capture device; check `arecord -l`)")
    if not wanted:
        return None  # the system default
    if wanted.isdigit():
        if int(wanted) in {d[0] for d in devices}:
            return int(wanted)
        raise ConfigError(f"input-device {wanted}: no capture device with that index "
                          "(see --list-devices)")
    hits = [d[0] for d in devices if wanted.lower() in d[1].lower()]
    if not hits:
        raise ConfigError(f"input-device {wanted!r}: no capture device of that name "
                          "(see --list-devices)")
    return hits[0]


class MicSource:
    """A PortAudio capture device, 16 kHz mono 16-bit (PortAudio/ALSA resample if needed)."""

    live = True

    def __init__(self, block: int, device: str = "") -> None:
        self.block = block
        self.pyaudio = _import_pyaudio()
        self.index = pick_device(list_devices(), device)
        self.name = f"mic:{self.index if self.index is not None else 'default'}"
        self._stop = threading.Event()

    def blocks(self) -> Iterator[np.ndarray]:
        pa = self.pyaudio.PyAudio()
        try:
            stream = pa.open(format=self.pyaudio.paInt16, channels=1, rate=SAMPLE_RATE,
                             input=True, input_device_index=self.index,
                             frames_per_buffer=self.block)
        except Exception as exc:  # PortAudio raises OSError or its own types
            pa.terminate()
            raise AudioError(f"cannot open microphone {self.name} at 16 kHz mono ({exc})") \
                from exc
        try:
            while not self._stop.is_set():
                try:
                    raw = stream.read(self.block, exception_on_overflow=False)
                except OSError as exc:  # device unplugged, ALSA error
                    raise AudioError(f"microphone {self.name} stopped delivering audio "
                                     f"({exc})") from exc
                yield pcm16_to_float(raw)
        finally:
            try:
                stream.stop_stream()
                stream.close()
            except OSError:
                pass
            pa.terminate()

    def stop(self) -> None:
        self._stop.set()


def open_source(spec: str, block: int, pace: float = 0.0, device: str = "") -> Source:
    """'mic', '-' or a file path -> a Source."""
    if spec == "mic":
        return MicSource(block, device)
    if spec == "-":
        return StdinSource(block)
    return FileSource(spec, block, pace=pace, max_seconds=None)
