"""Reference recorder throughput, side by side in one run, on the sample streams and the sample model:

* the whole recorder (decode + nvstreammux scaling + nvinfer preprocessing + ONNX Runtime + Recorder
  with 640x360 JPEG images), as ``dsprobe record-onnx`` runs it, in frames/s;
* ONNX Runtime alone on the same already-preprocessed frames (the floor: what inference costs);
* decoding alone, and the preprocessing of one frame both ways (composed nearest index maps vs
  building the 1280x720 muxer frame first), so the cost of each stage is visible.

The ratio recorder / inference-alone says how much recording costs on top of inference.
Usage: python benchmarks/bench_reference.py [seconds per stream, default 6] [repetitions, default 3]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import median_time, row  # noqa: E402

from dsprobe.nvinfer.config import load_nvinfer_config  # noqa: E402
from dsprobe.reference.preprocess import muxer_scale, preprocess, preprocess_source  # noqa: E402
from dsprobe.reference.recorder import record_onnx  # noqa: E402
from dsprobe.reference.runner import OnnxModel  # noqa: E402
from dsprobe.reference.video import read_frames  # noqa: E402
from dsprobe.sample import CONFIG_PATH, MODEL_PATH, MUXER_SIZE, make_videos  # noqa: E402


def main(seconds: float = 6.0, reps: int = 3) -> None:
    cfg = load_nvinfer_config(CONFIG_PATH)
    pre = cfg.preprocessing
    best: dict[str, float] = {}
    stages: dict[str, dict[str, float]] = {}

    def keep(name: str, fps: float, stage_seconds: dict[str, float] | None = None) -> None:
        if fps > best.get(name, 0.0):
            best[name] = fps
            if stage_seconds is not None:
                stages[name] = stage_seconds

    with tempfile.TemporaryDirectory() as tmp:
        v = make_videos(tmp, seconds=seconds)
        frames = [f.image for p in v.paths for f in read_frames(p)]
        n = len(frames)
        tensors = np.stack([preprocess_source(f, MUXER_SIZE, pre)[0] for f in frames])
        model = OnnxModel(MODEL_PATH, cfg)
        model(tensors[:4])  # warm-up
        # interleaved repetitions, best of each: the machine may be shared, the ratios stay meaningful
        for _ in range(reps):
            t0 = time.perf_counter()
            for p in v.paths:
                for _f in read_frames(p):
                    pass
            keep("decode", n / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            model(tensors)
            keep("ort", n / (time.perf_counter() - t0))
            for images in (True, False):
                s = record_onnx(
                    v.paths,
                    CONFIG_PATH,
                    None,
                    Path(tmp) / f"ref_{images}.h5",
                    muxer=MUXER_SIZE,
                    batch=2,
                    images=images,
                    progress=False,
                )
                keep(f"recorder_{images}", s.fps, s.stage_seconds)
    f0 = frames[0]
    t_composed = median_time(lambda: preprocess_source(f0, MUXER_SIZE, pre), repeat=30)
    t_two_stage = median_time(lambda: preprocess(muxer_scale(f0, *MUXER_SIZE), pre), repeat=30)
    print(
        f"{n} frames: 2 streams 960x540 H.264 -> muxer 1280x720 -> 320x320 letterbox, sample model "
        f"(fixed batch 1), {model.providers[0]}; best of {reps} interleaved runs"
    )
    ort_fps = best["ort"]
    print(f"  {'ONNX Runtime alone (same frames, preprocessed)':<52} {ort_fps:7.1f} frames/s")
    for images in (True, False):
        fps = best[f"recorder_{images}"]
        name = f"reference recorder, all stages{' + JPEG images' if images else ', no images'}"
        print(
            f"  {name:<52} {fps:7.1f} frames/s  = {fps / ort_fps:.2f}x of inference alone "
            f"(recording costs {100 * (1 - fps / ort_fps):.0f}%)"
        )
        print(
            "      stage seconds: "
            + ", ".join(f"{k} {t:.2f}" for k, t in stages[f"recorder_{images}"].items() if t)
        )
    print(f"  {'decode alone (PyAV, RGB)':<52} {best['decode']:7.1f} frames/s")
    print("preprocessing one frame (source 960x540 -> network tensor):")
    print(row("composed nearest maps (what the recorder does)", t_composed))
    print(
        row("muxer frame first, then nvinfer crop/resize", t_two_stage, t_composed, "of composed")
    )


if __name__ == "__main__":
    main(
        float(sys.argv[1]) if len(sys.argv) > 1 else 6.0,
        int(sys.argv[2]) if len(sys.argv) > 2 else 3,
    )
