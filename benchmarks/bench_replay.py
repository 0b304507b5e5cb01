"""Whole-recording replay and block reads against plain h5py, side by side in one run (issue 20,
items 1 and 4), from the page cache and from disk.

Recordings (written once under ``out/bench/``, reused after):

* ``yolov8``: YOLOv8-640 80-class heads, ``(84, 8400)`` float32 = 2.8 MB a frame (the synthetic
  trained-detector output of ``bench_postprocess.py``), decode + threshold + NMS + nvinfer scale;
* ``small``: 64 KB a frame, the bundled sample's ``(8, 2100)`` head, same postprocess as the sample.

Item 1, whole-recording replay of a window of consecutive frames:

* ``run_recording``: ``Postprocess.run_recording`` (blocks read into reused buffers, one DataFrame);
* ``detections_by_row``: the same, a Detections per frame;
* floor: plain h5py, each frame ``ds[layer_row]`` then ``pp.run`` (one fixed StepContext), the
  Detections kept in a list: what the hardware and the postprocess allow without any table.

Item 4, block reads of the same window, ``--block`` rows a read:

* ``read_layer``: ``Recording.read_layer(name, rows)`` per block, a new array each, for blocks of
  ``--block`` rows and of the replay's own size (at most ``BLOCK_BYTES`` and 32 rows);
* ``read_layer out=``: ``--block`` rows into one reused buffer (what the replay does);
* floor: plain h5py per-row reads, ``ds[i]`` for each row (each a new array);
  also ``ds.read_direct`` per row into a reused buffer.

Ratios are floor time / dsprobe time (>= 1: dsprobe faster), per round (contenders of one round
share the machine's load), medians and ranges over ``--rounds`` interleaved rounds (random order per
round). "disk": before every contender's run the files' pages are dropped from the page cache
(``posix_fadvise(DONTNEED)``, checked with ``fincore`` when present) so each reads from the device.
Targets: replay >= 0.85x, block reads >= 0.9x.

Usage: python benchmarks/bench_replay.py [--frames 600] [--window 120] [--rounds 9] [--block 32]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Callable

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_postprocess import spec as yolov8_spec  # noqa: E402
from bench_postprocess import yolov8_output  # noqa: E402

from dsprobe import FrameRecord, Postprocess, Recorder, open_recording  # noqa: E402
from dsprobe.nvinfer.config import load_nvinfer_config  # noqa: E402
from dsprobe.postprocess.registry import StepContext  # noqa: E402
from dsprobe.postprocess.replay import BLOCK_BYTES, FrameSizes  # noqa: E402
from dsprobe.sample import CONFIG_PATH  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "out" / "bench"
TARGET_REPLAY, TARGET_READ = 0.85, 0.9
NETWORK = {"yolov8": (640, 640, 3), "small": (320, 320, 3)}
FRAME = (1280, 720)


def sample_output(rng: np.random.Generator, anchors: int = 2100) -> np.ndarray:
    """The bundled sample's head ``(4 + 4 classes, anchors)``: low background scores, a few objects."""
    out = np.zeros((8, anchors), np.float32)
    out[:2] = rng.uniform(0, 320, (2, anchors))
    out[2:4] = rng.uniform(8, 60, (2, anchors))
    out[4:] = rng.uniform(0, 0.05, (4, anchors))
    hot = rng.choice(anchors, 40, replace=False)
    out[4 + rng.integers(0, 4, 40), hot] = rng.uniform(0.3, 0.95, 40)
    return out


def make(kind: str, frames: int) -> Path:
    """The recording of ``kind`` (written once, ``frames`` frames of 16 distinct heads)."""
    path = OUT / f"replay_{kind}_{frames}.h5"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    heads = [yolov8_output(rng) if kind == "yolov8" else sample_output(rng) for _ in range(16)]
    tmp = path.with_suffix(".tmp.h5")
    with Recorder(tmp, images=False, drop_when_full=False) as rec:
        for i in range(frames):
            rec.record(
                FrameRecord(
                    i % 2,
                    i // 2,
                    network_size=NETWORK[kind],
                    frame_size=FRAME,
                    layers={"output0": heads[i % 16]},
                )
            )
    tmp.rename(path)
    return path


def postprocess(kind: str) -> Postprocess:
    if kind == "yolov8":
        return yolov8_spec()
    return Postprocess.from_nvinfer_config(load_nvinfer_config(CONFIG_PATH))


def drop_cache(path: Path) -> None:
    """Evict ``path``'s pages from the page cache (clean pages: no root needed for this file)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cached_fraction(path: Path) -> str:
    try:
        out = subprocess.run(
            ["fincore", "-nb", "-o", "RES,SIZE", str(path)], capture_output=True, text=True
        ).stdout.split()
        return f"{int(out[0]) / max(int(out[1]), 1):.0%}"
    except (OSError, ValueError, IndexError):
        return "n/a (no fincore)"


Times = dict[str, list[float]]


def interleaved(
    fns: dict[str, Callable[[], object]], rounds: int, before: Callable[[], None] | None
) -> tuple[Times, Times]:
    """Wall and CPU seconds of each contender per round, in a new random order each round;
    ``before`` runs untimed before every contender (dropping the page cache for the disk case)."""
    for fn in fns.values():  # warm-up: imports, buffers, the page cache for the cached case
        fn()
    wall: Times = {k: [] for k in fns}
    cpu: Times = {k: [] for k in fns}
    order = random.Random(0)
    names = list(fns)
    for _ in range(rounds):
        order.shuffle(names)
        for k in names:
            if before is not None:
                before()
            t0, c0 = time.perf_counter(), time.process_time()
            fns[k]()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
    return wall, cpu


def line(name: str, ts: list[float], frames: int) -> str:
    per = [t / frames * 1e3 for t in ts]
    return (
        f"    {name:<38} {statistics.median(per):8.3f} ms/frame  [{min(per):.3f} - {max(per):.3f}]"
    )


def ratio_line(name: str, floor: list[float], ours: list[float], target: float) -> str:
    per_round = [f / o for f, o in zip(floor, ours)]
    med = statistics.median(per_round)
    verdict = "met" if med >= target else "NOT met"
    return (
        f"    {name:<38} {med:5.2f}x of the floor  [{min(per_round):.2f} - "
        f"{max(per_round):.2f}]  target >= {target:.2f}x: {verdict}"
    )


def ratios(
    rows: list[tuple[str, str]], floor: str, wall: Times, cpu: Times, target: float, disk: bool
) -> None:
    """Ratio lines by wall time; from the page cache also by CPU time (less moved by other jobs on
    a shared machine; from disk the wait for the device is the point, so wall only)."""
    for label, k in rows:
        print(ratio_line(f"{label} (wall)", wall[floor], wall[k], target))
    if not disk:
        for label, k in rows:
            print(ratio_line(f"{label} (CPU)", cpu[floor], cpu[k], target))


def replay_case(kind: str, path: Path, window: np.ndarray, rounds: int, disk: bool) -> None:
    pp = postprocess(kind)
    rec = open_recording(path)
    f = h5py.File(path, "r")
    ds = f["layers/1/output0"]
    layer_rows = rec.frames["layer_row"].to_numpy()[window]
    net = NETWORK[kind]
    ctx: StepContext = pp.context(FrameSizes(net[:2], FRAME))

    def floor() -> list:
        return [pp.run({"output0": ds[int(i)]}, ctx) for i in layer_rows]

    fns = {
        "run_recording": lambda: pp.run_recording(rec, window),
        "detections_by_row": lambda: pp.detections_by_row(rec, window),
        "floor": floor,
    }
    before = (lambda: drop_cache(path)) if disk else None
    t, cpu = interleaved(fns, rounds, before)
    n = len(window)
    print(line("plain h5py ds[i] + pp.run (floor)", t["floor"], n))
    print(line("run_recording (one DataFrame)", t["run_recording"], n))
    print(line("detections_by_row (dict of Detections)", t["detections_by_row"], n))
    contenders = [("run_recording", "run_recording"), ("detections_by_row", "detections_by_row")]
    ratios(contenders, "floor", t, cpu, TARGET_REPLAY, disk)
    df = pp.run_recording(rec, window)
    ref = floor()
    assert len(df) == sum(len(d) for d in ref)
    f.close()
    rec.close()


def read_case(
    kind: str, path: Path, window: np.ndarray, block: int, rounds: int, disk: bool
) -> None:
    rec = open_recording(path)
    f = h5py.File(path, "r")
    ds = f["layers/1/output0"]
    layer_rows = rec.frames["layer_row"].to_numpy()[window]
    # the replay's own block: at most BLOCK_BYTES of layer data (and ``batch`` = 32 frames)
    replay_block = max(1, min(32, BLOCK_BYTES // (ds.dtype.itemsize * int(np.prod(ds.shape[1:])))))
    sizes = dict.fromkeys([block, replay_block])
    blocks = {b: [window[i : i + b] for i in range(0, len(window), b)] for b in sizes}
    buf = np.empty((block, *ds.shape[1:]), ds.dtype)
    one = np.empty(ds.shape[1:], ds.dtype)

    def per_row() -> None:
        for i in layer_rows:
            ds[int(i)]

    def per_row_direct() -> None:
        for i in layer_rows:
            ds.read_direct(one, np.s_[int(i)])

    def fresh(b: int) -> Callable[[], None]:
        def run() -> None:  # each block's array used and dropped, as the floor's rows are
            for rs in blocks[b]:
                rec.read_layer("output0", rs)

        return run

    def reused() -> None:
        for rs in blocks[block]:
            rec.read_layer("output0", rs, out=buf[: len(rs)])

    fns: dict[str, Callable[[], object]] = {f"read_layer {b}": fresh(b) for b in sizes}
    fns["read_layer out="] = reused
    fns["ds[i]"] = per_row
    fns["read_direct"] = per_row_direct
    before = (lambda: drop_cache(path)) if disk else None
    t, cpu = interleaved(fns, rounds, before)
    n = len(window)
    print(line("plain h5py ds[i] per row (floor)", t["ds[i]"], n))
    print(line("plain h5py read_direct per row, reused", t["read_direct"], n))
    for b in sizes:
        print(line(f"read_layer, {b} rows a call, new array", t[f"read_layer {b}"], n))
    print(line(f"read_layer, {block} rows a call, out=reused", t["read_layer out="], n))
    contenders = [(f"read_layer {b} rows, new array", f"read_layer {b}") for b in sizes]
    contenders.append((f"read_layer {block} rows, out=reused", "read_layer out="))
    ratios(contenders, "ds[i]", t, cpu, TARGET_READ, disk)
    np.testing.assert_array_equal(rec.read_layer("output0", window[:block]), ds[layer_rows[:block]])
    f.close()
    rec.close()


def memory(kind: str, path: Path, frames: int) -> None:
    """Peak Python-traced memory of run_recording over every frame, against one pandas DataFrame
    per frame (the per-frame path before) and against the result's own size."""
    import pandas as pd

    pp = postprocess(kind)
    rec = open_recording(path)
    rows = np.arange(min(frames, len(rec)))

    def per_frame_tables() -> object:
        parts = []
        for r, d in pp.detections_by_row(rec, rows).items():
            df = d.to_dataframe(pp.labels or None)
            df.insert(0, "row", r)
            df.insert(1, "source_id", int(rec.frames["source_id"].iloc[r]))
            df.insert(2, "frame_num", int(rec.frames["frame_num"].iloc[r]))
            parts.append(df)
        return pd.concat(parts, ignore_index=True)

    for name, fn in (
        ("run_recording", lambda: pp.run_recording(rec, rows)),
        ("per-frame DataFrames", per_frame_tables),
    ):
        tracemalloc.start()
        df = fn()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(
            f"    {name:<24} peak {peak / 2**20:7.1f} MiB for {len(rows)} frames, {len(df)} "
            f"detections (result {df.memory_usage(deep=True).sum() / 2**20:.1f} MiB)"
        )
    rec.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=600, help="frames in the yolov8 recording")
    ap.add_argument("--window", type=int, default=120, help="frames replayed / read per run")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--block", type=int, default=32, help="rows per read_layer call (item 4)")
    ap.add_argument("--kinds", default="yolov8,small")
    ap.add_argument("--no-disk", action="store_true")
    args = ap.parse_args()
    load0 = os.getloadavg()
    print(
        f"bench_replay: {os.cpu_count()} cores, load average {load0[0]:.2f} {load0[1]:.2f} "
        f"{load0[2]:.2f}; h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version}); medians of "
        f"{args.rounds} interleaved rounds, [min - max]; ratio = floor / dsprobe per round"
    )
    rng = np.random.default_rng(1)
    for kind in args.kinds.split(","):
        frames = args.frames if kind == "yolov8" else 10 * args.frames
        window_len = args.window if kind == "yolov8" else 10 * args.window
        path = make(kind, frames)
        mb = os.path.getsize(path) / 1e6
        with open_recording(path) as r:
            frame_mb = r.layers["output0"].dtype.itemsize * np.prod(r.layers["output0"].shape) / 1e6
        for disk in [False] + ([] if args.no_disk else [True]):
            start = int(rng.integers(0, frames - window_len))
            window = np.arange(start, start + window_len)
            where = "from disk" if disk else "cached"
            if disk:
                drop_cache(path)
                state = f"(page cache after a drop: {cached_fraction(path)})"
            else:
                state = ""
            print(
                f"\n{kind}: {frames} frames x {frame_mb:.3f} MB ({mb:.0f} MB file), {window_len} "
                f"frames a run, {where} {state}"
            )
            print("  item 1: whole-recording replay")
            replay_case(kind, path, window, args.rounds, disk)
            print(f"  item 4: block reads ({args.block} rows a read_layer call)")
            read_case(kind, path, window, args.block, args.rounds, disk)
        print("  memory (cached)")
        memory(kind, path, frames)
    load1 = os.getloadavg()
    print(f"\nload average at the end: {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")


if __name__ == "__main__":
    main()
