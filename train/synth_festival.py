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
SYNTH_VOICES = ("slt", "kal")  # `gacflow-train synth --engine festival` alternates these
# These and every other Debian festvox voice that renders text offline (the corpus's voice sources,
# train/sources/festvox.py): name -> (function, package, sex). English text goes through
# each voice's own letter-to-sound rules, which is enough to carry its timbre. The Indic
# `*-nsk` voices are left out: their front ends (hindi_phones.scm ...) are not in Debian.
ALL_VOICES = {
    "slt": ("voice_cmu_us_slt_arctic_hts", "festvox-us-slt-hts", "f"),
    "kal": ("voice_kal_diphone", "festvox-kallpc16k", "m"),
    "kdl": ("voice_ked_diphone", "festvox-kdlpc16k", "m"),
    "fi_mv": ("voice_hy_fi_mv_diphone", "festvox-suopuhe-mv", "m"),
    "fi_lj": ("voice_suo_fi_lj_diphone", "festvox-suopuhe-lj", "f"),
    "ru_nsh": ("voice_msu_ru_nsh_clunits", "festvox-ru", "m"),
    "ca_ona": ("voice_upc_ca_ona_hts", "festvox-ca-ona-hts", "f"),
    "cs_dita": ("voice_czech_dita", "festvox-czech-dita", "f"),
    "cs_krb": ("voice_czech_krb", "festvox-czech-krb", "m"),
    "cs_machac": ("voice_czech_machac", "festvox-czech-machac", "m"),
    "cs_ph": ("voice_czech_ph", "festvox-czech-ph", "m"),
    "it_lp": ("voice_lp_diphone", "festvox-italp16k", "f"),
    "it_pc": ("voice_pc_diphone", "festvox-itapc16k", "m"),
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
        voice = SYNTH_VOICES[index % len(SYNTH_VOICES)]
        return {"voice": voice, "stretch": round(rng.uniform(*STRETCH), 3)}

    def render(self, text: str, plan: dict) -> np.ndarray:
        import soundfile as sf

        function, package = ALL_VOICES[plan["voice"]][:2]
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
