"""Search scoring on an 80-class model: dsprobe's numpy COCO matcher against pycocotools (and
faster-coco-eval when importable), side by side in one run, and a 10 x 10 search on 500 frames.

The case: a synthetic YOLOv8-640 head (80 classes, 8400 anchors; 1280x720 frames letterboxed), 500
frames with 5-40 planted objects each (ground truth; ~5% of them crowd regions), every object lighting
up ~20 anchors, plus a second class on some objects and stray false positives. The recording and its
COCO ground truth are written once to ``out/bench/search_80c_<frames>.h5`` (~2.8 MB a frame).

Rows:

1. scoring one set of detections (``evaluate``: match + accumulate) vs pycocotools ``COCOeval``
   (evaluate + accumulate, area "all", 1000 per frame) and faster-coco-eval's ``COCOeval_faster``:
   medians of interleaved rounds (a new random order each round), the ratio to pycocotools (target
   >= 5x), whether the numbers are equal to the last bit, and the peak Python memory of each
   (tracemalloc);
2. a 10 x 10 pre-cluster threshold x NMS IoU ``search`` (100 settings scored; decoded once,
   timed apart): the flat CPU path on every frame against the 10 s target, and side by side in
   the same interleaved rounds the flat path and the per-frame reference (``Reclusterer(...,
   per_frame=True)``: the search as it was, every frame re-clustered by the steps, every cut
   matched) on the first ``--baseline-frames`` frames (the reference takes minutes at 500), with
   wall and CPU medians, ranges and the load during the rounds; whether the two tables are equal to
   the last bit; peak Python memory vs frames.

Run: ``.venv/bin/python benchmarks/bench_search.py [--frames 500] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_postprocess import yolov8_output  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FRAME = (1280, 720)
NC = 80


def make_case(path: Path, frames: int, seed: int = 0) -> None:
    """Record ``frames`` synthetic YOLOv8 frames and write their COCO ground truth beside them."""
    from dsprobe import Recorder
    from dsprobe.records import FrameRecord

    rng = np.random.default_rng(seed)
    backgrounds = [yolov8_output(rng, objects=0, nc=NC) for _ in range(8)]
    grid = backgrounds[0][:2].T.copy()
    scale, pad = 0.5, 140.0  # 1280x720 -> 640x640, symmetric padding
    images, anns = [], []
    path.parent.mkdir(parents=True, exist_ok=True)
    with Recorder(path, images=False, drop_when_full=False) as rec:
        for i in range(frames):
            out = backgrounds[i % 8].copy()
            out[2:4] = rng.uniform(8, 40, (2, out.shape[1]))
            for _ in range(rng.integers(5, 41)):
                c = int(rng.integers(NC))
                w, h = rng.uniform(20, 400), rng.uniform(20, 300)
                x, y = rng.uniform(0, FRAME[0] - w), rng.uniform(0, FRAME[1] - h)
                crowd = int(rng.random() < 0.05)
                anns.append(
                    {
                        "id": len(anns) + 1,
                        "image_id": i,
                        "category_id": c,
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": crowd,
                    }
                )
                if rng.random() < 0.15:  # missed by the detector
                    continue
                cx, cy = (x + w / 2) * scale, (y + h / 2) * scale + pad
                near = np.argpartition(np.hypot(grid[:, 0] - cx, grid[:, 1] - cy), 20)[:20]
                out[0, near] = cx + rng.normal(0, w * scale * 0.05, 20)
                out[1, near] = cy + rng.normal(0, h * scale * 0.05, 20)
                out[2, near] = w * scale * rng.uniform(0.85, 1.15, 20)
                out[3, near] = h * scale * rng.uniform(0.85, 1.15, 20)
                out[4 + c, near] = rng.uniform(0.05, 0.95, 20)
                if rng.random() < 0.2:  # a confusable second class
                    out[4 + int(rng.integers(NC)), near] = rng.uniform(0.05, 0.6, 20)
            stray = rng.integers(0, out.shape[1], 30)
            out[4 + rng.integers(0, NC, 30), stray] = rng.uniform(0.05, 0.7, 30)
            rec.record(
                FrameRecord(
                    0, i, network_size=(640, 640, 3), frame_size=FRAME, layers={"output0": out}
                )
            )
            images.append(
                {"id": i, "source_id": 0, "frame_num": i, "width": FRAME[0], "height": FRAME[1]}
            )
    cats = [{"id": c, "name": f"class{c}"} for c in range(NC)]
    gt_path = path.with_name(f"{path.stem}_gt.json")
    gt_path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))


def spec():
    from dsprobe import Postprocess

    return Postprocess(
        [
            {"kind": "decode", "name": "yolov8", "params": {"score_threshold": 0.05}},
            {"kind": "filter", "name": "threshold", "params": {"pre_cluster_threshold": 0.25}},
            {"kind": "cluster", "name": "nms", "params": {"iou_threshold": 0.45}},
            {
                "kind": "scale",
                "name": "nvinfer",
                "params": {"maintain_aspect_ratio": True, "symmetric_padding": True},
            },
        ],
        num_classes=NC,
    )


def faster_coco_eval_scorer():
    """A function scoring like pycocotools_evaluate with faster-coco-eval, or None if not installed."""
    try:
        from faster_coco_eval import COCO, COCOeval_faster
    except ImportError:
        return None
    from dsprobe.analysis.accumulation import Accumulated
    from dsprobe.analysis.cocoeval import coco_results
    from dsprobe.analysis.evaluate import coco_scores, frame_image_id

    def score(df, gt, frames):
        ids = sorted({frame_image_id(s, f) for s, f in frames})
        idset = set(ids)
        cg = COCO()
        cg.dataset = {
            "images": [{"id": i} for i in ids],
            "annotations": [a for a in gt.coco["annotations"] if a["image_id"] in idset],
            "categories": gt.coco["categories"],
        }
        with contextlib.redirect_stdout(io.StringIO()):
            cg.createIndex()
            ev = COCOeval_faster(cg, cg.loadRes(coco_results(df, idset)), "bbox")
            ev.params.imgIds = ids
            ev.params.maxDets = [1, 10, 1000]
            ev.evaluate()
            ev.accumulate()
        acc = Accumulated(
            ev.eval["precision"][:, :, :, 0, -1],
            ev.eval["recall"][:, :, 0, -1],
            np.asarray(ev.params.catIds, np.int64),
            ev.params.iouThrs,
            len(ids),
            len(df),
        )
        return coco_scores(acc, gt)

    return score


def same_result(a, b) -> bool:
    """Bit-identical mAPs and per-class APs (NaN equal to NaN)."""
    eq = lambda x, y: x == y or (x != x and y != y)  # noqa: E731
    return (
        eq(a.map50, b.map50)
        and eq(a.map50_95, b.map50_95)
        and a.per_class_ap50.keys() == b.per_class_ap50.keys()
        and all(eq(a.per_class_ap50[k], b.per_class_ap50[k]) for k in a.per_class_ap50)
        and all(eq(a.per_class_ap50_95[k], b.per_class_ap50_95[k]) for k in a.per_class_ap50_95)
    )


def interleaved(fns: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each function, one call per round, in a new random order each round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    order, names = random.Random(0), list(fns)
    for _ in range(rounds):
        order.shuffle(names)
        for k in names:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return times


def peak_mib(fn) -> float:
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds for the scoring rows")
    ap.add_argument("--search-repeat", type=int, default=3, help="interleaved search rounds")
    ap.add_argument(
        "--baseline-frames",
        type=int,
        default=50,
        help="frames the per-frame reference search runs on (it takes minutes at 500)",
    )
    args = ap.parse_args()

    from dsprobe import open_recording
    from dsprobe.analysis.cocoeval import pycocotools_evaluate
    from dsprobe.analysis.evaluate import evaluate, load_ground_truth

    path = ROOT / "out" / "bench" / f"search_80c_{args.frames}.h5"
    gt_path = path.with_name(f"{path.stem}_gt.json")
    if not (path.exists() and gt_path.exists()):
        print(f"writing the 80-class case ({args.frames} frames) to {path} (once)...", flush=True)
        make_case(path, args.frames)
    rec = open_recording(path)
    gt = load_ground_truth(gt_path, frame_size=FRAME)
    frames = list(zip(rec.frames["source_id"].astype(int), rec.frames["frame_num"].astype(int)))
    pp = spec()
    df = pp.run_recording(rec)
    print(
        f"{path.name}: {len(rec)} frames, {NC} classes, {len(gt.coco['annotations'])} ground truth "
        f"boxes, {len(df)} detections at conf 0.25 / IoU 0.45"
    )

    fns = {
        "dsprobe": lambda: evaluate(df, gt, frames),
        "pycocotools": lambda: pycocotools_evaluate(df, gt, frames),
    }
    fce = faster_coco_eval_scorer()
    if fce is not None:
        fns["faster-coco-eval"] = lambda: fce(df, gt, frames)
    results = {k: f() for k, f in fns.items()}
    times = interleaved(fns, args.rounds)
    base = statistics.median(times["pycocotools"])
    print(f"\n== scoring one detection set (match + accumulate), {args.rounds} interleaved rounds")
    print(f"   {'':<18} {'median':>9} {'range':>17}  {'pycocotools/it':>14}  equal  peak MiB")
    for k, ts in times.items():
        med = statistics.median(ts)
        mem = peak_mib(fns[k])
        same = "yes" if same_result(results[k], results["pycocotools"]) else "NO"
        print(
            f"   {k:<18} {med:8.3f}s {min(ts):7.3f}-{max(ts):7.3f}s  {base / med:13.1f}x  "
            f"{same:>5}  {mem:8.1f}"
        )
    print(
        f"   dsprobe is {base / statistics.median(times['dsprobe']):.1f}x faster than pycocotools "
        f"(target >= 5x); mAP@0.5 {results['dsprobe'].map50:.6f}, "
        f"mAP@0.5:0.95 {results['dsprobe'].map50_95:.6f}"
    )
    if fce is None:
        print("   faster-coco-eval: n/a (pip install faster-coco-eval to compare)")

    search_rows(args, rec, gt, pp)
    rec.close()
    return 0


GRID = {
    "pre_cluster_threshold": [round(float(x), 2) for x in np.linspace(0.05, 0.6, 10)],
    "iou_threshold": [round(float(x), 2) for x in np.linspace(0.3, 0.75, 10)],
}


def load() -> str:
    return "load avg " + "/".join(f"{v:.1f}" for v in os.getloadavg())


def search_rows(args, rec, gt, pp) -> None:
    """The 10 x 10 search: the flat path at every frame, and side by side (interleaved, one run)
    with the per-frame reference (the search before the flat path: every frame re-clustered by
    the steps, every cut matched) on the first ``--baseline-frames`` frames; peak memory vs
    frames; decode timed apart (it is replay's read + decode, once per search)."""
    from dsprobe.analysis.search import Reclusterer, search

    def case(n: int):
        rows = list(range(min(n, len(rec))))
        f = rec.frames.iloc[rows]
        return rows, list(zip(f["source_id"].astype(int), f["frame_num"].astype(int)))

    full_rows, full_frames = case(len(rec))
    small_rows, small_frames = case(args.baseline_frames)
    print(f"\n== 10 x 10 threshold x IoU search with mAP, {NC} classes ({load()})")
    t0, c0 = time.perf_counter(), time.process_time()
    decoded = {len(full_rows): pp.decode_recording(rec, full_rows)}
    decode_s, decode_cpu = time.perf_counter() - t0, time.process_time() - c0
    decoded[len(small_rows)] = pp.decode_recording(rec, small_rows)
    print(
        f"   decode once ({len(full_rows)} frames, outside the search timing): {decode_s:.2f} s "
        f"wall, {decode_cpu:.2f} s CPU"
    )

    def flat(n, frames):
        return lambda: search(decoded[n], gt, GRID, frames=frames)

    def reference(n, frames):
        return lambda: search(
            decoded[n],
            gt,
            GRID,
            frames=frames,
            reclusterer=Reclusterer(
                decoded[n], floor=min(GRID["pre_cluster_threshold"]), per_frame=True
            ),
        )

    fns = {
        f"flat, {len(full_rows)} frames": flat(len(full_rows), full_frames),
        f"flat, {len(small_rows)} frames": flat(len(small_rows), small_frames),
        f"reference, {len(small_rows)} frames": reference(len(small_rows), small_frames),
    }
    same = fns[f"flat, {len(small_rows)} frames"]().table.equals(
        fns[f"reference, {len(small_rows)} frames"]().table
    )
    res = fns[f"flat, {len(full_rows)} frames"]()
    times, cpu = {k: [] for k in fns}, {k: [] for k in fns}
    loads = []
    order, names = random.Random(1), list(fns)
    for _ in range(args.search_repeat):
        order.shuffle(names)
        for k in names:
            t0, c0 = time.perf_counter(), time.process_time()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
            loads.append(os.getloadavg()[0])
    print(
        f"   {args.search_repeat} interleaved rounds (random order per round), 1-min load "
        f"{min(loads):.1f}-{max(loads):.1f} during them"
    )
    print(f"   {'':<26} {'median':>8} {'range':>15} {'CPU med':>8}  vs 10 s target")
    for k in fns:
        med, c = statistics.median(times[k]), statistics.median(cpu[k])
        print(
            f"   {k:<26} {med:7.2f}s {min(times[k]):6.2f}-{max(times[k]):6.2f}s {c:7.2f}s"
            + (
                f"  {med / 10:.2f}x of the budget"
                if k.startswith(f"flat, {len(full_rows)}")
                else ""
            )
        )
    fast, ref = (
        statistics.median(times[f"{k}, {len(small_rows)} frames"]) for k in ("flat", "reference")
    )
    full = statistics.median(times[f"flat, {len(full_rows)} frames"])
    print(
        f"   same {len(small_rows)} frames: flat {ref / fast:.1f}x faster than the reference; "
        f"tables equal to the last bit: {'yes' if same else 'NO'}"
    )
    print(
        f"   {len(full_rows)} frames: search {full:.2f} s = {full / 10:.2f}x of the 10 s target; "
        f"with the decode {full + decode_s:.2f} s = {(full + decode_s) / 10:.2f}x"
    )
    print(f"   best {res.best_params}: mAP@0.5 {res.table.iloc[0]['map50']:.4f}")
    print("   peak Python memory of one search (tracemalloc) vs frames:")
    for n in sorted({len(small_rows), len(full_rows) // 4, len(full_rows) // 2, len(full_rows)}):
        rows, frames = case(n)
        if n not in decoded:
            decoded[n] = pp.decode_recording(rec, rows)
        mem = peak_mib(flat(n, frames))
        cands = sum(len(d) for d in decoded[n].candidates.values())
        print(
            f"     {n:5d} frames ({cands:9,d} candidates): flat {mem:6.0f} MiB "
            f"({mem / n * 1024:.0f} KiB a frame)"
            + (
                f", reference {peak_mib(reference(n, frames)):6.0f} MiB"
                if n == len(small_rows)
                else ""
            )
        )
        if n != len(full_rows):
            del decoded[n]


if __name__ == "__main__":
    raise SystemExit(main())
