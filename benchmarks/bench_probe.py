"""Probe cost on the streaming thread: attach_recorder's callback for a batch of 4 frames, each with a
YOLOv8-640 output (84x8400 float32) and a 640x360 pitched RGBA surface, vs a plain numpy copy of the
same bytes, tensors and RGBA surfaces copied whole (the least any recorder must do before the buffer
goes back to nvinfer's pool; the probe also drops alpha, building RGB).

Runs the real probe code and a real Recorder (JPEG, HDF5 on its writer thread) against
tests/pyds_double.py, the pyds TEST DOUBLE (no DeepStream here): the meta walk, the ctypes reads of
the pointer arrays and the copies are the real work; pyds' own per-call overhead on a device is not
in it. The probe, the plain copy and the variants run interleaved (each first in turn) on the same
buffers; the figures are medians over batches, side by side in one run.

    .venv/bin/python benchmarks/bench_probe.py [--batches 40]
"""

from __future__ import annotations

import argparse
import ctypes
import resource
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
from dsprobe.deepstream.probe import RecorderProbe  # noqa: E402

BATCH, MUX, LAYER = 4, (640, 360), (84, 8400)


def make_batch(
    pipe: pyds.Pipeline, gie: pyds.GieOutput, out: np.ndarray, img: np.ndarray, k: int
) -> tuple[pyds.ProbeInfo, list[np.ndarray], list[np.ndarray]]:
    """One batch in the double: tensor meta + surface per frame; also numpy views of the same bytes."""
    buf = pyds.Buffer()
    frames, tensor_views, surfaces = [], [], []
    for b in range(BATCH):
        fm = pipe.frame(b, k, b, MUX)
        um = pipe.tensor_meta(gie, {"output0": out})
        fm._user.append(um)
        tm = pyds.NvDsInferTensorMeta.cast(um.user_meta_data)
        raw = (ctypes.c_char * out.nbytes).from_address(tm._ptr_array[0])
        tensor_views.append(np.frombuffer(raw, np.float32).reshape(out.shape))
        frames.append(fm)
        pipe.surface(buf, b, img)
        surfaces.append(pyds._surfaces[(hash(buf), b)].view)
    pyds._batch_metas[hash(buf)] = pyds.NvDsBatchMeta(frames)
    return pyds.ProbeInfo(buf), tensor_views, surfaces


class KeepingRecorder:
    """Takes records like the Recorder but only keeps the last few: no writer thread, no HDF5."""

    images, image_max_size, layers = True, 640, None

    def __init__(self) -> None:
        self.kept: list = []
        self.images = True

    def admit(self, source_id: int, pts_ns: int, unique_id: int = 0) -> bool:
        return True

    def record(self, frame: object, *, admitted: bool = False) -> bool:
        self.kept = self.kept[-2 * BATCH :] + [frame]
        return True

    def update_stats(self, section: str, values: dict) -> None:
        pass


def minor_faults() -> int:
    """Minor page faults of this thread so far (first touches of freshly allocated memory)."""
    return resource.getrusage(getattr(resource, "RUSAGE_THREAD", resource.RUSAGE_SELF)).ru_minflt


def plain_copy(tensor_views: list[np.ndarray], surfaces: list[np.ndarray]) -> list:
    """The bytes as they are: each tensor and each RGBA surface (pitch dropped) copied whole."""
    return [(t.copy(), np.array(s, copy=True, order="C")) for t, s in zip(tensor_views, surfaces)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=40)
    args = ap.parse_args()
    with pyds.installed():
        run(args.batches)


def run(batches: int) -> None:
    rng = np.random.default_rng(0)
    out = rng.random(LAYER, dtype=np.float32)
    img = rng.integers(0, 255, (MUX[1], MUX[0], 3), dtype=np.uint8)
    gie = pyds.GieOutput(1, {"output0": (0, LAYER)}, pyds.NvDsInferNetworkInfo(640, 640, 3))
    pipe = pyds.Pipeline(MUX)
    probe_t, copy_t, skip_t, keep_t, tiny_t = [], [], [], [], []
    faults: dict[str, list[int]] = {"probe": [], "copy": [], "keep": []}
    copies: list = []  # the plain copies are kept a while too, as the recorder keeps its records
    tiny_gie = pyds.GieOutput(1, {"output0": (0, (1,))}, pyds.NvDsInferNetworkInfo(640, 640, 3))
    with tempfile.TemporaryDirectory() as tmp:
        rec = Recorder(Path(tmp) / "bench.h5", image_max_size=640, queue_size=256)
        probe = RecorderProbe(rec, muxer_size=MUX, jetson=False)
        skipping = RecorderProbe(
            Recorder(Path(tmp) / "skip.h5", every_n=10**9), muxer_size=MUX, jetson=False
        )
        keeping = RecorderProbe(KeepingRecorder(), muxer_size=MUX, jetson=False)
        fixed = RecorderProbe(KeepingRecorder(), muxer_size=MUX, jetson=False, images=False)
        for k in range(batches + 5):
            info, views, surfaces = make_batch(pipe, gie, out, img, k)
            runs = {
                "probe": (lambda info=info: probe(pipe.pad, info), probe_t),
                "copy": (lambda v=views, s=surfaces: copies.append(plain_copy(v, s)), copy_t),
                "skip": (lambda info=info: skipping(pipe.pad, info), skip_t),
                "keep": (lambda info=info: keeping(pipe.pad, info), keep_t),
            }  # keeps each stream's first frame only
            names = list(runs)
            for what in (
                names[k % 4 :] + names[: k % 4]
            ):  # each goes first in turn (cache, writer thread)
                fn, times = runs[what]
                f0 = minor_faults()
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
                faults.get(what, []).append(minor_faults() - f0)
            tiny_info, _, _ = make_batch(pipe, tiny_gie, np.zeros(1, np.float32), img, k)
            t0 = time.perf_counter()
            fixed(pipe.pad, tiny_info)
            tiny_t.append(time.perf_counter() - t0)
            del copies[:-2]
            pipe._live = []  # nvinfer's pool takes the buffers back
            time.sleep(0.03)  # a 30 fps pipeline: the writer thread gets the CPU between batches
        rec.close()
        skipping.recorder.close()
        rstats, pstats = rec.stats, probe.stats.as_dict()
    warm = slice(5, None)
    p, c = statistics.median(probe_t[warm]), statistics.median(copy_t[warm])
    s, kp, tiny = (statistics.median(t[warm]) for t in (skip_t, keep_t, tiny_t))
    ratios = np.array(probe_t[warm]) / np.array(copy_t[warm])  # same batch, same buffers
    mb = BATCH * (out.nbytes + MUX[0] * MUX[1] * 4) / 1e6
    print(
        f"batch of {BATCH} frames: {BATCH} x ({LAYER[0]}x{LAYER[1]} float32 + {MUX[0]}x{MUX[1]} pitched RGBA "
        f"surface) = {mb:.1f} MB copied; {batches} batches, median"
    )
    print(row("plain numpy copy of the same bytes (RGBA)", c))
    print(
        row("attach_recorder probe (walk, copies, record())", p, c, "of the copy (target <= 1.5x)")
    )
    print(row("probe on a rate-limited batch (nothing copied)", s, c, "of the copy"))
    print(row("probe, no writer thread, memory reused", kp, c, "of the copy"))
    print(row("probe, 1-element layers, no image (fixed cost)", tiny, c, "of the copy"))
    print(
        f"  per-batch ratio probe/copy: median {np.median(ratios):.2f}, p90 {np.percentile(ratios, 90):.2f}; "
        f"page faults per batch (fresh memory for the copies): copy {np.median(faults['copy'][warm]):.0f}, "
        f"probe {np.median(faults['probe'][warm]):.0f}, without writer {np.median(faults['keep'][warm]):.0f}"
    )
    print(
        f"  probe stats (as stored in the recording): mean {pstats['probe_ms_mean']:.2f} ms, "
        f"p99 {pstats['probe_ms_p99']:.2f} ms per batch; recorder wrote {rstats['written']} frames, "
        f"dropped {rstats['dropped_queue_full']} (queue full)"
    )


if __name__ == "__main__":
    main()
