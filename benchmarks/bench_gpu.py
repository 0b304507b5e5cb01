"""dsprobe on the GPU (CuPy) against the CPU single-thread path, in one run on one machine.

Needs CuPy and a CUDA GPU (prints why and exits 0 without them). Three measurements, each with the
target beside it:

1. raw-tensor replay (YOLOv8-640 heads, 80 classes x 8400 anchors, FP32 and FP16; decode + pre-cluster
   threshold + nvinfer NMS + nvinfer scaling + object checks, per-frame Detections back on the host),
   batch sizes 8 .. 512, double-buffered: the host-to-device copy of batch k+1 (from pinned memory, on
   its own stream) overlaps the GPU work on batch k. Target: the replay moves tensor bytes at >= 0.8x
   the pinned host-to-device copy bandwidth measured for the same bytes in the same run. The CPU path
   (``pp.run`` per frame, one thread) on the same machine is the other baseline.
2. re-clustering on cached candidates (what a search pays per clustering setting: threshold + NMS +
   scaling of every frame, flat arrays back): ``Reclusterer(device="cuda")`` vs the CPU Reclusterer.
   Target >= 50x.
3. a 10 x 10 search (pre-cluster threshold x NMS IoU) over 100,000 frames after one decode pass on the
   GPU: every setting's kept boxes selected (GPU clustering, masking) and scored with mAP@0.5 against
   synthetic ground truth (a GPU match table per clustering, dsprobe.analysis.sweep_scoring; exact
   against dsprobe.analysis.objectives, tests/test_sweep_scoring.py). Target <= 30 s.

Timings are medians of repeated runs (ranges printed); GPU work is synchronised before a clock is read.
``--quick`` runs small sizes (a smoke test).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the CPU baseline is single-threaded
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_postprocess import yolov8_output  # noqa: E402

from dsprobe.postprocess.gpu.backend import cupy_or_reason  # noqa: E402
from dsprobe.postprocess.pipeline import Postprocess, Step  # noqa: E402
from dsprobe.postprocess.registry import StepContext  # noqa: E402

FRAME = (1920, 1080)
NET = (640, 640)


def spec(score_threshold: float = 0.25) -> Postprocess:
    """nvinfer's chain for a YOLOv8 detector: threshold 0.25, NMS 0.45, top-k 300, letterbox scaling."""
    return Postprocess(
        [
            Step("decode", "yolov8", {"score_threshold": score_threshold}),
            Step("filter", "threshold", {"pre_cluster_threshold": 0.25, "num_classes": 80}),
            Step("cluster", "nms", {"iou_threshold": 0.45, "topk": 300}),
            Step("scale", "nvinfer", {"maintain_aspect_ratio": True, "symmetric_padding": True}),
            Step("filter", "objects", {}),
        ],
        num_classes=80,
    )


def spread(xs: list[float]) -> str:
    return f"median {statistics.median(xs) * 1e3:9.3f} ms  (range {min(xs) * 1e3:.3f}-{max(xs) * 1e3:.3f})"


def gpu_times(cp, fn, repeat: int = 15, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    cp.cuda.Device().synchronize()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        cp.cuda.Device().synchronize()
        out.append(time.perf_counter() - t0)
    return out


def pinned(cp, a: np.ndarray) -> np.ndarray:
    mem = cp.cuda.alloc_pinned_memory(a.nbytes)
    out = np.frombuffer(mem, a.dtype, a.size).reshape(a.shape)
    out[...] = a
    return out


# ---------------------------------------------------------------------------------------------- 1. replay
def replay(cp, outs: list[np.ndarray], batches: list[int], dtype, n_frames: int) -> list[dict]:
    from dsprobe.postprocess.gpu.plan import plan_of

    pp = spec().to("cuda")
    plan = plan_of(pp)
    return [_replay_one(cp, pp, plan, outs, b, dtype, n_frames) for b in batches]


def _replay_one(cp, pp, plan, outs, b: int, dtype, n_frames: int) -> dict:
    from dsprobe.postprocess.gpu.cluster import frame_mappings
    from dsprobe.postprocess.gpu.runner import run_device, split_frames

    host = [
        pinned(cp, np.stack([outs[(i + k) % len(outs)] for i in range(b)]).astype(dtype))
        for k in range(2)
    ]
    nbytes = host[0].nbytes
    dev = [cp.empty(host[0].shape, dtype) for _ in range(2)]
    ctxs = [StepContext(NET, FRAME, (0.0, 0.0, *map(float, FRAME)), 80)] * b

    maps = frame_mappings(ctxs, True, True)
    copy_s = cp.cuda.Stream(non_blocking=True)
    work_s = cp.cuda.Stream(non_blocking=True)

    def copy_only():
        with copy_s:
            dev[0].set(host[0], stream=copy_s)
        copy_s.synchronize()

    nb = max(2, n_frames // b)

    def pipelined():
        ready = [None, None]
        free = [None, None]
        with copy_s:
            dev[0].set(host[0], stream=copy_s)
            ready[0] = copy_s.record()
        dets = 0
        for k in range(nb):
            j = k % 2
            if k + 1 < nb:
                with copy_s:
                    if free[1 - j] is not None:
                        copy_s.wait_event(free[1 - j])
                    dev[1 - j].set(host[1 - j], stream=copy_s)
                    ready[1 - j] = copy_s.record()
            with work_s:
                work_s.wait_event(ready[j])
                c, space = run_device(pp, plan, {"output0": dev[j]}, ctxs, mappings=maps)
                per_frame = split_frames(c, b, space)  # synchronises work_s
                free[j] = work_s.record()
            dets += sum(len(d) for d in per_frame)
        return dets

    def serial():
        dev[0].set(host[0])
        c, space = run_device(pp, plan, {"output0": dev[0]}, ctxs, mappings=maps)
        return split_frames(c, b, space)

    t_copy = gpu_times(cp, copy_only)
    t_pipe = gpu_times(cp, pipelined, repeat=5, warmup=1)
    t_serial = gpu_times(cp, serial, repeat=7)
    bw_copy = nbytes / statistics.median(t_copy)
    per_batch = statistics.median(t_pipe) / nb
    row = {
        "batch": b,
        "dtype": np.dtype(dtype).name,
        "copy_GBps": bw_copy / 1e9,
        "replay_GBps": nbytes / per_batch / 1e9,
        "ratio": nbytes / per_batch / bw_copy,
        "ms_per_frame": per_batch / b * 1e3,
        "serial_ms_per_frame": statistics.median(t_serial) / b * 1e3,
        "copy_range_ms": (min(t_copy) * 1e3, max(t_copy) * 1e3),
        "pipe_range_ms_per_batch": (min(t_pipe) / nb * 1e3, max(t_pipe) / nb * 1e3),
    }
    print(
        f"  {np.dtype(dtype).name:8s} batch {b:4d}: copy {bw_copy / 1e9:6.2f} GB/s, replay "
        f"{nbytes / per_batch / 1e9:6.2f} GB/s = {row['ratio']:.2f}x copy (target >= 0.80), "
        f"{per_batch / b * 1e3:.4f} ms/frame (serial {row['serial_ms_per_frame']:.4f}); "
        f"copy {row['copy_range_ms'][0]:.2f}-{row['copy_range_ms'][1]:.2f} ms, "
        f"replay {row['pipe_range_ms_per_batch'][0]:.2f}-{row['pipe_range_ms_per_batch'][1]:.2f} ms/batch",
        flush=True,
    )
    return row


def cpu_replay_ms(outs: list[np.ndarray], frames: int = 48) -> list[float]:
    pp = spec()
    ctx = StepContext(NET, FRAME, (0.0, 0.0, *map(float, FRAME)), 80)
    times = []
    for k in range(frames):
        o = outs[k % len(outs)]
        t0 = time.perf_counter()
        pp.run({"output0": o}, ctx)
        times.append(time.perf_counter() - t0)
    return times[len(outs) :]


# ---------------------------------------------------------------------------------------------- 2-3. search
class FrameTable:
    """What DecodedRecording / the search read of a Recording: the frames table."""

    def __init__(self, n: int) -> None:
        import pandas as pd

        self.frames = pd.DataFrame(
            {
                "source_id": np.arange(n) % 4,
                "frame_num": np.arange(n) // 4,
                "frame_width": FRAME[0],
                "frame_height": FRAME[1],
                "network_width": NET[0],
                "network_height": NET[1],
            }
        )


def decoded_cache(cp, outs: list[np.ndarray], n: int, batch: int = 256):
    """Decode ``n`` frames once on the GPU (candidates >= 0.1) into a DecodedRecording; seconds."""
    from dsprobe.postprocess.replay import DecodedRecording

    pp = spec(score_threshold=0.1)
    gpu = pp.to("cuda")
    ctx = StepContext(NET, FRAME, (0.0, 0.0, *map(float, FRAME)), 80)
    host = pinned(cp, np.stack([outs[i % len(outs)] for i in range(batch)]))
    cands = {}
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        m = min(batch, n - s)
        dets = gpu.run_batch({"output0": host[:m]}, [ctx] * m, stop=1)
        cands.update(zip(range(s, s + m), dets))
    took = time.perf_counter() - t0
    return DecodedRecording(pp, cands, dict.fromkeys(cands, ctx), FrameTable(n)), took


def reclustering(cp, dec, cpu_frames: int) -> dict:
    from dsprobe.analysis.search import Reclusterer
    from dsprobe.postprocess.replay import DecodedRecording

    pp = dec.postprocess
    small = DecodedRecording(
        pp,
        {r: dec.candidates[r] for r in range(cpu_frames)},
        {r: dec.contexts[r] for r in range(cpu_frames)},
        FrameTable(cpu_frames),
    )
    ious = iter(np.round(np.linspace(0.3, 0.7, 200), 4).tolist())

    def one(rc):
        rc.select(pp.set_params({"iou_threshold": next(ious), "pre_cluster_threshold": 0.25}))

    rc_cpu = Reclusterer(small, floor=0.25)
    t_cpu = []
    for _ in range(3):
        t0 = time.perf_counter()
        one(rc_cpu)
        t_cpu.append(time.perf_counter() - t0)
    rc_small = Reclusterer(small, floor=0.25, device="cuda")
    t_small = gpu_times(cp, lambda: one(rc_small), repeat=7)
    rc_all = Reclusterer(dec, floor=0.25, device="cuda")
    t_all = gpu_times(cp, lambda: one(rc_all), repeat=5, warmup=1)
    n_all = len(dec.candidates)
    cpu_pf = statistics.median(t_cpu) / cpu_frames
    res = {
        "cpu_ms_per_frame": cpu_pf * 1e3,
        "gpu_ms_per_frame_same_frames": statistics.median(t_small) / cpu_frames * 1e3,
        "gpu_ms_per_frame_all": statistics.median(t_all) / n_all * 1e3,
    }
    res["speedup_same_frames"] = cpu_pf / (statistics.median(t_small) / cpu_frames)
    res["speedup_all"] = cpu_pf / (statistics.median(t_all) / n_all)
    print(f"  CPU Reclusterer, {cpu_frames} frames: {spread(t_cpu)} per setting")
    print(
        f"  GPU Reclusterer, {cpu_frames} frames: {spread(t_small)} per setting "
        f"-> {res['speedup_same_frames']:.1f}x CPU (target >= 50)"
    )
    print(
        f"  GPU Reclusterer, {n_all} frames: {spread(t_all)} per setting "
        f"-> {res['speedup_all']:.1f}x CPU per frame (target >= 50)",
        flush=True,
    )
    return res


def ground_truth(rc, pp, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic ground truth: the boxes of one setting (0.5, IoU 0.5), shifted by a few pixels,
    15% of them dropped (flat rows, boxes, class ids)."""
    ref = rc.select(pp.set_params({"pre_cluster_threshold": 0.5, "iou_threshold": 0.5}))
    k = ref.keep & (rng.random(len(ref.keep)) > 0.15)
    boxes = (ref.boxes[k] + rng.normal(0, 3, (int(k.sum()), 4))).astype(np.float32)
    return ref.rows[k], boxes, ref.class_ids[k]


def search_10x10(cp, dec) -> dict:
    """A 10 x 10 search (pre-cluster threshold x NMS IoU) over every decoded frame, scored (mAP@0.5):
    per IoU one GPU clustering and one GPU match table (dsprobe.analysis.sweep_scoring); per
    threshold the selection (a mask) and its mAP from the table's per-class prefix sums."""
    from dsprobe.analysis.search import Reclusterer
    from dsprobe.analysis.sweep_scoring import GpuGroundTruth, ThresholdSweep, sweep_order_gpu

    pp = dec.postprocess
    thr = np.round(np.linspace(0.25, 0.7, 10), 3).tolist()
    ious = np.round(np.linspace(0.3, 0.75, 10), 3).tolist()
    n = len(dec.candidates)
    gt = ground_truth(Reclusterer(dec, floor=min(thr), device="cuda"), pp, np.random.default_rng(1))
    t0 = time.perf_counter()
    gt_dev = GpuGroundTruth(*gt)
    rc = Reclusterer(dec, floor=min(thr), device="cuda")
    table, t_match = [], 0.0
    for u in ious:
        floor = rc.select(pp.set_params({"pre_cluster_threshold": min(thr), "iou_threshold": u}))
        k = floor.keep
        t1 = time.perf_counter()
        m = gt_dev.match(floor.rows[k], floor.boxes[k], floor.scores[k], floor.class_ids[k], n)
        sweep = ThresholdSweep(m, order=sweep_order_gpu(m))
        t_match += time.perf_counter() - t1
        for t in thr:
            sel = rc.select(pp.set_params({"pre_cluster_threshold": t, "iou_threshold": u}))
            cut = float(np.float32(t))  # nvinfer compares float32 scores with a float32 threshold
            assert int(sel.keep.sum()) == int((m.scores >= cut).sum())  # the cut is the selection
            table.append((t, u, sweep.map50(cut), int(sel.keep.sum())))
    took = time.perf_counter() - t0
    best = max(table, key=lambda r: r[2])
    print(
        f"  10 x 10 search over {n} frames, scored: {took:.2f} s (target <= 30 s; of which match "
        f"tables + sweeps {t_match:.2f} s; {rc.cluster_runs} GPU clusterings); best threshold "
        f"{best[0]}, IoU {best[1]}: mAP@0.5 {best[2]:.4f} ({best[3]} boxes)",
        flush=True,
    )
    return {"search_s": took, "match_s": t_match, "clusterings": rc.cluster_runs, "best": best}


def replay_stage(cp, outs, args, report: dict) -> None:
    print("1. raw-tensor replay (YOLOv8-640, 2.8 MB FP32 / 1.4 MB FP16 per frame)")
    cpu = cpu_replay_ms(outs, 24 if args.quick else 64)
    print(f"  CPU path, one thread: {spread(cpu)} per frame")
    report["cpu_replay_ms_per_frame"] = statistics.median(cpu) * 1e3
    batches = [8, 32] if args.quick else [8, 32, 128, 512]
    n = 64 if args.quick else 2048
    report["replay"] = []
    for dt in (np.float32, np.float16):
        report["replay"] += replay(cp, outs, batches, dt, n)
    for r in report["replay"]:
        r["x_cpu"] = report["cpu_replay_ms_per_frame"] / r["ms_per_frame"]
    print(
        "  GPU replay vs the CPU path per frame: "
        + ", ".join(f"{r['dtype']} b{r['batch']} {r['x_cpu']:.0f}x" for r in report["replay"])
    )


def search_stage(cp, outs, args, report: dict) -> None:
    n_frames = 2_000 if args.quick else 100_000
    print(f"2. re-clustering cached candidates ({n_frames} frames decoded once on the GPU)")
    dec, t_dec = decoded_cache(cp, outs, n_frames)
    n_cand = sum(len(d) for d in dec.candidates.values())
    print(f"  decode pass: {t_dec:.2f} s for {n_frames} frames ({n_cand} candidates)", flush=True)
    report["decode_pass_s"] = t_dec
    report["recluster"] = reclustering(cp, dec, 200 if args.quick else 2_000)
    print("3. 10 x 10 search")
    report["search"] = search_10x10(cp, dec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--json", help="write the figures here")
    ap.add_argument(
        "--stages", default="replay,search", help="comma-separated: replay, search (default both)"
    )
    args = ap.parse_args()
    cp, why = cupy_or_reason()
    if cp is None:
        print(f"bench_gpu: skipped: {why}")
        return
    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    print(
        f"GPU: {name}, CuPy {cp.__version__}, CPU baseline single-threaded on this host "
        f"({os.cpu_count()} cores)"
    )
    rng = np.random.default_rng(0)
    outs = [yolov8_output(rng) for _ in range(8)]
    report: dict = {"gpu": name}
    stages = {"replay": replay_stage, "search": search_stage}
    for stage in (stages[k] for k in args.stages.split(",")):
        try:
            stage(cp, outs, args, report)
        except Exception:  # one broken stage must not hide the others' figures
            import traceback

            traceback.print_exc()
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
