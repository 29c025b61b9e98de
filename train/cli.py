"""`gacflow-train`: build the corpus, train, and package a checkpoint as a bundle."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gacflow.errors import GacflowError
from gacflow.extras import require

from .synth import ENGINES, LANGUAGES

TORCH_FREE = {"corpus", "synth", "pack"}  # the rest train or read torch checkpoints


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gacflow-train", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corpus", help="decode the recorded corpus (and any folders) to shards")
    c.add_argument("--out", default="data/corpus")
    c.add_argument("--extra", nargs="*", type=Path, default=[],
                   help="more folders of WAV/FLAC to add to training")
    c.add_argument("--valid-extra", nargs="*", type=Path, default=[],
                   help="held-out folders for validation (e.g. a synthetic English set)")
    c.add_argument("--no-recorded", action="store_true",
                   help="leave out the Asterisk voices: train on --extra folders only "
                        "(their last speaker is held out unless --valid-extra is given)")
    c.add_argument("--voices", type=Path, nargs="*", default=[],
                   help="staged voices (`gacflow-train voices`): every speaker of its "
                        "speakers.json trains, except those held out below")
    c.add_argument("--valid-speakers", nargs="*", default=[],
                   help="with --voices: speakers held out as the validation split")
    c.add_argument("--exclude-speakers", nargs="*", default=[],
                   help="with --voices: speakers left out entirely (the report set)")
    c.add_argument("--seed", type=int, default=0)
    vs = sub.add_parser("voices", help="stage every voice source (Asterisk, Tux Paint, the "
                        "Queen, festvox) as WAV folders with a speaker manifest")
    vs.add_argument("--out", default="data/voices")
    vs.add_argument("--sources", nargs="*", default=None,
                    help="subset of: asterisk asterisk8k tuxpaint queen festvox")
    vs.add_argument("--cache", default=None, help="where .debs are fetched and unpacked "
                                                  "(default OUT/.cache)")
    vs.add_argument("--max-minutes", type=float, default=12.0,
                    help="cap per speaker, so no voice outweighs the rest")
    es = sub.add_parser("eval-set", help="a held-out folder for `gacflow eval` (whole "
                        "speakers; male / female / narrowband / English subsets)")
    es.add_argument("--out", required=True)
    es.add_argument("--voices", type=Path, nargs="+", default=[Path("data/voices")],
                    help="staged voice folders (gacflow-train voices)")
    es.add_argument("--speakers", nargs="+", required=True,
                    help="held-out speakers of the staged voices (never in the corpus)")
    es.add_argument("--texts", type=Path, nargs="*", default=[],
                    help="folders with .txt transcripts (e.g. gacflow-train synth): WER")
    es.add_argument("--narrowband", type=Path, nargs="*", default=[],
                    help="folders also written through G.711 at 8 kHz")
    es.add_argument("--per-speaker", type=int, default=8, help="clips of 2-10 s per speaker")
    s = sub.add_parser("synth", help="synthetic English with text + phonemes "
                                     "(espeak-ng/Kokoro/festival)")
    s.add_argument("--engine", choices=ENGINES, default="espeak",
                   help="espeak-ng (robotic, instant), Kokoro-82M (natural, ~real time) or "
                        "festival (US female HTS + male diphone)")
    s.add_argument("--out", default=None,
                   help="output folder (default data/synth-en, or data/synth-en-ENGINE)")
    s.add_argument("--count", type=int, default=2000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=1, help="Kokoro inference threads")
    s.add_argument("--language", choices=LANGUAGES, default="en",
                   help="espeak-ng only: text and voice language (needs Debian's "
                        "fortunes-LANG for its sentences)")
    s.add_argument("--exclude", nargs="*", default=[], metavar="DIR",
                   help="earlier synth folders whose sentences must not recur (e.g. the WER "
                        "evaluation set, when generating training data)")
    t = sub.add_parser("fit", help="train or resume a codec")
    t.add_argument("--config", default=None, help="TOML config (see train/configs/)")
    t.add_argument("--run", default="runs/base", help="run folder (checkpoint, logs)")
    t.add_argument("--data", default=None)
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--max-minutes", type=float, default=None,
                   help="stop after this much wall time, lr schedule fitted to it (leases)")
    t.add_argument("--chunk-minutes", type=float, default=None,
                   help="stop after this much wall time and keep the lr schedule: rerun "
                        "the same command to go on (background CPU training)")
    t.add_argument("--device", default=None, help="auto | cpu | cuda")
    p = sub.add_parser("pack", help="compact Opus copy of a corpus, to carry to a GPU machine "
                       "(training decodes it back on first use)")
    p.add_argument("--data", required=True, help="corpus folder (gacflow-train corpus)")
    p.add_argument("--out", required=True)
    p.add_argument("--level", type=float, default=0.92,
                   help="Opus compression level 0..1 (0.92 ~ 25 kbit/s)")
    w = sub.add_parser("slim", help="weights-only copy of a checkpoint (no optimiser or "
                       "discriminator state; decoder in fp16) to bring back from a lease")
    w.add_argument("checkpoint")
    w.add_argument("--out", required=True)
    w.add_argument("--decoder-only", action="store_true",
                   help="leave the encoder out (a frozen-encoder run)")
    w.add_argument("--discriminators", action="store_true",
                   help="keep the discriminators (fp16), to go on with the adversarial stage")
    v = sub.add_parser("voice-fit", help="fit the voice-code basis on a corpus's voices")
    v.add_argument("--data", default="data/corpus")
    v.add_argument("--out", required=True, help="JSON file for a training config's `voice`")
    v.add_argument("--dims", type=int, default=8)
    v.add_argument("--bits", type=int, default=3)
    ev = sub.add_parser("envelope-fit", help="give a bundle the envelope voice code: the "
                                              "receiver matches each speaker's spectral balance")
    ev.add_argument("--bundle", required=True, help="bundle folder to update (new codec id)")
    ev.add_argument("--data", default="data/corpus", help="corpus whose train split sets the "
                                                          "quantizer's ranges")
    ev.add_argument("--coefficients", type=int, default=16,
                    help="DCT coefficients of the envelope sent (16: +0.021 speaker sim, "
                         "12: +0.018, 20 at 5 bits: +0.025; docs/model.md)")
    ev.add_argument("--bits", type=int, default=4, help="bits per coefficient")
    e = sub.add_parser("entropy-fit", help="fit the bundle's entropy tables (packs tokens "
                                           "in fewer bits) on training audio")
    e.add_argument("--bundle", required=True, help="bundle folder to update")
    e.add_argument("--data", nargs="+", required=True,
                   help="training audio: folders of WAV/FLAC or corpus:SPLIT[@DIR]")
    e.add_argument("--held-out", nargs="*", default=[],
                   help="audio the tables must not see, to report their rate on")
    e.add_argument("--smoothing", type=float, default=4.0)
    lm = sub.add_parser("lm-fit", help="fit the bundle's token language model (adaptive "
                                       "entropy coding, sdk/tokenlm.py; docs/bitstream.md)")
    lm.add_argument("--bundle", required=True, help="bundle folder to update")
    lm.add_argument("--data", nargs="+", required=True,
                    help="the codec's training audio: asterisk:VOICE[,VOICE], folders of "
                         "WAV/FLAC or corpus:SPLIT[@DIR]")
    lm.add_argument("--held-out", nargs="*", default=[],
                    help="unseen voices to report bits per frame on (vs the v1 tables)")
    lm.add_argument("--smoothing", type=float, default=4.0)
    lm.add_argument("--min-count", type=int, default=6,
                    help="long contexts seen fewer times are not stored (table size)")
    lm.add_argument("--model", choices=("neural", "tables"), default="neural",
                    help="context model mixed with the adaptive tables: the integer neural "
                         "net over the last 8 frames (default), or the v2 context tables")
    lm.add_argument("--every", type=int, default=1,
                    help="fit on every Nth clip of each --data set: every speaker, 1/N of "
                         "the encoding time")
    lm.add_argument("--tokens-cache", default=None,
                    help="folder keeping each data set's tokens (per codec id) for reruns")
    r = sub.add_parser("recognizer", help="train the phoneme recogniser that the "
                                          "intelligibility loss runs on decoded audio")
    r.add_argument("--data", required=True,
                   help="corpus with phonemes (built from `gacflow-train synth` folders)")
    r.add_argument("--out", required=True, help="checkpoint file (resumed if it exists)")
    r.add_argument("--steps", type=int, default=3000)
    r.add_argument("--batch", type=int, default=12)
    b = sub.add_parser("bundle", help="package a checkpoint as a model bundle")
    b.add_argument("checkpoint")
    b.add_argument("--out", required=True)
    b.add_argument("--name", default="gacflow-base")
    a = sub.add_parser("add-decoder", help="add a decoder size (same encoder) to a bundle")
    a.add_argument("checkpoint")
    a.add_argument("--bundle", required=True)
    a.add_argument("--size", required=True, help="size name, e.g. large")
    a.add_argument("--default", action="store_true", help="make it the bundle's default")
    args = ap.parse_args(argv)
    try:
        if args.cmd not in TORCH_FREE:
            require("torch", "train", args.cmd)
        if args.cmd == "corpus":
            from .corpus import build, default_splits

            if args.voices:
                from .corpus import voice_splits

                splits = voice_splits(args.voices, args.valid_speakers,
                                      args.exclude_speakers, args.extra)
            else:
                splits = default_splits(args.extra, args.valid_extra, not args.no_recorded)
            m = build(Path(args.out), splits, args.seed)
            for split, s in m["splits"].items():
                print(f"{split}: {s['seconds']} s from {len(s['files'])} files, "
                      f"speakers {', '.join(s['speakers'])}")
        elif args.cmd == "eval-set":
            from .eval_set import build_eval_set

            m = build_eval_set(Path(args.out), args.voices, args.speakers, args.texts,
                               args.narrowband, args.per_speaker)
            for name, folders in m["subsets"].items():
                print(f"{name}: {', '.join(folders)}")
        elif args.cmd == "voices":
            from .sources.stage import stage

            m = stage(Path(args.out), args.sources, args.cache and Path(args.cache),
                      args.max_minutes)
            spk = m["speakers"].values()
            hours = sum(v["seconds"] for v in spk) / 3600
            print(f"{args.out}: {len(spk)} speakers ({sum(v['sex'] == 'm' for v in spk)} male, "
                  f"{sum(v['band'] == 'narrow' for v in spk)} narrowband), {hours:.1f} h")
        elif args.cmd == "synth":
            from .synth import build_synthetic, excluded_texts

            out = args.out or (f"data/synth-{args.language}" if args.engine == "espeak"
                               else f"data/synth-en-{args.engine}")
            exclude = excluded_texts([Path(d) for d in args.exclude])
            m = build_synthetic(Path(out), args.count, args.seed, args.engine,
                                threads=args.threads, exclude=exclude,
                                language=args.language)
            print(f"{len(m['items'])} utterances in {out}")
        elif args.cmd == "fit":
            from .config import TrainConfig
            from .loop import train

            cfg = TrainConfig.load(args.config, data=args.data, steps=args.steps,
                                   max_minutes=args.max_minutes, device=args.device,
                                   chunk_minutes=args.chunk_minutes)
            print(train(cfg, Path(args.run)))
        elif args.cmd == "pack":
            from .compact import pack

            m = pack(Path(args.data), Path(args.out), args.level)
            size = sum(f.stat().st_size for f in Path(args.out).glob("*.ogg"))
            print(f"{args.out}: {sum(len(c) for c in m['splits'].values())} Opus chunks, "
                  f"{size / 1e6:.1f} MB")
        elif args.cmd == "slim":
            from gacflow.model.checkpoint import slim_checkpoint

            slim_checkpoint(Path(args.checkpoint), Path(args.out),
                            ("decoder",) if args.decoder_only else ("encoder", "decoder"),
                            args.discriminators)
            print(f"{args.out}: {Path(args.out).stat().st_size / 1e6:.1f} MB")
        elif args.cmd == "voice-fit":
            from .voice import fit

            fit(Path(args.data), Path(args.out), args.dims, args.bits)
        elif args.cmd == "envelope-fit":
            from .voice import fit_envelope

            fit_envelope(Path(args.bundle), Path(args.data), args.coefficients, args.bits)
        elif args.cmd == "entropy-fit":
            from .entropy_fit import fit_entropy, print_report

            print_report(fit_entropy(Path(args.bundle), args.data, args.held_out,
                                     args.smoothing))
        elif args.cmd == "lm-fit":
            from .lm_fit import fit_lm
            from .lm_fit import print_report as print_lm_report

            print_lm_report(fit_lm(Path(args.bundle), args.data, args.held_out, args.smoothing,
                                   args.min_count,
                                   args.tokens_cache and Path(args.tokens_cache), args.every,
                                   args.model))
        elif args.cmd == "recognizer":
            from .recognizer import fit_recognizer

            print(fit_recognizer(Path(args.data), Path(args.out), args.steps, args.batch))
        elif args.cmd == "add-decoder":
            from gacflow.export.bundle_writer import add_decoder

            cid = add_decoder(Path(args.bundle), Path(args.checkpoint), args.size, args.default)
            print(f"{args.bundle}: decoder {args.size!r} added (codec {cid})")
        else:
            from gacflow.export.bundle_writer import write_torch_bundle

            print(write_torch_bundle(Path(args.checkpoint), Path(args.out), args.name))
    except GacflowError as exc:
        print(f"gacflow-train: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
