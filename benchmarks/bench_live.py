"""Live postprocess cost: attach_postprocess's probe per frame (YOLOv8-640 layout, 80 classes) vs the same
Postprocess on the same tensors outside the probe (the adapter's overhead: meta walk, tensor copy,
NvDsObjectMeta creation), against the budget of a 30 fps x 4 stream pipeline (8.3 ms per frame).

The probe runs against tests/pyds_double.py, the pyds TEST DOUBLE (no DeepStream here)."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import pyds_double as pyds  # noqa: E402
from _timing import row  # noqa: E402
from bench_postprocess import spec, yolov8_output  # noqa: E402

from dsprobe.deepstream import bindings  # noqa: E402
from dsprobe.deepstream.live import PostprocessProbe  # noqa: E402
from dsprobe.postprocess.registry import StepContext  # noqa: E402

BATCH, MUX = 4, (1280, 720)


def main(batches: int = 50) -> None:
    bindings.use_bindings(pyds, pyds.Gst)
    rng = np.random.default_rng(0)
    outs = [yolov8_output(rng) for _ in range(8)]
    pp = spec()
    gie = pyds.GieOutput(1, {"output0": (0, (84, 8400))}, pyds.NvDsInferNetworkInfo(640, 640, 3))
    pipe = pyds.Pipeline(MUX)
    probe = PostprocessProbe(pp, muxer_size=MUX)
    ctx = StepContext((640, 640), MUX)
    t_probe, t_plain, n_obj = [], [], 0
    for k in range(batches):
        buf = pyds.Buffer()
        frames = []
        for b in range(BATCH):
            fm = pipe.frame(b, k, b, MUX)
            fm._user.append(pipe.tensor_meta(gie, {"output0": outs[(k + b) % 8]}))
            frames.append(fm)
        pyds._batch_metas[hash(buf)] = pyds.NvDsBatchMeta(frames)
        t0 = time.perf_counter()
        probe(pipe.pad, pyds.ProbeInfo(buf))
        t_probe.append((time.perf_counter() - t0) / BATCH)
        n_obj += sum(len(f._objects) for f in frames)
        t0 = time.perf_counter()
        for b in range(BATCH):
            pp.run({"output0": outs[(k + b) % 8]}, ctx)
        t_plain.append((time.perf_counter() - t0) / BATCH)
    p, q = statistics.median(t_probe), statistics.median(t_plain)
    budget = 1 / (30 * 4)
    print(
        f"per frame, YOLOv8-640 (84x8400), {n_obj / (batches * BATCH):.0f} objects added per frame"
    )
    print(row("same Postprocess outside the probe", q))
    print(
        row(
            "attach_postprocess probe (walk, copy, postprocess, meta)",
            p,
            q,
            "of outside (adapter overhead)",
        )
    )
    print(
        f"  30 fps x 4 streams budget {budget * 1e3:.2f} ms per frame: the probe uses {p / budget:.0%} of it"
    )


if __name__ == "__main__":
    main()
