"""Shared fixtures: the shipped bundle, the bundled speech sample, a real mosquitto."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from gacflow.audio import read_audio  # noqa: E402
from gacflow.bundle import DEFAULT_BUNDLE  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "sdk" / "samples" / "speech_ru.wav"


@pytest.fixture(scope="session")
def bundle_dir() -> Path:
    return DEFAULT_BUNDLE


@pytest.fixture(scope="session")
def sample_path() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def speech() -> np.ndarray:
    """The bundled 18 s speech sample, 16 kHz mono float32."""
    return read_audio(SAMPLE)


@pytest.fixture
def broker():
    """A fresh mosquitto on a free port, persistence on; stopped after the test."""
    from broker import Mosquitto

    b = Mosquitto().start()
    yield b
    b.close()
