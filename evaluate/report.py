"""Summaries of evaluation records: markdown table, per-clip CSV/JSON, bitrate-quality plot."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .metrics import Metric
from .runner import Record

NA = "n/a"


@dataclass
class Summary:
    """One system over all clips: bitrate = total bits / total seconds; metrics = clip means."""

    system: str
    nominal_bps: float
    bps: float
    clips: int
    failed: int
    means: dict[str, float | None]


def summarise(records: list[Record], metrics: list[Metric]) -> list[Summary]:
    order = list(dict.fromkeys(r.system for r in records))
    out = []
    for name in order:
        rs = [r for r in records if r.system == name]
        ok = [r for r in rs if r.error is None]
        seconds = sum(r.seconds for r in ok)
        means: dict[str, float | None] = {}
        for m in metrics:
            vals = [r.scores.get(m.key) for r in ok]
            vals = [v for v in vals if v is not None and not math.isnan(v)]
            means[m.key] = float(np.mean(vals)) if vals else None
        out.append(Summary(name, rs[0].nominal_bps,
                           sum(r.bytes for r in ok) * 8 / seconds if seconds else math.nan,
                           len(ok), len(rs) - len(ok), means))
    return out


def _fmt(v: float | None, digits: int) -> str:
    return NA if v is None or math.isnan(v) else f"{v:.{digits}f}"


DIGITS = {"stoi": 3, "estoi": 3, "pesq": 2, "spksim": 3, "wer": 3, "dmos": 2}


def markdown_table(summaries: list[Summary], metrics: list[Metric]) -> str:
    head = ["system", "nominal bit/s", "actual bit/s", *(m.column for m in metrics)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        cells = [s.system, f"{s.nominal_bps:.0f}", _fmt(s.bps, 0)]
        cells += [_fmt(s.means.get(m.key), DIGITS.get(m.key, 3)) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


SUBSETS_FILE = "subsets.json"  # in an evaluation folder: {"male": ["folder", ...], ...}


def load_subsets(data: str) -> dict[str, list[str]]:
    """Named groups of an evaluation folder's sub-folders (e.g. male, narrowband), if any."""
    path = Path(data) / SUBSETS_FILE
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {str(k): [str(f) for f in v] for k, v in raw.items()}
    except (ValueError, AttributeError, TypeError) as exc:
        from gacflow.errors import ConfigError

        raise ConfigError(f"{path}: want {{\"subset\": [\"folder\", ...]}} ({exc})") from exc


def subset_tables(records: list[Record], metrics: list[Metric],
                  subsets: dict[str, list[str]]) -> list[str]:
    """One markdown table per subset: the same systems over that subset's clips only."""
    out = []
    for name, folders in subsets.items():
        prefixes = tuple(f.rstrip("/") + "/" for f in folders)
        rs = [r for r in records if r.clip.startswith(prefixes)]
        if not rs:
            continue
        clips = len({r.clip for r in rs})
        out += [f"### {name}: {clips} clips ({', '.join(folders)})", "",
                markdown_table(summarise(rs, metrics), metrics), ""]
    return out


def notes(summaries: list[Summary], metrics: list[Metric], records: list[Record]) -> list[str]:
    """Why a column is n/a, and which system failed on which clips."""
    out = [f"{m.column}: n/a — {m.error}" for m in metrics if m.error]
    for m in metrics:
        if m.error is None and all(s.means.get(m.key) is None for s in summaries):
            out.append(f"{m.column}: n/a — no clip it applies to"
                       + (" (needs English .txt transcripts)" if m.key == "wer" else ""))
    for s in summaries:
        if s.failed:
            err = next(r.error for r in records if r.system == s.system and r.error)
            out.append(f"{s.system}: failed on {s.failed} clip(s): {err}")
    return out


def write_records(records: list[Record], out: Path, metrics: list[Metric]) -> None:
    """Per-clip results as clips.csv and clips.json."""
    keys = [m.key for m in metrics]
    with open(out / "clips.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["clip", "system", "seconds", "bytes", "bps", "nominal_bps", "lag_ms",
                    "run_seconds", *keys, "error"])
        for r in records:
            w.writerow([r.clip, r.system, f"{r.seconds:.3f}", r.bytes, f"{r.bps:.1f}",
                        f"{r.nominal_bps:.0f}", f"{r.lag_ms:.2f}", f"{r.run_seconds:.3f}",
                        *("" if r.scores.get(k) is None else f"{r.scores[k]:.4f}" for k in keys),
                        r.error or ""])
    rows = [{**asdict(r), "bps": r.bps} for r in records]
    for row in rows:  # strict JSON: a failed score (NaN) becomes null
        row["scores"] = {k: None if v is None or math.isnan(v) else v
                         for k, v in row["scores"].items()}
    (out / "clips.json").write_text(json.dumps(rows, indent=1, allow_nan=False) + "\n")


OUR_COLORS = ["darkred", "tab:orange", "tab:purple", "tab:green"]


def plot(summaries: list[Summary], path: Path, title: str = "") -> bool:
    """Log-x bit/s against STOI and DistillMOS; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return False
    panels = [("stoi", "STOI"), ("dmos", "DistillMOS")]
    fig, axes = plt.subplots(1, len(panels), figsize=(11, 4.2))
    for ax, (key, label) in zip(axes, panels, strict=True):
        pts = [s for s in summaries if s.means.get(key) is not None and s.bps > 0]
        for s in [s for s in pts if s.system.startswith("reference")]:
            ax.axhline(s.means[key], color="gray", linestyle="--", linewidth=1)
            ax.text(0.01, s.means[key], " uncoded reference", transform=ax.get_yaxis_transform(),
                    va="bottom", fontsize=7, color="gray")
        pts = [s for s in pts if not s.system.startswith("reference")]
        ours = [s for s in pts if s.system.startswith("gacflow")]
        decoders = sorted({s.system.partition("(")[2] for s in ours})
        for s in ours:
            # our rows share bit/s (decoder sizes, same tokens): a legend, not labels;
            # colour = decoder, marker = operating point
            color = OUR_COLORS[decoders.index(s.system.partition("(")[2]) % len(OUR_COLORS)]
            ax.scatter(s.bps, s.means[key], marker="^" if "175" in s.system else "o",
                       color=color, zorder=3, label=s.system)
        anchors = sorted((s for s in pts if s not in ours), key=lambda s: s.bps)
        for i, s in enumerate(anchors):
            ax.scatter(s.bps, s.means[key], marker="s", color="tab:blue", zorder=3)
            ax.annotate(s.system, (s.bps, s.means[key]), textcoords="offset points",
                        xytext=(4, 5 if i % 2 else -11), fontsize=7)  # alternate: no overlap
        if ours:
            ax.legend(fontsize=7, loc="lower right")
        ax.set_xscale("log")
        ticks = [100, 200, 500, 1000, 2000, 5000, 10000, 20000]
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        if pts:
            lo, hi = min(s.bps for s in pts), max(s.bps for s in pts)
            ax.set_xlim(lo / 1.5, hi * 1.5)
        ax.set_xlabel("actual bit/s (headers/container included)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        if not pts:
            ax.text(0.5, 0.5, f"{label}: n/a", transform=ax.transAxes, ha="center")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
