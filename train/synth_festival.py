"""Festival synthesizer for `gacflow-train synth --engine festival`.

Two more English voices from Debian, balanced by turns: `cmu_us_slt_arctic_hts` (female,
HTS statistical voice, fairly natural) and `kal_diphone` (male, old diphone voice). They
widen the speaker range next to Kokoro's styles and espeak-ng's variants; speaking rate
varies per utterance. Needs `apt-get install festival festvox-us-slt-hts festvox-kallpc16k`.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from gacflow.audio import resample
from gacflow.errors import ConfigError
from gacflow.spec import SAMPLE_RATE

from .synth import RenderError

PACKAGES = "festival festvox-us-slt-hts festvox-kallpc16k"
VOICES = {  # our voice folder name -> (festival voice function, Debian package)
    "slt": ("voice_cmu_us_slt_arctic_hts", "festvox-us-slt-hts"),
    "kal": ("voice_kal_diphone", "festvox-kallpc16k"),
}
STRETCH = (0.85, 1.2)  # Duration_Stretch: > 1 is slower


def text2wave() -> str:
    exe = shutil.which("text2wave")
    if not exe:
        raise ConfigError(f"festival is not installed (apt-get install {PACKAGES})")
    return exe


class FestivalEngine:
    """Festival's US female (HTS) and male (diphone) voices in turn, at random rates."""

    name = "festival"
    words = (4, 30)
    manifest = {"licence": "generated (festival and the slt/kal voices are free to use and "
                           "redistribute; output unrestricted)"}

    def __init__(self) -> None:
        self.exe = text2wave()

    def plan(self, index: int, rng: random.Random) -> dict:
        voice = ("slt", "kal")[index % 2]
        return {"voice": voice, "stretch": round(rng.uniform(*STRETCH), 3)}

    def render(self, text: str, plan: dict) -> np.ndarray:
        import soundfile as sf

        function, package = VOICES[plan["voice"]]
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "in.txt", Path(tmp) / "out.wav"
            src.write_text(text + "\n")
            run = subprocess.run(
                [self.exe, "-o", str(dst), "-eval", f"({function})",
                 "-eval", f"(Parameter.set 'Duration_Stretch {plan['stretch']})", str(src)],
                capture_output=True, text=True)
            if run.returncode != 0 or not dst.exists() or dst.stat().st_size <= 44:
                if "unbound variable" in run.stderr:
                    raise ConfigError(f"festival voice {plan['voice']} is not installed "
                                      f"(apt-get install {package})")
                why = (run.stderr.strip().splitlines() or ["no audio"])[-1]
                if run.returncode < 0:
                    why = f"crashed (signal {-run.returncode})"
                raise RenderError(f"festival ({plan['voice']}) failed on {text!r}: {why}")
            data, sr = sf.read(dst, dtype="float32")
        if data.ndim > 1:
            data = data.mean(axis=1)
        return resample(data, sr, SAMPLE_RATE)

    def phoneme_voice(self, plan: dict) -> str:
        return "en-us"
