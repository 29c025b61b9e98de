"""Voice sources: the Queen archive parser, speaker naming, staging and held-out splits."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from gacflow.errors import ConfigError  # noqa: E402
from gacflow.train.cli import main as train_cli  # noqa: E402
from gacflow.train.corpus import voice_splits  # noqa: E402
from gacflow.train.sources import Speaker, Utterance, queen, stage, tuxpaint  # noqa: E402


def test_queen_table_lists_entries_and_names_speakers() -> None:
    names = [b"020006J1.SB", b"020006P1.SB", b"JOE_LOOK.SB", b"C1SSSS01.SB", b"ROOM.PCX"]
    table = b"QTBL" + b"CEM10" + bytes(6)
    body = b""
    for i, n in enumerate(names):
        table += struct.pack(">12sBII", n, 1, 1000 + 10 * i, 10)
    blob = table + body
    got = queen.entries(blob)
    assert [g[0] for g in got] == [n.decode() for n in names]
    assert got[2][1:] == (1020, 10)
    assert [queen.speaker_of(g[0]) for g in got] == [
        "queen_joe", "queen_npc02", "queen_joe", None, None]
    with pytest.raises(ConfigError, match="QTBL"):
        queen.entries(b"RIFF" + bytes(40))


def test_tuxpaint_clips_are_grouped_by_language() -> None:
    assert tuxpaint.PATTERN.search("cat_desc_fr.ogg").group(1) == "fr"
    assert tuxpaint.PATTERN.search("cat_desc.ogg").group(1) is None
    assert tuxpaint.PATTERN.search("cat.ogg") is None


def _fake_speaker(sid: str, f0: float, rate: int, sex: str = "?") -> Speaker:
    def utterances():
        t = np.arange(rate * 2) / rate
        for i in range(3):
            tone = 0.3 * np.sign(np.sin(2 * np.pi * f0 * t)) * np.hanning(len(t))
            yield Utterance(f"u{i}", tone.astype(np.float32), rate, f"text {i}")
    return Speaker(sid, "fake", "test licence", "en", sex, utterances=utterances)


def test_staging_writes_a_manifest_estimates_sex_and_resumes(tmp_path: Path,
                                                            monkeypatch) -> None:
    spk = [_fake_speaker("low", 110.0, 16000), _fake_speaker("high", 230.0, 8000),
           _fake_speaker("named", 230.0, 16000, "m")]
    calls = []

    def fake_speakers_of(name, cache):
        calls.append(name)
        return spk

    monkeypatch.setattr(stage, "speakers_of", fake_speakers_of)
    monkeypatch.setattr(stage, "SOURCES", ("fake",))
    m = stage.stage(tmp_path / "v", ["fake"])["speakers"]
    assert m["low"]["sex"] == "m" and m["low"]["sex_from"] == "median F0"
    assert m["high"]["sex"] == "f" and m["high"]["band"] == "narrow"
    assert m["named"]["sex"] == "m" and m["named"]["sex_from"] == "source"
    assert m["low"]["files"] == 3 and (tmp_path / "v/low/u0.txt").read_text() == "text 0\n"
    assert abs(m["low"]["median_f0_hz"] - 110) < 10
    written = (tmp_path / "v/low/u0.wav").stat().st_mtime_ns
    stage.stage(tmp_path / "v", ["fake"])  # resumed: finished speakers are not redone
    assert (tmp_path / "v/low/u0.wav").stat().st_mtime_ns == written
    with pytest.raises(ConfigError, match="unknown voice source"):
        stage.stage(tmp_path / "v", ["nope"])


def test_voice_splits_hold_out_whole_speakers(tmp_path: Path) -> None:
    import soundfile as sf

    root = tmp_path / "voices"
    speakers = {}
    for sid in ("a", "b", "c", "d"):
        (root / sid).mkdir(parents=True)
        sf.write(root / sid / "x.wav", np.zeros(8000, np.float32), 16000)
        speakers[sid] = {"licence": f"lic {sid}", "sex": "f"}
    (root / "speakers.json").write_text(json.dumps({"speakers": speakers}))
    splits = voice_splits([root], ["b"], ["d"])
    assert {s.speaker for s in splits["train"]} == {"a", "c"}
    assert {s.speaker for s in splits["valid"]} == {"b"}
    assert splits["train"][0].licence == "lic a"
    with pytest.raises(ConfigError, match="no such speaker"):
        voice_splits([root], ["zz"], [])
    with pytest.raises(ConfigError, match="validation speaker"):
        voice_splits([root], [], [])
    assert train_cli(["corpus", "--out", str(tmp_path / "c"), "--voices", str(root),
                      "--valid-speakers", "zz"]) == 2


def test_eval_set_holds_whole_speakers_and_names_the_subsets(tmp_path: Path,
                                                            speech: np.ndarray) -> None:
    import soundfile as sf

    from gacflow.train.eval_set import build_eval_set

    root = tmp_path / "voices"
    speakers = {}
    for sid, sex, band, rate in (("m_wide", "m", "wide", 16000), ("f_narrow", "f", "narrow", 8000)):
        (root / sid).mkdir(parents=True)
        for i in range(3):
            sf.write(root / sid / f"{i}.wav", speech[i * 48000: i * 48000 + 3 * rate], rate)
        speakers[sid] = {"licence": "l", "sex": sex, "sex_from": "source", "band": band,
                         "source": "test", "language": "en"}
    (root / "speakers.json").write_text(json.dumps({"speakers": speakers}))
    texts = tmp_path / "synth"
    (texts / "voiceA").mkdir(parents=True)
    sf.write(texts / "voiceA" / "1.wav", speech[: 3 * 16000], 16000)
    (texts / "voiceA" / "1.txt").write_text("hello world\n")
    m = build_eval_set(tmp_path / "eval", [root], ["m_wide", "f_narrow"], [texts], [texts],
                       per_speaker=2)
    subsets = json.loads((tmp_path / "eval" / "subsets.json").read_text())
    assert subsets == m["subsets"]
    assert "m_wide" in subsets["male"] and "f_narrow" in subsets["female"]
    assert set(subsets["narrowband"]) == {"f_narrow", "synth-voiceA-g711"}
    assert set(subsets["english"]) == {"synth-voiceA", "synth-voiceA-g711"}
    assert len(list((tmp_path / "eval" / "m_wide").glob("*.wav"))) == 2
    assert sf.info(str(tmp_path / "eval" / "synth-voiceA-g711" / "1.wav")).samplerate == 8000
    assert (tmp_path / "eval" / "synth-voiceA-g711" / "1.txt").read_text() == "hello world\n"
    with pytest.raises(ConfigError, match="no such speaker"):
        build_eval_set(tmp_path / "e2", [root], ["nobody"], [], [])
