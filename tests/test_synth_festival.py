"""`gacflow-train synth --engine festival`: both voices, 16 kHz, text and phonemes kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gacflow.errors import ConfigError

needs_festival = pytest.mark.skipif(
    not (shutil.which("text2wave") and shutil.which("espeak-ng")),
    reason="festival or espeak-ng not installed (apt-get install festival festvox-us-slt-hts "
    "festvox-kallpc16k espeak-ng; ./run setup does it)")


@needs_festival
def test_festival_alternates_voices_and_writes_text_and_phonemes(tmp_path: Path) -> None:
    from gacflow.audio import read_audio
    from gacflow.train.corpus import folder_sources
    from gacflow.train.synth import build_synthetic

    texts = ["The weather station reports rain.", "Turn left at the second light."]
    m = build_synthetic(tmp_path, 2, seed=1, engine="festival", texts=texts)
    assert [it["voice"] for it in m["items"]] == ["slt", "kal"]
    assert all(0.85 <= it["stretch"] <= 1.2 for it in m["items"])
    for it in m["items"]:
        stem = tmp_path / it["voice"] / f"{it['id']:05d}"
        audio = read_audio(stem.with_suffix(".wav"))
        assert 0.8 < len(audio) / 16000 < 6 and np.abs(audio).max() > 0.05
        assert stem.with_suffix(".txt").read_text().strip() == it["text"]
        assert stem.with_suffix(".phn").read_text().strip()
    assert json.loads((tmp_path / "synth.json").read_text())["synthesizer"] == "festival"
    sources = folder_sources(tmp_path)
    assert {s.speaker for s in sources} == {"slt", "kal"} and all(s.phonemes for s in sources)


def test_missing_festival_is_one_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from gacflow.train import synth_festival

    monkeypatch.setattr(synth_festival.shutil, "which", lambda _: None)
    with pytest.raises(ConfigError, match="apt-get install festival"):
        synth_festival.FestivalEngine()
