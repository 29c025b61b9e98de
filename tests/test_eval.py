"""`gacflow eval` end to end on real clips: our codec (shipped bundle) vs Codec 2 and Opus."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from gacflow.audio import write_wav
from gacflow.bundle import Bundle
from gacflow.eval.cli import main
from gacflow.eval.runner import estimate_lag
from gacflow.spec import SAMPLE_RATE


@pytest.fixture(scope="module")
def clips_dir(tmp_path_factory, speech):
    """The whole 18 s sample (for bitrates: header bytes spread thin) and a 3 s cut."""
    d = tmp_path_factory.mktemp("clips")
    write_wav(d / "long.wav", speech)
    write_wav(d / "short.wav", speech[2 * SAMPLE_RATE: 5 * SAMPLE_RATE])
    return d


@pytest.fixture(scope="module")
def result(tmp_path_factory, clips_dir, bundle_dir):
    """One evaluation run; `pesq` is made unimportable to check the n/a path."""
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("eval")
    saved = sys.modules.get("pesq")
    sys.modules["pesq"] = None  # `import pesq` now raises ImportError, as if not installed
    try:
        rc = main(["--bundle", str(bundle_dir), "--data", str(clips_dir), "--out", str(out),
                   "--anchors", "codec2-700C,opus-6", "--metrics", "stoi,pesq"])
    finally:
        if saved is None:
            sys.modules.pop("pesq", None)
        else:
            sys.modules["pesq"] = saved
    return rc, out


def _rows(md: str) -> dict[str, list[str]]:
    lines = [ln for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    return {c[0]: c[1:] for c in cells[1:]}


def test_table_has_every_system_and_na_for_missing_metric(result, bundle_dir):
    rc, out = result
    assert rc == 0
    md = (out / "quality.md").read_text()
    rows = _rows(md)
    decoders = Bundle.load(bundle_dir).model_config["decoders"]
    expected = {f"gacflow-{m} ({d})" for d in decoders for m in ("275", "175")}
    expected |= {"codec2-700C", "opus-6", "reference (PCM 16 kHz)"}
    assert set(rows) == expected
    for cells in rows.values():  # nominal, actual, STOI, PESQ-WB
        assert cells[3] == "n/a"
        assert 0.0 <= float(cells[2]) <= 1.0
    assert "PESQ-WB: n/a" in md and "pip install pesq" in md
    assert (out / "quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bitrates_and_scores_are_sane(result):
    _, out = result
    recs = json.loads((out / "clips.json").read_text())
    assert len(recs) == 2 * len({r["system"] for r in recs})
    assert all(r["error"] is None for r in recs)
    by = {(r["clip"], r["system"].split(" ")[0]): r for r in recs}
    # 18 s clip: entropy-coded tokens (plain packing would be 250/150 bit/s) plus the .gac
    # header stay under the mode's cap, and speech codes well below the plain rate.
    assert 150 <= by["long.wav", "gacflow-275"]["bps"] < 262  # plain: ~272 with the header
    assert 90 <= by["long.wav", "gacflow-175"]["bps"] < 165  # plain: ~172 with the header
    for clip in ("long.wav", "short.wav"):
        assert 700 <= by[clip, "codec2-700C"]["bps"] <= 800  # 28 bits/40 ms, byte-padded
        assert 5000 <= by[clip, "opus-6"]["bps"] <= 12000  # Ogg overhead on short files
        assert by[clip, "reference"]["scores"]["stoi"] == pytest.approx(1.0, abs=1e-3)
        # Codec 2 keeps the words intelligible once its delay is undone.
        assert by[clip, "codec2-700C"]["scores"]["stoi"] > 0.6
        assert 0 <= by[clip, "codec2-700C"]["lag_ms"] <= 40


def test_estimate_lag_recovers_a_known_delay(speech):
    ref = speech[: 4 * SAMPLE_RATE]
    delayed = np.concatenate([np.zeros(288, np.float32), ref[:-288]])
    assert estimate_lag(ref, delayed) == 288
    assert estimate_lag(ref, ref) == 0


def test_user_errors_are_one_line(tmp_path, capsys, clips_dir):
    assert main(["--data", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert main(["--data", str(clips_dir), "--metrics", "stoi,bogus"]) == 2
    assert main(["--data", str(clips_dir), "--anchors", "codec2-999"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("gacflow eval: error:") for e in err)
    assert main([]) == 2  # argparse usage error: reported, not raised as SystemExit


def test_folder_without_usable_clips_says_what_it_found(tmp_path, capsys, speech):
    import soundfile as sf

    sf.write(tmp_path / "short.wav", speech[:8000], 16000)
    (tmp_path / "broken.wav").write_bytes(b"RIFF1234WAVEjunk")
    assert main(["--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "2 WAV/FLAC files: 1 unreadable, 1 shorter than 1 s" in err


def test_clips_without_speech_are_left_out_and_counted(tmp_path, speech):
    """A prompt library's silence files and sound effects are not speech clips."""
    import soundfile as sf

    from gacflow.eval.data import ClipFilter, load_clips

    rng = np.random.default_rng(0)
    sf.write(tmp_path / "a_speech.wav", speech[: 3 * 16000], 16000)
    sf.write(tmp_path / "b_silence.wav", np.zeros(3 * 16000, np.float32), 16000)
    sf.write(tmp_path / "c_hiss.wav", 1e-4 * rng.standard_normal(3 * 16000), 16000)
    keep = ClipFilter()
    assert [c.name for c in load_clips(str(tmp_path), None, keep)] == ["a_speech.wav"]
    assert keep.no_speech == 2 and "2 without speech" in keep.skipped()
    every = [c.name for c in load_clips(str(tmp_path), None, ClipFilter(min_speech=0))]
    assert every == ["a_speech.wav", "b_silence.wav", "c_hiss.wav"]


def test_min_speech_out_of_range_is_one_line(tmp_path, capsys, clips_dir):
    assert main(["--data", str(clips_dir), "--min-speech", "1.5"]) == 2
    assert "--min-speech" in capsys.readouterr().err


def test_skip_files_gives_a_disjoint_set(clips_dir):
    from gacflow.errors import ConfigError
    from gacflow.eval.data import load_clips

    both = [c.name for c in load_clips(str(clips_dir))]
    assert both == ["long.wav", "short.wav"]
    assert [c.name for c in load_clips(str(clips_dir), 1, skip=1)] == ["short.wav"]
    with pytest.raises(ConfigError, match="skip-files"):
        load_clips(str(clips_dir), None, skip=2)


def test_wer_transcript_does_not_depend_on_the_clip_decoded_before(speech):
    """pocketsphinx adapts its noise estimate and cepstral mean across utterances; each
    clip must start from the same state, or a system's WER depends on evaluation order."""
    from gacflow.eval.metrics import Wer

    wer = Wer()
    if not wer.available():  # loads the recogniser when it is installed
        pytest.skip("pocketsphinx/jiwer not installed")
    clip = speech[: 6 * SAMPLE_RATE]
    first = wer.transcribe(clip)
    rng = np.random.default_rng(0)
    for before in (0.3 * rng.standard_normal(3 * SAMPLE_RATE), 0.02 * speech[6 * SAMPLE_RATE:]):
        wer.transcribe(before.astype(np.float32))
        assert wer.transcribe(clip) == first


def test_subsets_get_their_own_tables(tmp_path, speech, bundle_dir):
    """A `subsets.json` in the data folder adds one table per named group of sub-folders."""
    import torch

    torch.set_num_threads(1)
    for spk in ("m1", "f1"):
        (tmp_path / "data" / spk).mkdir(parents=True)
        write_wav(tmp_path / "data" / spk / "a.wav", speech[:3 * SAMPLE_RATE])
    (tmp_path / "data" / "subsets.json").write_text(json.dumps({"male": ["m1"]}))
    out = tmp_path / "out"
    assert main(["--bundle", str(bundle_dir), "--data", str(tmp_path / "data"), "--out",
                 str(out), "--anchors", "codec2-700C", "--metrics", "stoi", "--modes", "275",
                 "--decoders", "small"]) == 0
    md = (out / "quality.md").read_text()
    assert "### male: 1 clips (m1)" in md
    male = md.split("### male")[1]
    assert "codec2-700C" in male and "gacflow-275 (small)" in male
    (tmp_path / "data" / "subsets.json").write_text("[1, 2]")
    assert main(["--bundle", str(bundle_dir), "--data", str(tmp_path / "data"),
                 "--out", str(out)]) == 2
