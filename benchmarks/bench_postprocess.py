"""dsprobe postprocess speed on a YOLOv8-640 output (80 classes, 8400 anchors), side by side in one run.

Rows, all on the same tensors (8 synthetic frames: low sigmoid background scores, ~30 objects each
lighting up ~20 anchors):

* the time to read the tensor bytes once: a copy of the 2.7 MB tensor in memory, and one frame's
  tensor read from an HDF5 recording;
* dsprobe decode + pre-cluster threshold + nvinfer NMS + nvinfer scaling per frame (and each part);
* when torch / torchvision / ultralytics are importable (``make verify``'s venv:
  ``.venv-verify/bin/python benchmarks/bench_postprocess.py``): Ultralytics' path
  (``non_max_suppression`` + ``scale_boxes``) and a torchvision path (decode in torch +
  ``batched_nms`` + scaling), with a check that the kept boxes are identical;
* frames/s of a whole-recording replay (``run_recording``: read + postprocess) and of a cached
  re-run (``decode_recording`` then ``DecodedRecording.run``: what a parameter sweep pays per setting).

Timings are medians over 20 interleaved rounds (each round runs every contender 10 times in a row, in a
new random order per round),
so machine load hits all of them alike. Everything runs single-threaded: numpy does, and torch is
set to 1 thread (``--torch-threads N`` to change; on this 2-core machine, shared with other jobs,
2 torch threads were slower and erratic).
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import row  # noqa: E402

from dsprobe import Postprocess, Recorder, open_recording  # noqa: E402
from dsprobe.postprocess.registry import StepContext  # noqa: E402
from dsprobe.records import FrameRecord  # noqa: E402

CONF, IOU = 0.25, 0.45


def spec() -> Postprocess:
    """Class-aware NMS like Ultralytics' default: conf > 0.25, IoU 0.45, 300 boxes max."""
    return Postprocess(
        [
            {"kind": "decode", "name": "yolov8", "params": {"score_threshold": CONF}},
            {"kind": "filter", "name": "threshold", "params": {"pre_cluster_threshold": CONF}},
            {"kind": "cluster", "name": "nms", "params": {"iou_threshold": IOU}},
            {
                "kind": "scale",
                "name": "nvinfer",
                "params": {"maintain_aspect_ratio": True, "symmetric_padding": True},
            },
        ]
    )


def yolov8_output(
    rng: np.random.Generator, objects: int = 30, nc: int = 80, size: int = 640
) -> np.ndarray:
    """A realistic raw YOLOv8 head (4+nc, 8400): sigmoid scores mostly ~0.001-0.02; each object lights
    up ~20 neighbouring anchors (scores 0.3-0.95, jittered boxes), like a trained detector's output."""
    grid = np.concatenate(
        [
            np.stack(
                np.meshgrid((np.arange(size // s) + 0.5) * s, (np.arange(size // s) + 0.5) * s), -1
            ).reshape(-1, 2)
            for s in (8, 16, 32)
        ]
    )
    out = np.empty((4 + nc, len(grid)), np.float32)
    out[:2] = grid.T
    out[2:4] = rng.uniform(8, 40, (2, len(grid)))
    out[4:] = 1 / (1 + np.exp(-rng.normal(-5.5, 1.0, (nc, len(grid)))))
    for _ in range(objects):
        c = rng.integers(nc)
        cx, cy = rng.uniform(40, size - 40, 2)
        w, h = rng.uniform(20, 200, 2)
        near = np.argsort(np.hypot(grid[:, 0] - cx, grid[:, 1] - cy))[:20]
        out[0, near] = cx + rng.normal(0, w * 0.03, 20)
        out[1, near] = cy + rng.normal(0, h * 0.03, 20)
        out[2, near] = w * rng.uniform(0.95, 1.05, 20)
        out[3, near] = h * rng.uniform(0.95, 1.05, 20)
        out[4 + c, near] = rng.uniform(0.3, 0.95, 20)
    return out


def interleaved(
    fns: dict[str, Callable[[], object]], rounds: int = 20, block: int = 10, warmup: int = 5
) -> dict[str, float]:
    """Median seconds per call of each function, measured in interleaved rounds: each round runs every
    function ``block`` times in a row (steady state, as in a replay loop) before the next one, in a new
    random order each round (what ran just before leaves caches and the allocator in a different state,
    so a fixed order would favour some functions)."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    order = random.Random(0)
    names = list(fns)
    for _ in range(rounds):
        order.shuffle(names)
        for k in names:
            fn = fns[k]
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torch-threads", type=int, default=1)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    outs = [yolov8_output(rng) for _ in range(8)]
    frame = (1280, 720)
    ctx = StepContext(network_size=(640, 640), frame_size=frame)
    pp = spec()
    k = iter(range(10**9))
    nxt = lambda: outs[next(k) % 8]  # noqa: E731
    decoded = [pp.run({"output0": o}, ctx, stop=1) for o in outs]
    clustered = [pp.run({}, ctx, start=1, stop=3, dets=d) for d in decoded]
    fns: dict[str, Callable[[], object]] = {
        "read": lambda: nxt().copy(),
        "dsprobe": lambda: pp.run({"output0": nxt()}, ctx),
        "decode": lambda: pp.run({"output0": nxt()}, ctx, stop=1),
        "nms": lambda: pp.run({}, ctx, start=1, stop=3, dets=decoded[next(k) % 8]),
        "scale": lambda: pp.run({}, ctx, start=3, dets=clustered[next(k) % 8]),
    }
    ul_check = None
    try:
        import torch
        import torchvision

        try:
            from ultralytics.utils.nms import non_max_suppression  # ultralytics >= 8.3.x
        except ImportError:
            from ultralytics.utils.ops import non_max_suppression
        from ultralytics.utils.ops import scale_boxes
    except ImportError as exc:
        missing = exc.name
    else:
        missing = None
        torch.set_num_threads(args.torch_threads)
        tens = [torch.from_numpy(o[None]) for o in outs]
        shape0 = (frame[1], frame[0])

        def ultralytics_path():
            det = non_max_suppression(tens[next(k) % 8], CONF, IOU, max_det=300)[0]
            det[:, :4] = scale_boxes((640, 640), det[:, :4], shape0)
            return det

        def torchvision_path():
            o = tens[next(k) % 8][0]
            scores, cls = o[4:].max(0)
            m = scores > CONF
            b = o[:4, m].T
            xyxy = torch.cat([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)
            keep = torchvision.ops.batched_nms(xyxy, scores[m], cls[m], IOU)
            return scale_boxes((640, 640), xyxy[keep], shape0)

        fns["ultralytics"] = ultralytics_path
        fns["torchvision"] = torchvision_path

        def ul_check():
            same, worst = 0, 0.0
            net = pp.with_step("scale", "none")
            ul_scaled = pp.with_step("scale", "ultralytics")
            for o, t in zip(outs, tens):
                ours = net.run({"output0": o}, ctx)
                theirs = non_max_suppression(t, CONF, IOU, max_det=300)[0].numpy()
                a = np.lexsort((ours.boxes[:, 1], ours.boxes[:, 0], ours.class_ids))
                b = np.lexsort((theirs[:, 1], theirs[:, 0], theirs[:, 5]))
                same += int(
                    np.array_equal(ours.boxes[a], theirs[b, :4])
                    and np.array_equal(ours.class_ids[a], theirs[b, 5].astype(int))
                )
                mine = ul_scaled.run({"output0": o}, ctx).boxes[a]
                sb = scale_boxes((640, 640), torch.from_numpy(theirs[b, :4].copy()), shape0).numpy()
                worst = max(worst, float(np.abs(mine - sb).max()) if len(sb) else 0.0)
            return same, worst

    t = interleaved(fns)
    n_kept = len(pp.run({"output0": outs[0]}, ctx))
    n_cand = len(decoded[0])
    print(
        f"YOLOv8-640 output {outs[0].shape} float32 ({outs[0].nbytes / 1e6:.1f} MB), {n_cand} candidates "
        f"above {CONF}, {n_kept} boxes kept per frame; medians of 200 calls in 20 interleaved rounds"
    )
    print(row("read the tensor bytes once (memory copy)", t["read"]))
    print(
        row(
            "dsprobe decode + threshold + NMS + scale",
            t["dsprobe"],
            t["read"],
            "the read (target <= 4x)",
        )
    )
    print(row("  of which decode (max/argmax, boxes)", t["decode"]))
    print(row("  of which threshold + nvinfer NMS", t["nms"]))
    print(row("  of which nvinfer scale", t["scale"]))
    if missing:
        print(
            f"  Ultralytics non_max_suppression + scale_boxes: n/a (install torch torchvision ultralytics: "
            f"{missing} is missing; run .venv-verify/bin/python {Path(__file__).name} after make verify)"
        )
        print("  torchvision batched_nms: n/a (install torch torchvision)")
    else:
        print(
            row(
                "Ultralytics non_max_suppression + scale_boxes",
                t["ultralytics"],
                t["dsprobe"],
                "dsprobe",
            )
        )
        print(
            row(
                "torchvision batched_nms (decode+scale in torch)",
                t["torchvision"],
                t["dsprobe"],
                "dsprobe",
            )
        )
        print(
            f"  dsprobe is {t['ultralytics'] / t['dsprobe']:.2f}x faster than Ultralytics' path (target >= 2x), "
            f"{t['torchvision'] / t['dsprobe']:.2f}x faster than the torchvision path"
        )
        same, worst = ul_check()
        print(
            f"  identical kept boxes (network px, float32) and classes to Ultralytics on {same}/{len(outs)} frames; "
            f"after scaling (dsprobe scale:ultralytics vs scale_boxes) max |diff| {worst:.2e} px"
        )

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "replay.h5"
        with Recorder(path, images=False, drop_when_full=False) as rec:
            for i in range(300):
                rec.record(
                    FrameRecord(
                        i % 2,
                        i // 2,
                        network_size=(640, 640, 3),
                        frame_size=frame,
                        layers={"output0": outs[i % 8]},
                    )
                )
        r = open_recording(path)
        j = iter(range(10**9))
        th = interleaved(
            {
                "h5": lambda: r.read_layer("output0", [next(j) % len(r)]),
                "dsprobe": lambda: pp.run({"output0": outs[next(j) % 8]}, ctx),
            }
        )
        print(row("read one frame's tensor from a recording (HDF5)", th["h5"]))
        print(
            row(
                "dsprobe decode + threshold + NMS + scale",
                th["dsprobe"],
                th["h5"],
                "the HDF5 read (target <= 4x)",
            )
        )
        t0 = time.perf_counter()
        df = pp.run_recording(r)
        dt = time.perf_counter() - t0
        print(
            f"  whole-recording replay (run_recording: read + postprocess): {len(r)} frames in {dt:.2f} s "
            f"= {len(r) / dt:.0f} frames/s ({len(df)} detections)"
        )
        t0 = time.perf_counter()
        dec = pp.decode_recording(r)
        t1 = time.perf_counter()
        dec.run(pp.with_params("cluster", iou_threshold=0.5))
        t2 = time.perf_counter()
        print(
            f"  parameter sweep: decode_recording once {t1 - t0:.2f} s, then each setting "
            f"(DecodedRecording.run) {t2 - t1:.2f} s = {len(r) / (t2 - t1):.0f} frames/s"
        )


if __name__ == "__main__":
    main()
