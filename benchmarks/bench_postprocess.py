"""dsprobe postprocess speed on a YOLOv8-640 (80 classes) output, side by side in one run.

Columns: dsprobe decode + nvinfer NMS + scale per frame; the time to read the tensor bytes once (a
copy of the 2.8 MB tensor); and, when torch / torchvision / ultralytics are importable (make verify's
venv: .venv-verify/bin/python benchmarks/bench_postprocess.py), Ultralytics' non_max_suppression and
torchvision batched_nms on the same tensor, with a check that the boxes are identical.
Also: frames/s of a whole-recording replay (read + postprocess) of a synthetic recording.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_time, row  # noqa: E402

from dsprobe import Postprocess, Recorder, open_recording  # noqa: E402
from dsprobe.postprocess.registry import StepContext  # noqa: E402
from dsprobe.types import FrameRecord  # noqa: E402

CONF, IOU = 0.25, 0.45


def spec() -> Postprocess:
    """Class-aware NMS like Ultralytics' default: conf > 0.25, IoU 0.45, 300 boxes max."""
    return Postprocess([
        {"kind": "decode", "name": "yolov8", "params": {"score_threshold": CONF}},
        {"kind": "filter", "name": "threshold", "params": {"pre_cluster_threshold": CONF}},
        {"kind": "cluster", "name": "nms", "params": {"iou_threshold": IOU}},
        {"kind": "scale", "name": "nvinfer", "params": {"maintain_aspect_ratio": True, "symmetric_padding": True}},
    ])


def yolov8_output(rng: np.random.Generator, objects: int = 30, nc: int = 80, size: int = 640) -> np.ndarray:
    """A realistic raw YOLOv8 head (4+nc, 8400): sigmoid scores mostly ~0.001-0.02; each object lights
    up ~20 neighbouring anchors (scores 0.3-0.95, jittered boxes), like a trained detector's output."""
    grid = np.concatenate([np.stack(np.meshgrid((np.arange(size // s) + .5) * s, (np.arange(size // s) + .5) * s),
                                    -1).reshape(-1, 2) for s in (8, 16, 32)])
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


def main() -> None:
    rng = np.random.default_rng(0)
    outs = [yolov8_output(rng) for _ in range(8)]
    ctx = StepContext(network_size=(640, 640), frame_size=(1280, 720))
    pp = spec()
    k = iter(range(10 ** 9))
    t_pp = median_time(lambda: pp.run({"output0": outs[next(k) % 8]}, ctx), repeat=200)
    t_read = median_time(lambda: outs[next(k) % 8].copy(), repeat=200)
    print(f"YOLOv8-640 output {outs[0].shape} float32, {len(pp.run({'output0': outs[0]}, ctx))} boxes kept per frame")
    print(row("read the tensor bytes once (copy)", t_read))
    print(row("dsprobe decode + NMS + scale", t_pp, t_read, "of the read (target <= 4x)"))
    try:
        import torch
        import torchvision
        import ultralytics.utils as ul_utils
        try:
            from ultralytics.utils.nms import non_max_suppression  # ultralytics >= 8.3.x
        except ImportError:
            non_max_suppression = ul_utils.ops.non_max_suppression
    except ImportError as exc:
        print(f"  Ultralytics / torchvision columns: n/a ({exc.name} not installed; run with .venv-verify)")
    else:
        torch.set_num_threads(2)
        tens = [torch.from_numpy(o[None]) for o in outs]

        def ul():
            return non_max_suppression(tens[next(k) % 8], CONF, IOU, max_det=300)

        def tv():
            o = tens[next(k) % 8][0]
            scores, cls = o[4:].max(0)
            m = scores > CONF
            b = o[:4, m].T
            xyxy = torch.cat([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)
            return torchvision.ops.batched_nms(xyxy, scores[m], cls[m], IOU)

        t_ul = median_time(ul, repeat=100)
        t_tv = median_time(tv, repeat=100)
        print(row("Ultralytics non_max_suppression", t_ul))
        print(row("torchvision batched_nms (decode in torch)", t_tv))
        print(f"  dsprobe is {t_ul / t_pp:.2f}x faster than Ultralytics' path (target >= 2x), "
              f"{t_tv / t_pp:.2f}x vs torchvision")
        same = 0
        for o, t in zip(outs, tens):
            ours = pp.with_step("scale", "none").run({"output0": o}, ctx)
            theirs = non_max_suppression(t, CONF, IOU, max_det=300)[0].numpy()
            a = np.lexsort((ours.boxes[:, 0], ours.class_ids))
            b = np.lexsort((theirs[:, 0], theirs[:, 5]))
            same += int(np.array_equal(ours.boxes[a], theirs[b, :4]) and np.array_equal(ours.class_ids[a],
                                                                                       theirs[b, 5].astype(int)))
        print(f"  identical boxes to Ultralytics on {same}/{len(outs)} frames")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "replay.h5"
        with Recorder(path, images=False, drop_when_full=False) as rec:
            for i in range(300):
                rec.record(FrameRecord(i % 2, i // 2, network_size=(640, 640, 3), frame_size=(1280, 720),
                                       layers={"output0": outs[i % 8]}))
        r = open_recording(path)
        j = iter(range(10 ** 9))
        t_h5 = median_time(lambda: r.read_layer("output0", [next(j) % len(r)]), repeat=100)
        print(row("read one frame's tensor from a recording (HDF5)", t_h5))
        print(row("dsprobe decode + NMS + scale", t_pp, t_h5, "of the HDF5 read (target <= 4x)"))
        t0 = time.perf_counter()
        df = pp.run_recording(r)
        dt = time.perf_counter() - t0
        print(f"  whole-recording replay: {len(r)} frames in {dt:.2f} s = {len(r) / dt:.0f} frames/s "
              f"({len(df)} detections)")


if __name__ == "__main__":
    main()
