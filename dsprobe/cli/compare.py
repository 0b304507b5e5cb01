"""``dsprobe compare A.h5 B.h5``: the drift report of :func:`dsprobe.analysis.compare.compare` as text or JSON,
and a PNG of the per-frame drift (``--plot``)."""

from __future__ import annotations

import argparse
import json
import sys

import pandas as pd

from dsprobe.analysis.compare import CompareReport, compare
from dsprobe.postprocess.pipeline import Postprocess, PostprocessError
from dsprobe.recording.reader import RecordingError


def plot(rep: CompareReport, path: str) -> None:
    """PNG of the per-frame drift: max |A - B| per frame-level layer and stream, and the fraction of
    B's boxes matched in A (matplotlib, imported here)."""
    from dsprobe.notebook.figures import pyplot

    plt = pyplot()
    pf = rep.per_frame if rep.per_frame is not None else pd.DataFrame()
    cols = [c for c in pf.columns if c.startswith("max_abs:")]
    has_det = "matched_fraction" in pf
    fig, axes = plt.subplots(
        2 if has_det else 1, 1, figsize=(9, 5 if has_det else 3), squeeze=False
    )
    for c in cols:
        for src, g in pf.dropna(subset=[c]).groupby("source_id"):
            axes[0, 0].plot(g["frame_num"], g[c], label=f"{c[8:]} source {src}", linewidth=1)
    axes[0, 0].set_ylabel("max |A - B|")
    axes[0, 0].set_title(f"A {rep.a}  vs  B {rep.b}", fontsize=8)
    if cols:
        axes[0, 0].legend(fontsize=7)
    if has_det:
        for src, g in pf.dropna(subset=["matched_fraction"]).groupby("source_id"):
            axes[1, 0].plot(
                g["frame_num"], g["matched_fraction"], label=f"source {src}", linewidth=1
            )
        axes[1, 0].set_ylabel("B boxes matched in A")
        axes[1, 0].set_ylim(-0.05, 1.05)
        axes[1, 0].legend(fontsize=7)
    axes[-1, 0].set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="recording A (e.g. from the device)")
    p.add_argument("b", help="recording B, the reference (e.g. the reference recorder's)")
    p.add_argument(
        "--postprocess",
        help="postprocess spec for the detection-level comparison "
        "(default: from A's nvinfer config)",
    )
    p.add_argument(
        "--by",
        choices=("frame", "pts"),
        default="frame",
        help="align frames by frame number or PTS",
    )
    p.add_argument("--iou", type=float, default=0.5, help="IoU for matching boxes (default 0.5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--plot", help="write a PNG of the per-frame drift here")


def run(args: argparse.Namespace) -> int:
    try:
        pp = Postprocess.load(args.postprocess) if args.postprocess else None
        rep = compare(args.a, args.b, pp, args.by, args.iou)
    except (RecordingError, OSError) as exc:  # a bad recording: one line, exit 2
        print("dsprobe compare: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    except (PostprocessError, ValueError, KeyError) as exc:
        print("dsprobe compare: " + " ".join(str(exc).split()), file=sys.stderr)
        return 1
    print(json.dumps(rep.to_dict(), indent=2) if args.json else rep.text())
    if args.plot:
        plot(rep, args.plot)
        print(f"plot: {args.plot}", file=sys.stderr)
    return 0
