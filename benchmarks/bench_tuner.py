"""Tuner and search speed on the bundled sample recording (600 frames, 2 streams, 1280x720).

1. A threshold slider change -> the tuner's redrawn figure for one frame (target <= 150 ms), next to
   one plain postprocess run on that frame; also with the per-frame counts over the whole recording.
2. A 10 x 10 pre-cluster threshold x NMS IoU search with mAP on 500 frames (target <= 30 s on 2 cores),
   next to one plain postprocess run (and one run + mAP) on the same 500 frames.

Run: ``.venv/bin/python benchmarks/bench_tuner.py``. The committed recordings/sample.h5 holds 2 s per
stream (60 frames), so by default the same sample is recorded for 20 s per stream (600 frames, as
``python -m dsprobe.cli.demo --make-sample`` does for 2 s) into out/bench/sample_20s.h5 on first use (~1 min).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def timed(fn, repeat: int = 1) -> tuple[float, object]:
    """Median seconds of ``repeat`` calls, and the last result."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--recording",
        help="recording with <stem>_gt.json beside it (default: the sample, 2 x 20 s)",
    )
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--changes", type=int, default=20, help="slider changes to time")
    args = ap.parse_args()

    from dsprobe import Postprocess, open_recording
    from dsprobe.analysis.evaluate import evaluate, load_ground_truth
    from dsprobe.analysis.search import search
    from dsprobe.notebook.tuner import Tuner

    if args.recording:
        path = Path(args.recording)
    else:
        path = ROOT / "out" / "bench" / "sample_20s.h5"
        if not (path.exists() and path.with_name(f"{path.stem}_gt.json").exists()):
            from dsprobe.cli.demo import make_sample

            print(f"recording the sample streams for 20 s each into {path} (once)...", flush=True)
            make_sample(path, seconds=20.0)
    rec = open_recording(path)
    pp = Postprocess.from_nvinfer_config(rec.config())
    print(f"recording {path}: {len(rec)} frames, layers {list(rec.layers)}")

    # 1. slider -> redrawn frame
    values = [0.25 + 0.5 * (i % 2) + 0.01 * i for i in range(args.changes)]
    results = {}
    for counts in (False, True):
        tuner = Tuner(rec, pp, show_counts=counts)
        tuner.threshold.value = 0.26  # warm caches (clustering at the lowest threshold used below)
        tuner.threshold.value = 0.25
        per_change = []
        for v in values:
            t0 = time.perf_counter()
            tuner.threshold.value = round(v, 2)
            per_change.append(time.perf_counter() - t0)
        results[counts] = statistics.median(per_change)
    frame = rec[tuner.row]
    t_plain, _ = timed(lambda: pp(frame), repeat=20)
    print("\n== slider change -> redrawn figure (one frame), median of", args.changes)
    print(
        f"   tuner, frame figure only           {results[False] * 1e3:7.1f} ms   (target <= 150 ms)"
    )
    print(f"   tuner, frame + counts ({len(tuner.rows)} frames) {results[True] * 1e3:7.1f} ms")
    print(
        f"   plain postprocess of that frame    {t_plain * 1e3:7.1f} ms   "
        f"(figure / plain = {results[False] / t_plain:.1f}x)"
    )

    # 2. 10 x 10 search with mAP on N frames
    gt_path = path.with_name(f"{path.stem}_gt.json")
    gt = load_ground_truth(gt_path, frame_size=rec[0].frame_size)
    rows = np.flatnonzero(rec.frames["layer_row"].to_numpy() >= 0)[: args.frames]
    frames = list(
        zip(
            rec.frames["source_id"].iloc[rows].astype(int),
            rec.frames["frame_num"].iloc[rows].astype(int),
        )
    )
    grid = {
        "pre_cluster_threshold": [round(float(x), 2) for x in np.linspace(0.05, 0.6, 10)],
        "iou_threshold": [round(float(x), 2) for x in np.linspace(0.3, 0.75, 10)],
    }
    t_run, df = timed(lambda: pp.run_recording(rec, rows), repeat=3)
    t_eval, _ = timed(lambda: evaluate(df, gt, frames), repeat=3)

    def run_search():
        decoded = pp.decode_recording(rec, rows)
        return search(decoded, gt, grid, frames=frames)

    t_search, res = timed(run_search)
    n = len(res.table)
    print(
        f"\n== {len(grid['pre_cluster_threshold'])} x {len(grid['iou_threshold'])} threshold x IoU search with mAP, "
        f"{len(rows)} frames"
    )
    print(
        f"   search (decode once + {n} settings)  {t_search:7.2f} s   (target <= 30 s on 2 cores)"
    )
    print(
        f"   one plain postprocess run          {t_run:7.2f} s   (search / plain run = {t_search / t_run:.1f}x)"
    )
    print(
        f"   one plain run + mAP                {t_run + t_eval:7.2f} s   "
        f"({n} of them: ~{n * (t_run + t_eval):.0f} s, {n * (t_run + t_eval) / t_search:.0f}x the search)"
    )
    print(
        f"   best {res.best_params}: mAP@0.5 {res.table.iloc[0]['map50']:.4f}, "
        f"mAP@0.5:0.95 {res.table.iloc[0]['map50_95']:.4f}"
    )
    rec.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
