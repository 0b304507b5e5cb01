"""Probe cost on the streaming thread: attach_recorder's callback for a batch of 4 frames, each with a
YOLOv8-640 output (84x8400 float32) and a 640x360 RGBA surface, vs a plain numpy copy of the same bytes.

Runs the real probe code and a real Recorder against tests/pyds_double.py, the pyds TEST DOUBLE
(no DeepStream here): the meta walk, the ctypes reads and the copies are the real work.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import pyds_double as pyds  # noqa: E402
from _timing import row  # noqa: E402

from dsprobe import Recorder  # noqa: E402
from dsprobe.deepstream import bindings  # noqa: E402
from dsprobe.deepstream.probe import RecorderProbe  # noqa: E402

BATCH, MUX = 4, (640, 360)


def main(batches: int = 60) -> None:
    bindings.use_bindings(pyds, pyds.Gst)
    rng = np.random.default_rng(0)
    out = rng.random((84, 8400), dtype=np.float32)
    img = rng.integers(0, 255, (MUX[1], MUX[0], 3), dtype=np.uint8)
    gie = pyds.GieOutput(1, {"output0": (0, (84, 8400))}, pyds.NvDsInferNetworkInfo(640, 640, 3))
    pipe = pyds.Pipeline(MUX)
    probe_times, copy_times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        rec = Recorder(Path(tmp) / "bench.h5", image_max_size=640, queue_size=256)
        probe = RecorderProbe(rec, muxer_size=MUX, image_max_size=640, jetson=False)
        for k in range(batches):
            buf = pyds.Buffer()
            frames = []
            for b in range(BATCH):
                fm = pipe.frame(b, k, b, MUX)
                fm._user.append(pipe.tensor_meta(gie, {"output0": out}))
                frames.append(fm)
                pipe.surface(buf, b, img)
            pyds._batch_metas[hash(buf)] = pyds.NvDsBatchMeta(frames)
            info = pyds.ProbeInfo(buf)
            surfaces = [pyds._surfaces[(hash(buf), b)] for b in range(BATCH)]
            t0 = time.perf_counter()
            probe(pipe.pad, info)
            probe_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _ = [(out.copy(), np.array(s[:, :, :3], copy=True)) for s in surfaces]
            copy_times.append(time.perf_counter() - t0)
            time.sleep(0.02)  # let the writer thread keep up, as a 30 fps pipeline would
        rec.close()
        stats = rec.stats
    p, c = statistics.median(probe_times[5:]), statistics.median(copy_times[5:])
    print(f"batch of {BATCH} frames: {BATCH} x (84x8400 float32 + {MUX[0]}x{MUX[1]} RGBA surface)")
    print(row("plain numpy copy of the same bytes", c))
    print(row("attach_recorder probe (meta walk, copies, record())", p, c, "of the copy (target <= 1.5x)"))
    print(f"  probe p99 {np.percentile(probe_times[5:], 99) * 1e3:.2f} ms; recorder wrote {stats['written']} frames, "
          f"dropped {stats['dropped_queue_full']}")


if __name__ == "__main__":
    main()
