"""`gacflow eval`: our codec vs Codec 2 / Opus anchors on the same clips, one table and a plot.

    gacflow eval --bundle B --data DIR|corpus:valid [--modes 275,175] [--decoders small]
                 [--anchors codec2-3200,...,opus-6] [--metrics stoi,...] [--max-files N] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gacflow.errors import GacflowError

DEFAULT_ANCHORS = "codec2-3200,codec2-1200,codec2-700C,codec2-450,opus-6"


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    from .data import MIN_SPEECH
    from .metrics import DEFAULT_METRICS

    p = argparse.ArgumentParser(prog="gacflow eval", description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default=None, help="bundle folder (default: the shipped one)")
    p.add_argument("--data", required=True,
                   help="folder of WAV/FLAC (+ same-stem .txt transcripts) or corpus:SPLIT[@DIR]")
    p.add_argument("--modes", default="275,175", help="our operating points (comma list)")
    p.add_argument("--decoders", default=None,
                   help="decoder sizes from the bundle manifest (default: all)")
    p.add_argument("--anchors", default=DEFAULT_ANCHORS,
                   help="codec2-<3200|1200|700C|450>, opus-<kbps>; '' for none")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                   help="stoi,estoi,pesq,spksim,wer,dmos (missing packages show n/a)")
    p.add_argument("--no-reference", action="store_true",
                   help="leave out the uncoded reference row")
    p.add_argument("--max-files", type=int, default=None, help="evaluate at most N clips")
    p.add_argument("--skip-files", type=int, default=0,
                   help="leave out the first N usable clips (a disjoint set for choosing "
                        "checkpoints)")
    p.add_argument("--min-seconds", type=float, default=1.0, help="skip shorter clips")
    p.add_argument("--min-speech", type=float, default=MIN_SPEECH,
                   help="skip clips with a smaller fraction of voiced frames (silence files, "
                        "sound effects; the edge's VAD decides); 0 keeps every clip")
    p.add_argument("--out", default="eval-out", help="folder for quality.md/png, clips.csv/json")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="torch device for our decoder")
    return p


def build_systems(args: argparse.Namespace) -> tuple[list, list[str]]:
    """Our codec at every (decoder, mode), then the anchors; notes for skipped anchors."""
    from gacflow.bundle import Bundle
    from gacflow.errors import ConfigError

    from .systems import Ours, Reference, ToolMissing, anchor

    bundle = Bundle.load(args.bundle)
    have = sorted(bundle.model_config["decoders"])
    decoders = _csv(args.decoders) if args.decoders else have
    missing = [d for d in decoders if d not in have]
    if missing:
        raise ConfigError(f"bundle has no decoder {missing[0]!r} (it has {', '.join(have)})")
    modes = _csv(args.modes)
    for m in modes:
        bundle.layout.mode(m)  # unknown mode -> the layout's own error
    systems: list = []
    if modes:
        from gacflow.model import Codec

        for dec in decoders:
            codec = Codec.from_bundle(args.bundle, decoder=dec, device=args.device)
            systems += [Ours(codec, mode, dec) for mode in modes]
    notes = []
    for name in _csv(args.anchors):
        try:
            systems.append(anchor(name))
        except ToolMissing as exc:
            notes.append(f"{name}: skipped — {exc}")
    if not args.no_reference:
        systems.append(Reference())
    return systems, notes


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from .data import ClipFilter, load_clips
    from .metrics import make_metrics
    from .report import (
        load_subsets,
        markdown_table,
        notes,
        plot,
        subset_tables,
        summarise,
        write_records,
    )
    from .runner import evaluate

    torch.set_num_threads(max(1, args.threads))
    metrics = make_metrics(_csv(args.metrics))
    keep = ClipFilter(args.min_seconds, args.min_speech)
    clips = load_clips(args.data, args.max_files, keep, args.skip_files)
    load_subsets(args.data)  # a malformed subsets.json fails before the long run
    systems, system_notes = build_systems(args)
    for m in metrics:
        m.available()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tqdm(total=len(clips) * len(systems), unit="run", desc="eval") as bar:
        records = evaluate(clips, systems, metrics,
                           progress=lambda name: (bar.set_postfix_str(name), bar.update()))
    summaries = summarise(records, metrics)
    seconds = sum(c.seconds for c in clips)
    codec_id = next((s.codec.codec_id for s in systems if hasattr(s, "codec")), "none")
    table = markdown_table(summaries, metrics)
    all_notes = system_notes + notes(summaries, metrics, records)
    skipped = keep.skipped()
    left_out = f" (left out: {skipped})" if skipped else ""
    header = (f"Data: `{args.data}`, {len(clips)} clips, {seconds:.1f} s{left_out}; "
              f"codec `{codec_id}`. "
              "Bit/s: actual = bytes of the .gac / Codec 2 bit file / Ogg Opus file x 8 / "
              "seconds; metrics = mean over clips.")
    subsets = subset_tables(records, metrics, load_subsets(args.data))
    doc = "\n".join([header, "", table, "", *(f"- {n}" for n in all_notes), "",
                     *subsets]).rstrip() + "\n"
    (out / "quality.md").write_text(doc)
    write_records(records, out, metrics)
    plotted = plot(summaries, out / "quality.png", f"{args.data} — {len(clips)} clips — {codec_id}")
    print(doc)
    print(f"wrote {out / 'quality.md'}, {out / 'clips.csv'}, {out / 'clips.json'}"
          + (f", {out / 'quality.png'}" if plotted else " (no plot: matplotlib not installed)"))
    return 0


def main(argv: list[str]) -> int:
    """Entry point for `gacflow eval ...`; user errors -> one stderr line, exit 2."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, argparse printed why)
        return int(exc.code or 0)
    try:
        return run(args)
    except GacflowError as exc:
        print(f"gacflow eval: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
