"""Tuner responsiveness on a large recording: 5,000 frames (2 streams x 2,500, with ground truth,
``dsprobe.sample.long_recording``, generated once into out/bench/long_5000.h5 in ~10 s).

Interleaved rounds of the user's actions, each timed from setting the control to the redrawn frame
picture (what the Tuner does synchronously; whole-recording metrics come from a background thread and
are timed separately), next to a plain redraw (the same frame's picture drawn and encoded with the
boxes already known) and a plain postprocess of the frame. Targets (issue 16): threshold and frame
changes <= 150 ms; clustering changes <= 500 ms or progress shown (the Tuner shows an hourglass at once
and the frame at once, so the clustering row is the frame redraw; the background time is reported).

If the real-browser test has run (tests/test_browser.py), its in-page latencies (event -> picture
changed in Chromium, out/test-artifacts/browser_latencies.json) are printed against the same targets.

``--search`` adds the 10 x 10 threshold x IoU search with mAP on 500 frames (target <= 30 s on 2 cores).

Run: ``.venv/bin/python benchmarks/bench_tuner.py [--rounds 7]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {
    "threshold": 0.150,
    "frame step": 0.150,
    "stream change": 0.150,
    "timeline click": 0.150,
    "NMS IoU (frame; progress shown)": 0.500,
    "cluster mode (frame; progress shown)": 0.500,
}
BROWSER_TARGETS = {
    "threshold -> frame": 0.150,
    "threshold (A/B) -> frame": 0.150,
    "frame step -> frame": 0.150,
    "frame +10 -> frame": 0.150,
    "stream -> frame": 0.150,
    "timeline click -> frame": 0.150,
    "timeline zoom -> timeline": 0.150,
    "NMS IoU -> frame": 0.500,
}


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def fmt(vals: list[float], target: float | None = None, base: float | None = None) -> str:
    med = statistics.median(vals)
    s = f"{med * 1e3:8.1f} ms  [{min(vals) * 1e3:6.1f}-{max(vals) * 1e3:6.1f}]"
    if target:
        s += f"  target {target * 1e3:4.0f} ms  ratio {med / target:5.2f}"
    if base:
        s += f"  x plain redraw {med / base:5.1f}"
    return s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--search", action="store_true", help="also the 10 x 10 search with mAP")
    args = ap.parse_args()

    from dsprobe import load_ground_truth, open_recording
    from dsprobe.notebook import Tuner
    from dsprobe.sample.long_recording import make_long_recording

    path = ROOT / "out" / "bench" / "long_5000.h5"
    gt_path = path.with_name(f"{path.stem}_gt.json")
    if not (path.exists() and gt_path.exists()):
        print(f"generating {path} (5,000 frames, once)...", flush=True)
        make_long_recording(path)
    rec = open_recording(path)
    gt = load_ground_truth(gt_path, frame_size=rec[0].frame_size)
    t0 = time.perf_counter()
    tuner = Tuner(rec, gt=gt)
    t_init = time.perf_counter() - t0
    t_first = timed(tuner.wait)
    print(
        f"recording {path}: {len(rec)} frames; Tuner built (decode once) in {t_init:.1f} s, "
        f"first whole-recording scores after {t_first:.1f} s more (background)"
    )

    res: dict[str, list[float]] = {k: [] for k in TARGETS}
    bg: dict[str, list[float]] = {"threshold": [], "NMS IoU": [], "cluster mode": []}
    bg["progress shown"] = []  # 1.0 when the hourglass was up right after the IoU change
    plain_draw, plain_pp = [], []
    for r in range(args.rounds):
        one_round(tuner, r, res, bg, plain_draw, plain_pp)
    base = statistics.median(plain_draw)
    print(
        f"\n== Tuner, {len(rec)} frames: control set -> frame redrawn (median [range] of "
        f"{args.rounds} interleaved rounds)"
    )
    for k, v in res.items():
        print(f"   {k:<38} {fmt(v, TARGETS[k], base)}")
    print(f"   {'plain redraw of the frame (boxes known)':<38} {fmt(plain_draw)}")
    print(f"   {'plain postprocess of the frame':<38} {fmt(plain_pp)}")
    print(
        "\n== whole-recording scores after the change (background thread; progress shown meanwhile)"
    )
    shown = bg.pop("progress shown")
    for k, v in bg.items():
        print(f"   {k:<38} {fmt(v)}")
    print(f"   progress shown at once after an NMS IoU change: {int(sum(shown))} of {len(shown)}")

    browser = ROOT / "out" / "test-artifacts" / "browser_latencies.json"
    if browser.exists():
        data = json.loads(browser.read_text())
        print(
            f"\n== real browser (tests/test_browser.py, Chromium + JupyterLab, {data['recording_frames']} "
            f"frames): user event -> page updated, written {time.ctime(browser.stat().st_mtime)}"
        )
        for k, v in data["seconds"].items():
            print(f"   {k:<38} {fmt(v, BROWSER_TARGETS.get(k))}")
    else:
        print(f"\n(no {browser}: run tests/test_browser.py for in-browser latencies)")
    if args.search:
        search_bench(rec, gt)
    rec.close()
    return 0


def one_round(tuner, r: int, res: dict, bg: dict, plain_draw: list, plain_pp: list) -> None:
    """One interleaved round of every action (``r`` varies the values)."""
    from dsprobe.notebook import Panel

    opts = tuner.frame.options
    # threshold (alternating values so the frame changes); then the background re-score
    res["threshold"].append(timed(lambda: setattr(tuner.threshold, "value", 0.6 if r % 2 else 0.3)))
    bg["threshold"].append(timed(tuner.wait))
    i = (r * 37) % (len(opts) - 2)
    tuner.frame.value = opts[i][1]
    res["frame step"].append(timed(lambda: tuner.player.step(1)))
    res["stream change"].append(
        timed(lambda: setattr(tuner.stream, "value", 1 - tuner.stream.value))
    )
    tl = tuner.timeline
    res["timeline click"].append(timed(lambda: tl.click(0.1 + 0.8 * ((r * 0.37) % 1))))
    tuner.wait()
    res["NMS IoU (frame; progress shown)"].append(
        timed(lambda: setattr(tuner.iou, "value", 0.6 if tuner.iou.value == 0.3 else 0.3))
    )
    bg["progress shown"].append(float("&#8987;" in tuner.metrics_text.value))
    bg["NMS IoU"].append(timed(tuner.wait))
    for mode in ("none", "nms"):  # and back, so the next round's IoU change is a real one
        res["cluster mode (frame; progress shown)"].append(
            timed(lambda m=mode: setattr(tuner.cluster, "value", m))
        )
        bg["cluster mode"].append(timed(tuner.wait))
    # plain: the same frame's picture with the boxes already known; a plain postprocess
    v, d, out = tuner.frame_view, tuner.detections, tuner.frame_outcome
    canvas = tuner.canvas(1)
    plain_draw.append(
        timed(lambda: (canvas.draw(v, [Panel(d, colors=out.colors)], tuner.labels), canvas.jpeg()))
    )
    plain_pp.append(timed(lambda: tuner.postprocess(v)))


def search_bench(rec, gt) -> None:
    import numpy as np

    from dsprobe import Postprocess, evaluate, search

    pp = Postprocess.from_nvinfer_config(rec.config())
    rows = np.flatnonzero(rec.frames["layer_row"].to_numpy() >= 0)[:500]
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
    t_run = timed(lambda: pp.run_recording(rec, rows))
    df = pp.run_recording(rec, rows)
    t_eval = timed(lambda: evaluate(df, gt, frames))
    t_search = timed(lambda: search(pp.decode_recording(rec, rows), gt, grid, frames=frames))
    print(f"\n== 10 x 10 threshold x IoU search with mAP, {len(rows)} frames")
    print(
        f"   search {t_search:6.2f} s (target <= 30 s: ratio {t_search / 30:4.2f}); one plain run "
        f"{t_run:5.2f} s, + mAP {t_eval:5.2f} s (100 of them ~{100 * (t_run + t_eval):.0f} s)"
    )


if __name__ == "__main__":
    raise SystemExit(main())
