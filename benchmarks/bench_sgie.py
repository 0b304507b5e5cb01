"""SGIE recording and replay (50 objects x 128-d embedding + a classifier head per frame) and SGIE
replay scaling with objects, side by side in one run.

Part 1, the secondary frame (issue 17), per round (interleaved in a random order, ``--reps`` rounds,
medians and ranges) on ``--frames`` frames of ``--objects`` objects, each with a 128-d ``embedding``
and an 8-class ``color`` probability layer:

* copy: ``numpy.copyto`` of the same layer bytes (50 x (128 + 8) float32 = 27.2 KB per frame) into a
  preallocated buffer, the floor any recorder or reader pays;
* h5py: a plain ``h5py`` read of both per-object datasets of the recording (the same bytes, in the
  replay's blocks of about 16 MiB);
* record: a Recorder (default options, its own writer thread) given the FrameRecords, until
  ``close()`` returns (on disk);
* raw: ``dsprobe.analysis.secondary.sgie_outputs`` (object table + one read per layer);
* replay: ``embedding_postprocess`` and ``classifier_postprocess`` ``detections_by_row`` over every
  SGIE frame, each and both (a frame's whole secondary postprocess: the target's figure);
* per object: the embedding replay through a user decoder without an object-batched variant (the
  per-object ``pp.run`` path every decoder took before).

Targets: recording keeps up with one 30 fps stream (>= 30 frames/s); raw replay and replay through
both postprocesses at least 10x real time (>= 300 frames/s).

Part 2, scaling (issue 20), on recordings of ``--sizes`` objects (50 per frame, built once under
``out/bench/``, page-cached when timed), per round in a random order: the embedding replay end to
end (``open_recording`` + ``embedding_postprocess(...).detections_by_row`` of every frame: object
table, block reads, batched decode and scale, one Detections per frame) against a plain h5py read of
the same per-object bytes (open + read both datasets). Targets: >= 100,000 objects/s; per-object cost
flat from 10k to 1M objects: it never grows by more than 1.25x, against the smallest size or the
previous one (it falls at small sizes, where opening the file is a fixed ~30 ms).

Usage: python benchmarks/bench_sgie.py [--frames 300] [--reps 5] [--sizes 10000,100000,1000000]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsprobe import (  # noqa: E402
    FrameRecord,
    ObjectRecord,
    Postprocess,
    Recorder,
    classifier_postprocess,
    embedding_postprocess,
    open_recording,
)
from dsprobe.analysis.secondary import sgie_outputs  # noqa: E402
from dsprobe.postprocess.decoders import decode_embedding  # noqa: E402
from dsprobe.postprocess.replay import OBJECT_BLOCK_BYTES  # noqa: E402
from dsprobe.sample import SECONDARY_CONFIG_PATH  # noqa: E402

TARGET_RECORD_FPS = 30.0
TARGET_REPLAY_FPS = 300.0
TARGET_OBJECTS_PER_S = 100_000.0
TARGET_FLAT = 1.25
OUT = Path(__file__).resolve().parents[1] / "out" / "bench"


def per_object_embedding(
    layers: dict, ctx: object, *, layer: str | None = None, l2_normalize: bool = True
):
    """The built-in embedding decoder as a user's decoder without an object-batched variant: the
    per-object path (one ``pp.run`` per object)."""
    return decode_embedding(layers, ctx, layer=layer, l2_normalize=l2_normalize)


def make_frames(n: int, objects: int, dim: int, seed: int = 0) -> list[FrameRecord]:
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        emb = rng.normal(size=(objects, dim)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        color = rng.dirichlet(np.ones(8), objects).astype(np.float32)
        objs = [
            ObjectRecord(
                rect=(float(20 * k % 1200), float(10 * k % 600), 48.0, 64.0),
                class_id=k % 4,
                confidence=0.9,
                unique_component_id=1,
                label="shape",
                layers={"embedding": emb[k], "color": color[k]},
            )
            for k in range(objects)
        ]
        frames.append(
            FrameRecord(
                0,
                i,
                pts_ns=i * 33_333_333,
                unique_id=2,
                network_size=(64, 64, 3),
                frame_size=(1280, 720),
                objects=objs,
            )
        )
    return frames


def record(path: Path, frames: list[FrameRecord]) -> None:
    rec = Recorder(path, images=False, drop_when_full=False, overwrite=True)
    for f in frames:
        rec.record(f)
    rec.close()


def scale_recording(objects: int, per_frame: int, dim: int) -> Path:
    """A recording of ``objects`` SGIE objects, made once under out/bench/."""
    path = OUT / f"sgie_scale_{objects}x{dim}.h5"
    if path.exists():
        with open_recording(path) as r:
            if len(r.object_table("objects")) == objects:
                return path
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rec = Recorder(path, images=False, drop_when_full=False, overwrite=True)
    for start in range(0, objects // per_frame, 500):
        for f in make_frames(min(500, objects // per_frame - start), per_frame, dim, seed=start):
            f.frame_num += start
            rec.record(f)
    rec.close()
    print(f"  (built {path.name}: {objects:,} objects in {time.perf_counter() - t0:.0f} s)")
    return path


def h5py_read(path: Path) -> Callable[[], object]:
    """Open the file and read every per-object layer dataset of GIE 2 with plain h5py, in blocks of
    rows of about 16 MiB (as the replay reads them; one read of a whole 512 MB dataset was 3-6x
    slower per byte here: a fresh half-gigabyte array)."""

    def run() -> object:
        with h5py.File(path, "r") as f:
            ds = list(f["object_layers/2"].values())
            n = ds[0].shape[0]
            row_bytes = sum(d.dtype.itemsize * int(np.prod(d.shape[1:])) for d in ds)
            step = max(1, OBJECT_BLOCK_BYTES // row_bytes)
            return [[d[a : a + step] for d in ds] for a in range(0, n, step)]

    return run


def replay(path: Path, *pps: Postprocess) -> Callable[[], object]:
    def run() -> object:
        with open_recording(path) as r:
            return [pp.detections_by_row(r) for pp in pps]

    return run


def timed(fn: Callable[[], object]) -> float:
    """Wall time of ``fn()``, from the same start each time: a full garbage collection first, and the
    result freed after the clock stops (the cost measured is making it, not freeing the previous
    contender's half gigabyte)."""
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    del out
    return dt


def interleaved(contenders: dict[str, Callable[[], object]], reps: int) -> dict[str, list[float]]:
    """Every contender once per round, in a new random order each round (seeded)."""
    order = random.Random(0)
    out: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(reps):
        names = list(contenders)
        order.shuffle(names)
        for name in names:
            out[name].append(timed(contenders[name]))
    return out


def spread(values: list[float], scale: float) -> str:
    """``[min .. max]`` of ``scale / value`` (rates from times)."""
    return f"[{scale / max(values):,.0f} .. {scale / min(values):,.0f}]"


def part1(args: argparse.Namespace, emb_pp: Postprocess, cls_pp: Postprocess) -> None:
    frames = make_frames(args.frames, args.objects, args.dim)
    n, objects = args.frames, args.frames * args.objects
    flat = np.stack([o.layers["embedding"] for f in frames for o in f.objects])
    probs = np.stack([o.layers["color"] for f in frames for o in f.objects])
    dst_e, dst_c = np.empty_like(flat), np.empty_like(probs)
    per_obj = Postprocess(
        [
            {"kind": "decode", "name": per_object_embedding, "params": {"layer": "embedding"}},
            emb_pp.steps[1],
        ],
        geometry=emb_pp.geometry,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sgie.h5"
        record(path, frames)
        with open_recording(path) as r:  # the replays equal the per-object path, and the bytes
            out = sgie_outputs(r, 2)
            assert np.array_equal(out.layers["embedding"], flat), "replay lost bytes"
            a, b = emb_pp.detections_by_row(r), per_obj.detections_by_row(r)
            assert all(a[k].equals(b[k]) for k in a) and len(a) == n
            c = cls_pp.detections_by_row(r)
            assert all(c[k].equals(cls_pp(r[k])) for k in list(c)[:20])
        contenders = {
            "copy": lambda: (np.copyto(dst_e, flat), np.copyto(dst_c, probs)),
            "h5py read": h5py_read(path),
            "record": lambda: record(Path(tmp) / "rec.h5", frames),
            "raw (sgie_outputs)": lambda: sgie_outputs(open_recording(path), 2),
            "replay embedding": replay(path, emb_pp),
            "replay classifier": replay(path, cls_pp),
            "replay both heads": replay(path, emb_pp, cls_pp),
            "per object (embedding)": replay(path, per_obj),
        }
        t = interleaved(contenders, args.reps)
    med = {k: statistics.median(v) for k, v in t.items()}
    kb = (flat.nbytes + probs.nbytes) / n / 1e3
    print(
        f"\n1. SGIE frame: {args.objects} objects x ({args.dim}-d embedding + 8-class head) float32 "
        f"({kb:.1f} KB of layers per frame), {n} frames ({objects:,} objects), {args.reps} "
        "interleaved rounds; medians [min .. max]"
    )
    print(
        f"  {'':<24} {'frames/s':>9} {'objects/s':>11} {'x h5py':>8}  {'measured / target':<30}"
        "frames/s range"
    )
    targets = {
        "record": TARGET_RECORD_FPS,
        "raw (sgie_outputs)": TARGET_REPLAY_FPS,
        "replay both heads": TARGET_REPLAY_FPS,
    }
    for name in contenders:
        fps = n / med[name]
        tgt = targets.get(name)
        verdict = f"{fps / tgt:5.2f}x of >= {tgt:g} frames/s" if tgt else ""
        print(
            f"  {name:<24} {fps:9,.0f} {fps * args.objects:11,.0f} {med[name] / med['h5py read']:8.1f}"
            f"  {verdict:<30}{spread(t[name], n)}"
        )
    print(
        f"  batched / per-object embedding replay: {med['per object (embedding)'] / med['replay embedding']:.1f}x "
        "faster (same Detections, checked above)"
    )


def part2(args: argparse.Namespace, emb_pp: Postprocess) -> None:
    sizes = [int(s) for s in args.sizes.split(",") if s]
    paths = {s: scale_recording(s, args.objects, args.dim) for s in sizes}
    for s in sizes:  # warm the page cache and check the figures are of a real replay
        with open_recording(paths[s]) as r:
            d = emb_pp.detections_by_row(r)
            assert sum(len(v) for v in d.values()) == s
    contenders = {}
    for s in sizes:
        contenders[f"replay {s}"] = replay(paths[s], emb_pp)
        contenders[f"h5py {s}"] = h5py_read(paths[s])
    t = interleaved(contenders, args.reps)
    med = {k: statistics.median(v) for k, v in t.items()}
    print(
        f"\n2. SGIE replay scaling: embedding_postprocess end to end (open + detections_by_row) on "
        f"{args.objects} objects x ({args.dim}-d + 8-class) per frame, page-cached, {args.reps} "
        "interleaved rounds; medians [min .. max]"
    )
    print(
        f"  {'objects':>10} {'replay s':>9} {'objects/s':>11} {'vs >= 100k/s':>13} "
        f"{'us/object':>10} {'vs smallest':>12} {'vs previous':>12} {'h5py s':>8} {'x h5py':>7}"
        "   objects/s range"
    )
    base = med[f"replay {sizes[0]}"] / sizes[0]
    worst, previous = 0.0, base
    for s in sizes:
        rt, ht = med[f"replay {s}"], med[f"h5py {s}"]
        cost = rt / s
        worst = max(worst, cost / base, cost / previous)
        print(
            f"  {s:>10,} {rt:9.3f} {s / rt:11,.0f} {s / rt / TARGET_OBJECTS_PER_S:12.2f}x "
            f"{cost * 1e6:10.2f} {cost / base:11.2f}x {cost / previous:11.2f}x {ht:8.3f} "
            f"{rt / ht:7.1f}   {spread(t[f'replay {s}'], s)}"
        )
        previous = cost
    print(
        f"  per-object cost growth (vs the smallest and the previous size): worst {worst:.2f}x "
        f"(target <= {TARGET_FLAT}x: flat) -> {'met' if worst <= TARGET_FLAT else 'NOT met'}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--objects", type=int, default=50)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--sizes", default="10000,100000,1000000", help="objects; '' skips part 2")
    ap.add_argument("--skip-frame", action="store_true", help="part 2 only")
    args = ap.parse_args(argv)
    emb_pp = embedding_postprocess(SECONDARY_CONFIG_PATH, "embedding")
    cls_pp = classifier_postprocess(SECONDARY_CONFIG_PATH, ["color"])
    print(f"load average at start: {os.getloadavg()[0]:.1f} (2-core VM; other jobs may run)")
    if not args.skip_frame:
        part1(args, emb_pp, cls_pp)
    if args.sizes:
        part2(args, emb_pp)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
