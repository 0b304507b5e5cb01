"""Reference recorder throughput: decode + preprocess + ONNX Runtime + record, vs ONNX Runtime alone on
the same (already preprocessed) frames — how much recording costs on top of inference."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dsprobe.nvinfer_config import load_nvinfer_config
from dsprobe.reference.preprocess import muxer_scale, preprocess
from dsprobe.reference.recorder import record_onnx
from dsprobe.reference.runner import OnnxModel
from dsprobe.reference.video import read_frames
from dsprobe.sample import CONFIG_PATH, MODEL_PATH, make_videos


def main(seconds: float = 6.0) -> None:
    cfg = load_nvinfer_config(CONFIG_PATH)
    with tempfile.TemporaryDirectory() as tmp:
        v = make_videos(tmp, seconds=seconds)
        s = record_onnx(v.paths, CONFIG_PATH, None, Path(tmp) / "ref.h5", batch=2, progress=False)
        frames = [f.image for p in v.paths for f in read_frames(p)]
        tensors = np.stack([preprocess(muxer_scale(f, 1280, 720), cfg.preprocessing)[0] for f in frames])
        model = OnnxModel(MODEL_PATH, cfg.preprocessing)
        t0 = time.perf_counter()
        for x in tensors:
            model(x[None])
        t_ort = time.perf_counter() - t0
    n = len(frames)
    print(f"{n} frames (2 streams 960x540 H.264 -> muxer 1280x720 -> 320x320 letterbox), sample model, CPU")
    print(f"  ONNX Runtime alone:                 {n / t_ort:7.1f} frames/s")
    print(f"  reference recorder (all stages):    {s.fps:7.1f} frames/s   = {s.fps / (n / t_ort):.2f}x of inference alone")
    print("  stage seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in s.stage_seconds.items()))


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 6.0)
