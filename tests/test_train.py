"""The training recipe runs end to end on a folder of audio: corpus -> fit (GAN on) -> bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from gacflow.bundle import Bundle
from gacflow.model import Codec
from gacflow.train.cli import main as train_cli


def test_recipe_on_a_user_folder(tmp_path: Path, speech: np.ndarray) -> None:
    torch.set_num_threads(1)
    src = tmp_path / "wavs"
    for spk in ("a", "b"):
        (src / spk).mkdir(parents=True)
        sf.write(src / spk / "x.flac", speech[:8 * 16000], 16000)
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(
        'name = "tiny"\nsteps = 3\nbatch = 2\nsegment_frames = 8\nvalid_every = 3\n'
        "checkpoint_every = 2\ngan_start = 1\nwarmup = 1\nthreads = 1\n"
        "[encoder]\ndim = 16\nhidden = 16\ndilations = [1, 2]\n"
        "[decoder]\ndim = 16\nblocks_low = 1\nblocks_high = 1\n"
    )
    corpus = tmp_path / "corpus"
    from gacflow.train.corpus import build, folder_sources

    sources = folder_sources(src)
    build(corpus, {"train": sources, "valid": sources})
    run = tmp_path / "run"
    assert train_cli(["fit", "--config", str(cfg), "--run", str(run), "--data", str(corpus)]) == 0
    ck = torch.load(run / "ckpt.pt", weights_only=False)
    assert ck["step"] == 3 and "disc" in ck
    log = (run / "log.jsonl").read_text()
    assert "valid_mel_275" in log and "adv" in log
    assert train_cli(["bundle", str(run / "ckpt.pt"), "--out", str(tmp_path / "b")]) == 0
    codec = Codec.from_bundle(Bundle.load(tmp_path / "b").root)
    out = codec.decode(codec.encode(speech[:16000], "175"))
    assert out.shape == (16000,) and np.isfinite(out).all()


def test_synthetic_english_has_audio_text_and_phonemes(tmp_path: Path) -> None:
    import shutil

    import pytest

    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not installed")
    from gacflow.audio import read_audio
    from gacflow.train.synth import build_synthetic

    m = build_synthetic(tmp_path, 2, seed=1)
    wavs = sorted(tmp_path.rglob("*.wav"))
    assert len(wavs) == 2 and len(m["items"]) == 2
    for w in wavs:
        assert len(read_audio(w)) > 16000 // 2
        assert w.with_suffix(".txt").read_text().strip()
        assert w.with_suffix(".phn").read_text().strip()


def test_synthetic_training_set_shares_no_sentence_with_an_excluded_set(tmp_path: Path) -> None:
    """A training set made with the evaluation set's seed would repeat its sentences
    verbatim; --exclude leaves them out and says so when a folder has no manifest."""
    from gacflow.errors import ConfigError
    from gacflow.train.synth import excluded_texts, fortune_texts

    held = tmp_path / "held"
    held.mkdir()
    eval_texts = fortune_texts(5, seed=0)
    (held / "synth.json").write_text(json.dumps({"items": [{"text": t} for t in eval_texts]}))
    train = fortune_texts(1, seed=0, exclude=excluded_texts([held]))
    assert train[0] != eval_texts[0] and not set(train) & set(eval_texts)
    with pytest.raises(ConfigError, match="synth.json"):
        excluded_texts([tmp_path / "missing"])


def test_espeak_speaks_text_that_looks_like_an_option() -> None:
    """Fortunes hold lines such as "-- Gifts for Children"; passed as an argument espeak-ng
    took it for an option and wrote no audio. Text goes through stdin, and such
    attribution tails are not picked as sentences."""
    import shutil

    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not installed")
    from gacflow.train.synth import is_prose, phonemes, synthesize

    assert len(synthesize("-- Gifts for Children", "en")) > 8000
    assert phonemes("-- Gifts for Children", "en")
    assert not is_prose("-- Gifts for Children") and is_prose("Gifts for children.")


class _FailsOnSome:
    """An engine that cannot render some sentences, as festival's kal_diphone voice
    crashes on "TAILFINS!! ... click ...": the run must substitute, not stop."""

    name = "picky"
    words = (4, 30)
    manifest: dict = {}

    def __init__(self, bad: set[str]) -> None:
        self.bad, self.calls = bad, 0

    def plan(self, index: int, rng) -> dict:
        return {"voice": "en"}

    def render(self, text: str, plan: dict) -> np.ndarray:
        from gacflow.train.synth import RenderError

        self.calls += 1
        if text in self.bad:
            raise RenderError(f"picky failed on {text!r}: crashed (signal 11)")
        return np.full(8000, 0.1, np.float32)

    def phoneme_voice(self, plan: dict) -> str:
        return "en"


def test_a_sentence_the_engine_cannot_speak_is_skipped_and_replaced(tmp_path: Path) -> None:
    import shutil

    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not installed (the .phn files need it)")
    from gacflow.errors import ConfigError
    from gacflow.train.synth import build_synthetic

    texts = ["One fine day in spring.", "TAILFINS click click click.",
             "Two small boats at sea.", "Three green trees here."]
    eng = _FailsOnSome({texts[1]})
    m = build_synthetic(tmp_path, 3, engine=eng, texts=texts)
    assert [it["text"] for it in m["items"]] == [texts[0], texts[2], texts[3]]
    assert [s["text"] for s in m["skipped"]] == [texts[1]] and m["skipped"][0]["id"] == 1
    assert (tmp_path / "en" / "00001.txt").read_text().strip() == texts[2]
    assert len(list(tmp_path.rglob("*.wav"))) == 3
    # resumed: finished items are kept, the substitution is the same
    again = _FailsOnSome({texts[1]})
    assert build_synthetic(tmp_path, 3, engine=again, texts=texts) == m
    assert again.calls == 1  # only the failing sentence was tried again
    # an engine that fails on everything is one clear error, not an endless run
    with pytest.raises(ConfigError, match="failed on 21 sentences"):
        build_synthetic(tmp_path / "none", 3, engine=_FailsOnSome(set(texts)), texts=texts)


def test_espeak_speaks_other_languages_from_their_fortunes(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Phone-level training signals need more than English: `--language ru` takes Debian's
    fortunes-ru sentences (any script), speaks them with Russian espeak-ng voices, and the
    .phn files hold no "(en)" language-switch markers; a language without its fortunes, an
    unknown one, or a non-espeak engine is one clear error."""
    import shutil

    if not shutil.which("espeak-ng"):
        pytest.skip("espeak-ng not installed")
    from gacflow.errors import ConfigError
    from gacflow.train import synth

    fortunes = tmp_path / "fortunes"
    (fortunes / "ru").mkdir(parents=True)
    (fortunes / "ru" / "book").write_text(
        "Кто рано встаёт, тому бог подаёт.\n%\nТише едешь, дальше будешь, друг мой.\n%\n"
        "Short English line in the middle of it.\n%\nhttp://example.org\n%\n")
    (fortunes / "ru" / "off").mkdir()
    (fortunes / "ru" / "off" / "rude").write_text("Это не должно попасть в набор никогда.\n")
    (fortunes / "wisdom").write_text("An English line of plain words.\n%\n")
    (fortunes / "italia").write_text("Una frase italiana senza accenti qui.\n%\n")  # -it pack
    monkeypatch.setattr(synth, "FORTUNES", fortunes)
    assert set(synth.fortune_texts(3, seed=0)) == {"An English line of plain words."}
    texts = synth.fortune_texts(6, seed=0, language="ru")
    assert set(texts) == {"Кто рано встаёт, тому бог подаёт.",
                          "Тише едешь, дальше будешь, друг мой.",
                          "Short English line in the middle of it."}
    m = synth.build_synthetic(tmp_path / "out", 2, seed=1, language="ru")
    assert m["language"] == "ru" and all(it["voice"].startswith("ru+") for it in m["items"])
    for phn in (tmp_path / "out").rglob("*.phn"):
        assert phn.read_text().strip() and "(" not in phn.read_text()
    assert "(" not in synth.phonemes("Hola amigo, guten Tag.", "ru")
    with pytest.raises(ConfigError, match="fortunes-de"):
        synth.fortune_texts(3, seed=0, language="de")
    with pytest.raises(ConfigError, match="unknown language"):
        synth.make_engine("espeak", language="xx")
    with pytest.raises(ConfigError, match="English only"):
        synth.make_engine("festival", language="ru")


def test_spare_sentences_do_not_change_the_texts_of_earlier_sets() -> None:
    from gacflow.train.synth import fortune_texts

    assert fortune_texts(30, seed=4, spare=20)[:30] == fortune_texts(30, seed=4)


def test_grown_decoder_starts_as_the_small_one_and_joins_the_bundle(tmp_path: Path,
                                                                    speech: np.ndarray) -> None:
    """A deeper decoder grown from a trained one computes the same audio before training;
    trained with the encoder frozen it is added to the bundle under the same codec id, and
    a checkpoint whose encoder differs is refused."""
    from gacflow.train.config import TrainConfig
    from gacflow.train.loop import build_model
    from gacflow.train.model import load_grown

    torch.set_num_threads(1)
    small_cfg = TrainConfig(encoder={"dim": 16, "hidden": 16, "dilations": [1, 2]},
                            decoder={"dim": 16, "blocks_low": 1, "blocks_high": 1})
    small = build_model(small_cfg).eval()
    for p in small.decoder.parameters():  # non-trivial weights, as after training
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.2)
    big_cfg = TrainConfig(encoder=small_cfg.encoder,
                          decoder={"dim": 16, "blocks_low": 2, "blocks_high": 3})
    big = build_model(big_cfg).eval()
    fresh = load_grown(big, small.state_dict())
    assert fresh and all(k.startswith("decoder.") for k in fresh)
    wav = torch.from_numpy(speech[: 640 * 8].copy())[None]
    with torch.no_grad():
        assert torch.allclose(big(wav, torch.ones(1)), small(wav, torch.ones(1)), atol=1e-5)

    src = tmp_path / "wavs"
    src.mkdir()
    sf.write(src / "x.flac", speech[:8 * 16000], 16000)
    from gacflow.train.corpus import build, folder_sources

    build(tmp_path / "corpus", {"train": folder_sources(src), "valid": folder_sources(src)})
    common = ('steps = 2\nbatch = 2\nsegment_frames = 8\nvalid_every = 2\nwarmup = 1\n'
              'threads = 1\n[encoder]\ndim = 16\nhidden = 16\ndilations = [1, 2]\n')
    (tmp_path / "small.toml").write_text(common + "[decoder]\ndim = 16\nblocks_low = 1\n"
                                                  "blocks_high = 1\n")
    fit = ["fit", "--data", str(tmp_path / "corpus")]
    assert train_cli(fit + ["--config", str(tmp_path / "small.toml"),
                            "--run", str(tmp_path / "small")]) == 0
    bundle = tmp_path / "bundle"
    assert train_cli(["bundle", str(tmp_path / "small" / "ckpt.pt"), "--out", str(bundle)]) == 0
    (tmp_path / "large.toml").write_text(  # grown from the bundle, as a user of the repo would
        f'init_from = "{bundle}"\nfreeze_encoder = true\n'
        "gan_start = 0\ngan_crop_frames = 4\n"
        + common + "[decoder]\ndim = 16\nblocks_low = 2\n"
        "blocks_high = 3\n")
    assert train_cli(fit + ["--config", str(tmp_path / "large.toml"),
                            "--run", str(tmp_path / "large")]) == 0
    assert train_cli(["add-decoder", str(tmp_path / "large" / "ckpt.pt"), "--bundle",
                      str(bundle), "--size", "large"]) == 0
    b = Bundle.load(bundle)
    assert set(b.model_config["decoders"]) == {"small", "large"}
    tokens = Codec.from_bundle(bundle).encode(speech[:16000], "275")
    assert Codec.from_bundle(bundle, decoder="large").decode(tokens).shape == (16000,)

    other = torch.load(tmp_path / "large" / "ckpt.pt", weights_only=False)
    next(v for k, v in other["model"].items() if k.startswith("encoder.stem")).add_(0.1)
    torch.save(other, tmp_path / "other.pt")
    assert train_cli(["add-decoder", str(tmp_path / "other.pt"), "--bundle", str(bundle),
                      "--size", "x"]) == 2

    # with `large` as the default, a run can still start from `small` (init_decoder)
    assert train_cli(["add-decoder", str(tmp_path / "large" / "ckpt.pt"), "--bundle",
                      str(bundle), "--size", "large", "--default"]) == 0
    from gacflow.errors import BundleError
    from gacflow.train.model import init_state

    small_ck = torch.load(tmp_path / "small" / "ckpt.pt", weights_only=False)["model"]
    as_small, as_default = init_state(bundle, "small"), init_state(bundle)
    assert len(as_default) > len(as_small)  # the large decoder has more blocks
    assert all(torch.equal(as_small[k].half(), small_ck[k].half())  # fp16 in the bundle
               for k in as_small if k.startswith("decoder.") and k in small_ck)
    with pytest.raises(BundleError, match="no decoder 'huge'"):
        init_state(bundle, "huge")


def test_corpus_without_the_recorded_voices_says_what_to_install(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    import gacflow.train.corpus as corpus

    monkeypatch.setattr(corpus, "ASTERISK_ROOT", tmp_path / "nothing")
    assert train_cli(["corpus", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "apt-get install asterisk-core-sounds-es-g722" in err[0]
    assert not (tmp_path / "c" / "train.npy").exists()


def test_corpus_build_resumes_after_an_interruption(tmp_path: Path, speech: np.ndarray,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed half-way, a rerun decodes only the files not yet in the shard, and the result
    is byte-identical to an uninterrupted build."""
    import gacflow.train.corpus as corpus

    src = tmp_path / "wavs"
    for spk in ("a", "b"):
        (src / spk).mkdir(parents=True)
        for k in range(4):
            sf.write(src / spk / f"{k}.wav", speech[k * 8000: k * 8000 + 16000 + 800 * k], 16000)
    (src / "a" / "bad.wav").write_bytes(b"RIFF1234WAVEjunk")
    splits = corpus.default_splits([src], recorded=False)
    whole = corpus.build(tmp_path / "whole", splits, seed=4)

    real_load, calls = corpus.load_any, []

    def dies_on_the_fifth(path: Path) -> np.ndarray:
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_load(path)

    monkeypatch.setattr(corpus, "load_any", dies_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        corpus.build(tmp_path / "resumed", splits, seed=4)
    assert not (tmp_path / "resumed" / "corpus.json").exists()
    with (tmp_path / "resumed" / "train.partial.pcm").open("ab") as f:
        f.write(b"\x01\x02\x03")  # audio of a file whose progress line never got written
    calls.clear()
    monkeypatch.setattr(corpus, "load_any", lambda path: (calls.append(path), real_load(path))[1])
    resumed = corpus.build(tmp_path / "resumed", splits, seed=4)
    assert len(calls) == sum(len(v) for v in splits.values()) - 4
    assert resumed == whole and resumed["splits"]["train"]["skipped"] == 1
    for split in ("train", "valid"):
        a, b = (np.load(tmp_path / d / f"{split}.npy") for d in ("whole", "resumed"))
        assert np.array_equal(a, b)
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == [
        "corpus.json", "train.npy", "valid.npy"]


def test_corpus_from_user_folders_only_holds_out_a_speaker(tmp_path: Path,
                                                           speech: np.ndarray) -> None:
    from gacflow.errors import ConfigError

    src = tmp_path / "libri"
    for spk in ("19", "26", "32"):
        (src / spk).mkdir(parents=True)
        sf.write(src / spk / "u.flac", speech[:16000], 16000)
    assert train_cli(["corpus", "--no-recorded", "--extra", str(src),
                      "--out", str(tmp_path / "c")]) == 0
    m = json.loads((tmp_path / "c" / "corpus.json").read_text())
    assert m["splits"]["train"]["speakers"] == ["19", "26"]
    assert m["splits"]["valid"]["speakers"] == ["32"]
    from gacflow.train.corpus import default_splits

    with pytest.raises(ConfigError, match="--extra"):
        default_splits([], recorded=False)
    with pytest.raises(ConfigError, match="validation speaker"):
        default_splits([src / "19"], recorded=False)


def test_corpus_folders_carry_transcripts_phonemes_and_licence(tmp_path: Path,
                                                               speech: np.ndarray) -> None:
    from gacflow.errors import ConfigError
    from gacflow.train.corpus import build, folder_sources

    voice = tmp_path / "synth" / "voice_a"
    voice.mkdir(parents=True)
    sf.write(voice / "0.wav", speech[:16000], 16000)
    (voice / "0.txt").write_text("hello there\n")
    (voice / "0.phn").write_text("h@l'oU D'e@\n")
    (tmp_path / "synth" / "synth.json").write_text('{"licence": "Apache-2.0 test voice"}')
    m = build(tmp_path / "corpus", {"valid": folder_sources(tmp_path / "synth")})
    (entry,) = m["splits"]["valid"]["files"]
    assert entry["speaker"] == "voice_a" and entry["licence"] == "Apache-2.0 test voice"
    assert entry["text"] == "hello there" and entry["phonemes"] == "h@l'oU D'e@"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no WAV"):
        folder_sources(tmp_path / "empty")


def tiny_codec(steps: int) -> str:
    """A codec config small enough to train a few steps in a test (validates at the end)."""
    return (f'steps = {steps}\nbatch = 2\nsegment_frames = 8\nvalid_every = {steps}\n'
            'warmup = 1\nlr = 3e-3\nthreads = 1\n'
            '[encoder]\ndim = 16\nhidden = 16\ndilations = [1, 2]\n'
            '[decoder]\ndim = 16\nblocks_low = 1\nblocks_high = 1\n')


def phoneme_corpus(corpus: Path, synth: Path, speech: np.ndarray) -> None:
    """Two voices x three 1.5 s utterances with .phn files, in both splits of a corpus."""
    from gacflow.train.corpus import build, folder_sources

    for voice, cut in (("a", 0), ("b", 3)):
        (synth / voice).mkdir(parents=True)
        for k, phn in enumerate(("h@l'oU w'3:ld", "s'Ev@n t'u: n'aIn", "kw'Ik br'aUn")):
            lo = (cut + 2 * k) * 8000
            sf.write(synth / voice / f"{k}.wav", speech[lo : lo + 24000], 16000)
            (synth / voice / f"{k}.phn").write_text(phn)
    build(corpus, {"train": folder_sources(synth), "valid": folder_sources(synth)})


def test_phoneme_ctc_trains_from_the_codes_and_validates(tmp_path: Path,
                                                         speech: np.ndarray) -> None:
    """With ctc_weight set, every step adds a phoneme CTC loss read from the quantized
    codes of whole utterances that have .phn files; it falls, and held-out utterances
    get a validation CTC. Without any phonemes in the corpus it is one clear error."""
    import json

    from gacflow.train.corpus import build, folder_sources
    from gacflow.train.ctc import VOCAB, phoneme_ids

    assert phoneme_ids("h@l'oU w'3:ld") == phoneme_ids("h@loUw3:ld")
    assert all(0 < i < VOCAB for i in phoneme_ids("D@ kw'Ik br'aUn f'0ks"))
    phoneme_corpus(tmp_path / "corpus", tmp_path / "synth", speech)
    base = tiny_codec(30)
    (tmp_path / "ctc.toml").write_text("ctc_weight = 1.0\nctc_batch = 3\n" + base)
    fit = ["fit", "--data", str(tmp_path / "corpus"), "--config", str(tmp_path / "ctc.toml")]
    assert train_cli(fit + ["--run", str(tmp_path / "run")]) == 0
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    ctc = [r["ctc"] for r in log if "ctc" in r]
    assert len(ctc) == 3 and all(np.isfinite(ctc)) and ctc[-1] < ctc[0]
    assert np.isfinite(log[-1]["valid_ctc"])
    ck = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=False)
    assert any(k.startswith("ctc_head.") for k in ck["model"])  # trained, never bundled

    plain = tmp_path / "plain"
    (plain / "x").mkdir(parents=True)
    sf.write(plain / "x" / "0.wav", speech[:48000], 16000)
    build(tmp_path / "corpus2", {"train": folder_sources(plain), "valid": folder_sources(plain)})
    assert train_cli(["fit", "--data", str(tmp_path / "corpus2"), "--config",
                      str(tmp_path / "ctc.toml"), "--run", str(tmp_path / "run2")]) == 2


def test_pitch_auxiliary_reads_f0_from_the_codes(tmp_path: Path, speech: np.ndarray) -> None:
    """The YIN targets find a tone's F0 within a cent and call silence unvoiced; a codec
    config with pitch_weight trains a head on the codes, logs its loss and held-out cents
    error, and the head stays a training-only part (the bundle still decodes)."""
    import json

    from gacflow.bundle import Bundle
    from gacflow.model import Codec
    from gacflow.train.pitch import f0_targets

    t = np.arange(16000) / 16000
    tones = np.stack([0.3 * np.sin(2 * np.pi * f * t) for f in (110.0, 220.0, 330.0)])
    log_f0, voiced = f0_targets(torch.tensor(tones, dtype=torch.float32))
    cents = 1200 * (log_f0[:, 2:-2] - torch.log2(torch.tensor([[110.0], [220.0], [330.0]])))
    assert cents.abs().max() < 1 and voiced[:, 2:-2].all()
    assert not f0_targets(torch.zeros(1, 16000))[1].any()

    phoneme_corpus(tmp_path / "corpus", tmp_path / "synth", speech)
    (tmp_path / "p.toml").write_text("pitch_weight = 1.0\n" + tiny_codec(3))
    run = tmp_path / "run"
    assert train_cli(["fit", "--data", str(tmp_path / "corpus"), "--config",
                      str(tmp_path / "p.toml"), "--run", str(run)]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert np.isfinite(log[-1]["pitch"]) and np.isfinite(log[-1]["valid_pitch_cents"])
    ck = torch.load(run / "ckpt.pt", weights_only=False)
    assert any(k.startswith("pitch_head.") for k in ck["model"])
    assert train_cli(["bundle", str(run / "ckpt.pt"), "--out", str(tmp_path / "b")]) == 0
    codec = Codec.from_bundle(Bundle.load(tmp_path / "b").root)
    assert np.isfinite(codec.decode(codec.encode(speech[:16000]))).all()


def test_quantization_aware_training_rounds_like_the_edge_and_saves_plain_weights(
        tmp_path: Path, speech: np.ndarray) -> None:
    """With `qat`, the encoder's activations pass through uint8 fake quantization with
    running ranges (at most 256 levels each); checkpoints hold only the plain encoder
    (same keys as without QAT), so bundles and the codec id work as before."""
    from gacflow.bundle import Bundle
    from gacflow.model import Codec
    from gacflow.train.qat import FakeUint8, enable

    q = FakeUint8()
    x = torch.linspace(-1.0, 3.0, 10000)
    assert len(torch.unique(q(x))) <= 256 and torch.allclose(q(x), x, atol=4 / 255)
    q.eval()
    assert torch.allclose(q(torch.tensor([5.0, -2.0])), torch.tensor([3.0, -1.0]), atol=0.01)

    phoneme_corpus(tmp_path / "corpus", tmp_path / "synth", speech)
    (tmp_path / "q.toml").write_text("qat = true\n" + tiny_codec(3))
    run = tmp_path / "run"
    assert train_cli(["fit", "--data", str(tmp_path / "corpus"), "--config",
                      str(tmp_path / "q.toml"), "--run", str(run)]) == 0
    ck = torch.load(run / "ckpt.pt", weights_only=False)
    assert not any("qat" in k for k in ck["model"])
    ranges = ck["qat"]  # the running ranges travel beside the weights, for a resume
    assert ranges and all(bool(v) for k, v in ranges.items() if k.endswith("seen"))
    assert train_cli(["fit", "--data", str(tmp_path / "corpus"), "--config",
                      str(tmp_path / "q.toml"), "--run", str(run), "--steps", "4"]) == 0
    resumed = torch.load(run / "ckpt.pt", weights_only=False)["qat"]
    # one more step moves a loaded range by 1 % of the gap to the batch's (EMA); a range
    # learned again from scratch would jump to that batch's min / max
    bounds = [k for k in ranges if k.endswith((".lo", ".hi"))]
    moved = [abs(float(resumed[k] - ranges[k])) / (abs(float(ranges[k])) + 1e-6) for k in bounds]
    assert sum(moved) / len(moved) < 0.02
    (tmp_path / "c.toml").write_text("qat = true\nqat_consistency = 1.0\n" + tiny_codec(2))
    assert train_cli(["fit", "--data", str(tmp_path / "corpus"), "--config",
                      str(tmp_path / "c.toml"), "--run", str(tmp_path / "run_c")]) == 0
    cons = (tmp_path / "run_c" / "log.jsonl").read_text()
    assert '"qat_consistency"' in cons and "valid_mel_275" in cons
    assert train_cli(["bundle", str(run / "ckpt.pt"), "--out", str(tmp_path / "b")]) == 0
    codec = Codec.from_bundle(Bundle.load(tmp_path / "b").root)
    assert np.isfinite(codec.decode(codec.encode(speech[:16000]))).all()
    from gacflow.train.config import TrainConfig
    from gacflow.train.loop import build_model

    model = build_model(TrainConfig.load(tmp_path / "q.toml"))
    quantizers = enable(model.encoder)
    assert len(quantizers) == 1 + 4 * len(model.encoder.blocks)
    model.encoder(model.mel(torch.from_numpy(speech[:6400].copy())[None]))
    assert all(bool(q.seen) for q in quantizers)


def test_rounding_margin_penalises_latents_near_a_boundary_only(tmp_path: Path,
                                                                speech: np.ndarray) -> None:
    from gacflow.train.losses import rounding_margin

    far = torch.tensor([0.0, 1.0, 2.2, 2.8])  # >= 0.3 from every k + 0.5
    assert rounding_margin(far, 0.1) == 0
    near = torch.tensor([0.49, 1.52], requires_grad=True)
    loss = rounding_margin(near, 0.1)
    loss.backward()
    assert loss > 0 and near.grad[0] > 0 and near.grad[1] < 0  # descent: away from 0.5, 1.5
    phoneme_corpus(tmp_path / "corpus", tmp_path / "synth", speech)
    (tmp_path / "m.toml").write_text("margin_weight = 1.0\n" + tiny_codec(3))
    run = tmp_path / "run"
    assert train_cli(["fit", "--data", str(tmp_path / "corpus"), "--config",
                      str(tmp_path / "m.toml"), "--run", str(run)]) == 0
    assert '"margin"' in (run / "log.jsonl").read_text()


def test_intelligibility_loss_runs_a_frozen_recogniser_on_decoded_speech(
        tmp_path: Path, speech: np.ndarray) -> None:
    """`gacflow-train recognizer` trains (and resumes) a phoneme recogniser on a corpus with
    phonemes; a codec config with intel_weight then adds its CTC on decoded utterances to
    every step, validates it, and leaves the recogniser out of the checkpoint. A config
    that asks for the loss without a recogniser, or with a missing one, is one clear error."""
    import json

    from gacflow.train.recognizer import load_recognizer

    torch.set_num_threads(1)
    corpus = tmp_path / "corpus"
    phoneme_corpus(corpus, tmp_path / "synth", speech)
    rec = tmp_path / "rec.pt"
    assert train_cli(["recognizer", "--data", str(corpus), "--out", str(rec),
                      "--steps", "4", "--batch", "3"]) == 0
    first = torch.load(rec, weights_only=False)
    assert first["step"] == 4 and 0 <= first["log"][-1]["valid_per"] <= 2
    assert train_cli(["recognizer", "--data", str(corpus), "--out", str(rec),
                      "--steps", "6", "--batch", "3"]) == 0
    assert torch.load(rec, weights_only=False)["step"] == 6
    frozen = load_recognizer(rec)
    assert not any(p.requires_grad for p in frozen.parameters())

    cfg = tmp_path / "intel.toml"
    cfg.write_text(f'recognizer = "{rec}"\nintel_weight = 1.0\nintel_batch = 2\n' + tiny_codec(3))
    run = tmp_path / "run"
    assert train_cli(["fit", "--data", str(corpus), "--config", str(cfg),
                      "--run", str(run)]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert np.isfinite(log[-1]["intel_ctc"]) and np.isfinite(log[-1]["valid_intel_ctc"])
    ck = torch.load(run / "ckpt.pt", weights_only=False)
    assert ck["step"] == 3 and not any("recognizer" in k for k in ck["model"])
    for bad in ("", str(tmp_path / "missing.pt")):
        cfg.write_text(f'recognizer = "{bad}"\nintel_weight = 1.0\n' + tiny_codec(3))
        assert train_cli(["fit", "--data", str(corpus), "--config", str(cfg),
                          "--run", str(tmp_path / "bad")]) == 2


def test_a_missing_broken_or_foreign_checkpoint_is_one_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from gacflow.bundle import DEFAULT_BUNDLE

    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT_BUNDLE, bundle)
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    torch.save({"weights": 1}, tmp_path / "foreign.pt")
    for name in ("missing.pt", "broken.pt", "foreign.pt"):
        ck = str(tmp_path / name)
        assert train_cli(["bundle", ck, "--out", str(tmp_path / "out")]) == 2
        assert train_cli(["add-decoder", ck, "--bundle", str(bundle), "--size", "x"]) == 2
        err = capsys.readouterr().err
        assert err.count("gacflow-train: error:") == 2 and "Traceback" not in err
    assert Bundle.load(bundle).manifest == Bundle.load(DEFAULT_BUNDLE).manifest


def test_a_token_grown_by_one_digit_keeps_the_old_digits_bit_exact(tmp_path: Path,
                                                                    speech: np.ndarray) -> None:
    """`enh_levels` with one more digit than the starting checkpoint: the model starts out
    computing the same audio, training with the encoder frozen moves only the new digit's
    head row, and the bundle made from it has the wider 275 mode (11 bits) and a new id."""
    from gacflow.train.corpus import build, folder_sources

    torch.set_num_threads(1)
    src = tmp_path / "wavs"
    src.mkdir()
    sf.write(src / "x.flac", speech[:8 * 16000], 16000)
    build(tmp_path / "corpus", {"train": folder_sources(src), "valid": folder_sources(src)})
    fit = ["fit", "--data", str(tmp_path / "corpus")]
    (tmp_path / "base.toml").write_text(tiny_codec(3))
    assert train_cli(fit + ["--config", str(tmp_path / "base.toml"),
                            "--run", str(tmp_path / "base")]) == 0
    base_ck = tmp_path / "base" / "ckpt.pt"
    (tmp_path / "grow.toml").write_text(f'init_from = "{base_ck}"\nfreeze_encoder = true\n'
                                        "enh_levels = [4, 4, 2]\n" + tiny_codec(4))
    from gacflow.train.config import TrainConfig
    from gacflow.train.loop import build_model
    from gacflow.train.model import load_grown

    old = torch.load(base_ck, weights_only=False)["model"]
    grown = build_model(TrainConfig.load(tmp_path / "grow.toml")).eval()
    load_grown(grown, old)
    small = build_model(TrainConfig.load(tmp_path / "base.toml")).eval()
    small.load_state_dict(old)
    wav = torch.from_numpy(speech[: 640 * 8].copy())[None]
    with torch.no_grad():
        assert torch.equal(grown.codes(wav)[..., :5], small.codes(wav))
        assert torch.allclose(grown(wav, torch.ones(1)), small(wav, torch.ones(1)), atol=1e-5)

    assert train_cli(fit + ["--config", str(tmp_path / "grow.toml"),
                            "--run", str(tmp_path / "grow")]) == 0
    new = torch.load(tmp_path / "grow" / "ckpt.pt", weights_only=False)
    assert new["kept_digits"] == 5
    head = new["model"]["encoder.head.weight"]
    assert torch.equal(head[:5], old["encoder.head.weight"]) and head.shape[0] == 6
    assert not torch.equal(head[5], grown.encoder.head.weight[5])  # the new row learned
    assert all(torch.equal(v, old[k]) for k, v in new["model"].items()
               if k.startswith("encoder.") and not k.startswith("encoder.head")
               and k != "encoder.levels")
    for name, ck in (("b0", base_ck), ("b1", tmp_path / "grow" / "ckpt.pt")):
        assert train_cli(["bundle", str(ck), "--out", str(tmp_path / name)]) == 0
    b0, b1 = Bundle.load(tmp_path / "b0"), Bundle.load(tmp_path / "b1")
    assert b1.layout.mode("275").bits == 11 and b1.codec_id != b0.codec_id
    c0, c1 = Codec.from_bundle(b0.root), Codec.from_bundle(b1.root)
    t0, t1 = c0.encode(speech[:16000], "275"), c1.encode(speech[:16000], "275")
    np.testing.assert_array_equal(t1.ids // 2, t0.ids)  # the old ten bits, one bit more
    np.testing.assert_array_equal(c1.encode(speech[:16000], "175").ids,
                                  c0.encode(speech[:16000], "175").ids)
    assert c1.decode(t1).shape == (16000,)
