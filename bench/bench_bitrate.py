"""Every bit counted: what `.gac` files and live streams cost, all bytes included.

    python bench/bench_bitrate.py --make-clips          # once: held-out clips from Asterisk
    OMP_WAIT_POLICY=PASSIVE python bench/bench_bitrate.py [--clips DIR] [--update-benchmarks]

Held-out clips (`--make-clips`, into data/bitrate-heldout/): the prompts of two Asterisk
voices the codec never heard (ru_RU_f_IvrvoiceRU, the corpus's validation voice, and
it_IT_f_Menardi; the codec was trained on es_MX_f_Allison, fr_CA_f_June, it_IT_m_Carlo).
`short/` holds the 2-8 s prompts as they are, `long/` prompts joined into 30 s files,
`live/` one 3 s and one 30 s file. Any folder with those subfolders of WAVs works.

Reports, for the shipped bundle:
- files: mean bit/s of `gacflow encode` output (default options, in-process) over the
  2-8 s clips, modes 275 and 175, against today's v1 layout with the v1 tables; and the
  decoded tokens against the encoded ones (must be identical);
- long files: the same over the 30 s files (mode 275);
- token model: ideal bits per frame, v1 tables vs the token LM, per clip / 1 s packet /
  30 s stream, and the coder's speed against the 1 % real-time budget;
- live: the MQTT payload bit/s of real `gacflow-edge` runs (bench/edge_bitrate.py) at 1 s
  batching on the 3 s and 30 s files, and with `--max-bitrate 200`.
Writes bench/results/bitrate.md; `--update-benchmarks` puts it in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from gacflow import container  # noqa: E402
from gacflow.bitstream import Packet, decode_packet, encode_packet  # noqa: E402
from gacflow.bundle import Bundle  # noqa: E402
from gacflow.spec import FRAME_RATE, SAMPLE_RATE  # noqa: E402

OUT = ROOT / "bench" / "results"
CLIPS = ROOT / "data" / "bitrate-heldout"
VOICES = ("ru_RU_f_IvrvoiceRU", "it_IT_f_Menardi")
BEGIN, END = "<!-- bitrate:begin -->", "<!-- bitrate:end -->"


def make_clips(out: Path) -> None:
    """Write short/, long/ and live/ from the installed Asterisk prompts of VOICES."""
    from gacflow.audio import write_wav
    from gacflow.train.corpus import ASTERISK_ROOT, load_any

    for sub in ("short", "long", "live"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for voice in VOICES:
        files = sorted(p for p in (ASTERISK_ROOT / voice).rglob("*")
                       if p.suffix in (".g722", ".wav"))
        joined: list[np.ndarray] = []
        n_long = 0
        for path in files:
            wav = load_any(path)
            secs = len(wav) / SAMPLE_RATE
            if 2.0 <= secs <= 8.0:
                write_wav(out / "short" / f"{voice}-{path.stem}.wav", wav)
            joined.append(wav)
            if sum(map(len, joined)) >= 30 * SAMPLE_RATE and n_long < 6:
                write_wav(out / "long" / f"{voice}-{n_long}.wav",
                          np.concatenate(joined)[: 30 * SAMPLE_RATE])
                joined, n_long = [], n_long + 1
        if voice == VOICES[0]:
            three = next(load_any(p) for p in files
                         if 3.0 <= len(load_any(p)) / SAMPLE_RATE <= 3.6)
            write_wav(out / "live" / "3s.wav", three[: 3 * SAMPLE_RATE])
            write_wav(out / "live" / "30s.wav", np.concatenate(
                [load_any(p) for p in files[:40]])[: 30 * SAMPLE_RATE])
    print(f"wrote {out}/short, long, live")


def encode_files(paths: list[Path], mode: str, work: Path) -> list[dict]:
    """What `gacflow encode IN OUT --mode MODE` does (sdk/cli/main.py, cmd_encode, default
    options), with the bundle loaded once; then decode the file and compare."""
    from gacflow.audio import read_audio
    from gacflow.backends import resolve_backend
    from gacflow.cli.main import encode_with_backend

    bundle = Bundle.load()
    lm = bundle.entropy
    legacy = getattr(lm, "legacy", lm)
    width = bundle.layout.mode(mode).bits
    backend = resolve_backend(bundle, "auto")
    rows = []
    for path in paths:
        gac = work / f"{path.stem}.{mode}.gac"
        encoded = encode_with_backend(bundle, read_audio(path), mode, backend)
        container.write(gac, encoded, width, lm)
        tokens, info = container.read(gac, lm, bundle.codec_id)
        v1 = container.dumps_v1(encoded, width, legacy)
        rows.append({"file": path.name, "seconds": info.duration, "bps": info.bitrate,
                     "v1_bps": len(v1) * 8 / info.duration, "ids": tokens.ids,
                     "lossless": bool(np.array_equal(encoded.ids, tokens.ids)
                                      and np.array_equal(container.loads(v1, legacy)[0].ids,
                                                         tokens.ids))})
    return rows


def coder_speed(lm, ids: np.ndarray) -> tuple[float, float]:
    """Microseconds per frame to code and to decode 1 s packets (275 mode)."""
    packets = [Packet(0, k, k * FRAME_RATE, ids[k * FRAME_RATE:(k + 1) * FRAME_RATE], 10)
               for k in range(len(ids) // FRAME_RATE)]
    t = time.perf_counter()
    blobs = [encode_packet(p, lm) for p in packets]
    enc = time.perf_counter() - t
    t = time.perf_counter()
    for b in blobs:
        decode_packet(b, lm)
    dec = time.perf_counter() - t
    n = sum(p.frame_count for p in packets)
    return enc / n * 1e6, dec / n * 1e6


def live(clips: Path) -> list[tuple[str, str, dict]]:
    """Real agent runs at 1 s batching (defaults: DTX on, entropy coding on)."""
    from edge_bitrate import Mosquitto, run_agent

    out = []
    broker = Mosquitto().start()
    try:
        with tempfile.TemporaryDirectory(prefix="gacflow-bitrate-") as tmp:
            for name in ("3s.wav", "30s.wav"):
                wav = clips / "live" / name
                out.append((name, "default", run_agent(broker.url, wav, 1.0, True, Path(tmp))))
                out.append((name, "--max-bitrate 200", run_agent(
                    broker.url, wav, 1.0, True, Path(tmp), ["--max-bitrate", "200"])))
    finally:
        broker.close()
    return out


def report(clips: Path, with_live: bool) -> str:
    from gacflow.train.lm_fit import rates

    bundle = Bundle.load()
    lm = bundle.entropy
    legacy = getattr(lm, "legacy", lm)
    short = sorted((clips / "short").glob("*.wav"))
    long = sorted((clips / "long").glob("*.wav"))
    if not short or not long:
        raise SystemExit(f"no clips in {clips}/short and /long: run with --make-clips first")
    lines = [f"Codec {bundle.codec_id}, token model {lm.tag:02x} "
             f"(fitted on {', '.join(bundle.manifest['entropy'].get('fitted_on', ['?']))}); "
             f"held-out clips {clips.relative_to(ROOT) if clips.is_relative_to(ROOT) else clips}"
             f" (voices {', '.join(VOICES)}). Every byte of the file counted.", "",
             "| files | mode | clips | mean s | mean bit/s (v2, now) | v1 layout + v1 tables "
             "(before) | target | decoded = encoded |", "|---|---|---:|---:|---:|---:|---:|---|"]
    short_ids = None
    with tempfile.TemporaryDirectory(prefix="gacflow-gac-") as tmp:
        for label, paths, modes, target in (("2-8 s", short, ("275", "175"), None),
                                            ("30 s", long, ("275",), 200)):
            for mode in modes:
                rows = encode_files(paths, mode, Path(tmp))
                if label == "2-8 s" and mode == "275":
                    short_ids = [r["ids"] for r in rows]
                goal = target if target else int(mode)
                mean = float(np.mean([r["bps"] for r in rows]))
                lines.append(
                    f"| {label} | {mode} | {len(rows)} | "
                    f"{np.mean([r['seconds'] for r in rows]):.1f} | **{mean:.1f}** | "
                    f"{np.mean([r['v1_bps'] for r in rows]):.1f} | <= {goal} "
                    f"{'met' if mean <= goal else 'MISSED'} | "
                    f"{'all' if all(r['lossless'] for r in rows) else 'NO'} |")
    seqs = short_ids or []
    lines += ["", "Token model, ideal bits per frame on the 2-8 s clips (`rates` of "
              "train/lm_fit.py: whole clip, 1 s packets and 30 s streams of joined clips, "
              "175 mode whole clip):", "",
              "| model | clip | 1 s packets | 30 s streams | 175 clip |",
              "|---|---:|---:|---:|---:|"]
    r1, r2 = rates(legacy, seqs), rates(lm, seqs)
    rows = [("v1 tables (prev-digit/1)", r1)]
    rows += [(f"replaced token LM {m.tag:02x} ({type(m).__name__})", rates(m, seqs))
             for m in getattr(lm, "previous", ())]
    rows.append((f"token LM {lm.tag:02x} ({type(lm).__name__}), shipped", r2))
    for name, r in rows:
        lines.append(f"| {name} | {r['clip']:.3f} | {r['1s']:.3f} | {r['30s']:.3f} | "
                     f"{r['clip175']:.3f} |")
    for name, r in rows[:-1]:
        lines.append(f"| saved vs {name.split(' (')[0]} | " + " | ".join(
            f"{1 - r2[k] / r[k]:.1%}" for k in ("clip", "1s", "30s", "clip175")) + " |")
    enc_us, dec_us = coder_speed(lm, np.concatenate(seqs)[: 30 * FRAME_RATE])
    lines += ["", f"Token LM coder, pure Python, one core of this (shared) CPU: {enc_us:.0f} us "
              f"per frame to code, {dec_us:.0f} us to decode: {enc_us / 400:.2f} % of real "
              "time on the edge (a frame is 40 ms; budget 1 %)."]
    if with_live:
        lines += ["", "Live: real `gacflow-edge` runs at `--batch-seconds 1` (DTX on, entropy "
                  "coding on), MQTT payload of the whole stream (bench/edge_bitrate.py):", "",
                  "| input | options | packets | packets at 175 | payload bit/s | target |",
                  "|---|---|---:|---:|---:|---|"]
        for name, opts, s in live(clips):
            target = 200 if "max" in opts else 275
            lines.append(f"| {name} | {opts} | {s['packets']} | {s.get('packets_175', 0)} | "
                         f"**{s['bitrate']:.0f}** | <= {target} "
                         f"{'met' if s['bitrate'] <= target else 'MISSED'} |")
    return "\n".join(lines) + "\n"


def update_benchmarks(text: str, cmd: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    doc = path.read_text()
    block = f"{BEGIN}\nRerun: `{cmd}`\n\n{text}{END}"
    if BEGIN in doc and END in doc:
        doc = doc[: doc.index(BEGIN)] + block + doc[doc.index(END) + len(END):]
    else:
        doc += f"\n## Bit rate, every byte counted (`bench/bench_bitrate.py`)\n\n{block}\n"
    path.write_text(doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=Path, default=CLIPS)
    ap.add_argument("--make-clips", action="store_true", help="write the held-out clips first")
    ap.add_argument("--no-live", action="store_true", help="skip the gacflow-edge runs")
    ap.add_argument("--update-benchmarks", action="store_true",
                    help="replace the bit-rate block of BENCHMARKS.md with this report")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    if args.make_clips:
        make_clips(args.clips)
    text = report(args.clips.resolve(), not args.no_live)
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / "bitrate.md").write_text(text)
    if args.update_benchmarks:
        update_benchmarks(text, "OMP_WAIT_POLICY=PASSIVE python bench/bench_bitrate.py "
                                "--make-clips --update-benchmarks")
    print(f"wrote {OUT / 'bitrate.md'}")


if __name__ == "__main__":
    main()
