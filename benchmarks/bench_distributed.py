"""A 10 x 10 search over a recording set on Dask: 1 vs 2 worker processes, and the in-process path.

The set: ``--recordings`` (8) recordings of ``--frames`` (1,000) frames each, one camera per recording,
made once with the bundled sample model through the reference recorder into out/bench/sets/
(:func:`dsprobe.sample.ensure_sample_set`, a few minutes), each with its ``<name>_gt.json``. The search: pre-cluster threshold x NMS IoU, 10 x 10,
COCO mAP per setting (:func:`dsprobe.search_set`, partitions of ``--block`` frames).

Timed, interleaved (a random order each round), ``--repeat`` rounds (median and range printed):

* in process: ``search_set(client="sync")``, every task run here one after the other (the baseline);
* LocalCluster, 1 worker process (1 thread);
* LocalCluster, 2 worker processes (target: >= 1.7x the 1-worker speed).

Clusters start before timing (their start-up is printed apart). Every run's table must equal the
baseline's exactly. Then the figures the cost model in docs/recording-sets.md uses: per-frame cost of
the search on one worker, bytes read per frame, scheduler overhead per task, merge cost, and the size
of what a partition sends (accumulate rows and score cuts).

Run: ``.venv/bin/python benchmarks/bench_distributed.py`` (``--repeat 1 --frames 200`` for a quick look;
``--out DIR`` for a folder that already holds the set, as ``DIR/8x1000``).
"""

from __future__ import annotations

import argparse
import logging
import os
import pickle
import random
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GRID = {
    "pre_cluster_threshold": [round(float(v), 3) for v in np.linspace(0.05, 0.5, 10)],
    "iou_threshold": [round(float(v), 3) for v in np.linspace(0.3, 0.75, 10)],
}


def spread(times: list[float]) -> str:
    return f"{statistics.median(times):7.2f} s (range {min(times):.2f}-{max(times):.2f})"


def cpu_seconds(client) -> list[float]:
    """CPU seconds used so far by each worker process (or this process for a local scheduler)."""
    if isinstance(client, str):
        return [time.process_time()]
    return list(client.run(time.process_time).values())


def task_overhead(client, n: int = 400) -> float:
    """Seconds per trivial task through the scheduler (submit, run, gather)."""
    t0 = time.perf_counter()
    client.gather(client.map(int, range(n), pure=False))
    return (time.perf_counter() - t0) / n


def cost_model(
    c: float,
    merge_per_frame: float,
    overhead: float,
    sent_per_frame: float,
    read_per_frame: float,
    clusterings: int,
) -> None:
    """Print what W workers would take for N frames (100 settings, ``clusterings`` of them each
    cut by 100 / clusterings thresholds; 1,000-frame partitions), from the measured per-frame
    costs: partitions N*c/W, merges 100*N*m/min(W, clusterings) (one clustering's merge is one
    task), scheduler overhead per task, bytes read and sent."""
    print(
        f"\ncost model (100 settings = {clusterings} clusterings x {100 // clusterings} thresholds, "
        "partitions of 1,000 frames, each worker a core of its own):"
    )
    print(
        f"  {'frames':>7} {'workers':>7} {'partitions':>11} {'merges':>9} {'scheduler':>10}"
        f" {'total':>9} {'read/s':>10} {'sent':>9}"
    )
    for n in (1e6, 1e9):
        for w in (10, 100, 1000):
            part = n * c / w
            merge = 100 * n * merge_per_frame / min(w, clusterings)
            sched = (n / 1000 + 2 * w) * overhead
            read = w * read_per_frame / c
            print(
                f"  {n:7.0e} {w:7d} {hours(part):>11} {hours(merge):>9} {hours(sched):>10}"
                f" {hours(part + merge + sched):>9} {read / 1e9:7.1f} GB/s"
                f" {n * sent_per_frame / 1e9:6.1f} GB"
            )


def hours(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recordings", type=int, default=8)
    ap.add_argument("--frames", type=int, default=1000, help="frames per recording")
    ap.add_argument("--block", type=int, default=1000, help="frames per partition")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0, help="of the random order of each round")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench" / "sets"))
    args = ap.parse_args()

    import pandas as pd
    from distributed import Client, LocalCluster

    import dsprobe
    from dsprobe.analysis.match_tables import score_partitions
    from dsprobe.analysis.set_tasks import GroundTruthFile, score_partition
    from dsprobe.sample import ensure_sample_set

    folder = Path(args.out) / f"{args.recordings}x{args.frames}"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"the set: {folder} (made once, about 1 s per 50 frames)", flush=True)
    ensure_sample_set(folder, args.recordings, seconds=args.frames / 15)
    rset = dsprobe.open_recordings(str(folder / "cam*.h5"))
    pp = dsprobe.Postprocess.from_nvinfer_config(rset.config())
    n_frames = len(rset.frames)
    print(f"set: {rset}, partitions of {args.block} frames, grid 10 x 10 = 100 settings")

    clusters = {}
    for n in (1, 2):
        t0 = time.perf_counter()
        lc = LocalCluster(
            n_workers=n,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        )
        clusters[n] = (lc, Client(lc))
        print(f"LocalCluster with {n} worker(s) started in {time.perf_counter() - t0:.1f} s")

    runs = {"in process (sync)": "sync", "1 worker": clusters[1][1], "2 workers": clusters[2][1]}
    times: dict[str, list[float]] = {k: [] for k in runs}
    busiest: dict[str, list[float]] = {k: [] for k in runs}
    tables = {}
    rng = random.Random(args.seed)
    for rep in range(args.repeat):
        order = rng.sample(list(runs), len(runs))  # interleaved, a random order each round
        for name in order:
            cpu0 = cpu_seconds(runs[name])
            t0 = time.perf_counter()
            res = dsprobe.search_set(
                rset, pp, GRID, client=runs[name], block_frames=args.block, progress=False
            )
            times[name].append(time.perf_counter() - t0)
            cpu = [b - a for a, b in zip(cpu0, cpu_seconds(runs[name]))]
            busiest[name].append(max(cpu))
            tables[name] = res.table
            print(
                f"  run {rep + 1}: {name:<18} {times[name][-1]:7.2f} s wall, CPU "
                + " + ".join(f"{c:.1f}" for c in cpu)
                + f" s, load {os.getloadavg()[0]:.2f}",
                flush=True,
            )
    base = tables["in process (sync)"]
    for t in tables.values():
        pd.testing.assert_frame_equal(t, base, check_exact=True)
    best = dict(base.iloc[0][list(GRID)])
    print(f"every run: the same table; best {best}, mAP@0.5 {base.iloc[0]['map50']:.4f}")

    med = {k: statistics.median(v) for k, v in times.items()}
    speedups = [a / b for a, b in zip(times["1 worker"], times["2 workers"])]
    print("\nmedian (range) over", args.repeat, "interleaved runs:")
    for name, t in times.items():
        print(f"  {name:<18} {spread(t)}   {n_frames / med[name]:8.0f} frames/s (100 settings)")
    print(
        f"  2 workers vs 1 worker: {med['1 worker'] / med['2 workers']:.2f}x "
        f"(per run {min(speedups):.2f}-{max(speedups):.2f}x)   target >= 1.70x"
    )
    print(f"  2 workers vs in process: {med['in process (sync)'] / med['2 workers']:.2f}x")
    cpu1, cpu2 = (statistics.median(busiest[k]) for k in ("1 worker", "2 workers"))
    print(
        f"  CPU of the busiest worker: 1 worker {cpu1:.1f} s, 2 workers {cpu2:.1f} s -> "
        f"{cpu1 / cpu2:.2f}x if each worker had a core to itself (the machine's load: "
        f"{os.getloadavg()[0]:.1f})"
    )

    # ---- figures for the cost model
    client = clusters[1][1]
    overhead = task_overhead(client)
    part = rset.partitions(args.block)[0]
    f = rset.frames[rset.frames["recording"] == part.recording]
    gt = GroundTruthFile(
        str(rset.ground_truth_paths[part.recording]),
        (int(f["frame_width"].iloc[0]), int(f["frame_height"].iloc[0])),
    )
    settings = [
        dict(zip(GRID, (a, b)))
        for a in GRID["pre_cluster_threshold"]
        for b in GRID["iou_threshold"]
    ]
    gt.load()  # read once per worker process: not part of a partition's cost
    t0 = time.process_time()
    out = score_partition(part, pp, settings, gt, [list(range(len(settings)))])
    t_part = time.process_time() - t0
    sent = len(pickle.dumps(out, protocol=5))
    rows = sum(len(r) for r in out[0].sources.values())
    with part.open() as rec:
        layer_bytes = sum(
            np.dtype(i.dtype).itemsize * int(np.prod(i.shape)) for i in rec.layers.values()
        )
    t0 = time.process_time()
    score_partitions([out[0]] * args.recordings)
    t_merge = (time.process_time() - t0) / len(settings)
    clusterings = len(out[0].sources)
    print("\ncost model inputs (CPU seconds in one process; the wall clock follows the load):")
    print(
        f"  search of one partition: {t_part:.2f} s for {len(part.rows)} frames x 100 settings "
        f"= {t_part / len(part.rows) * 1e3:.2f} ms per frame ({len(part.rows) / t_part:.0f} frames/s)"
    )
    print(f"  tensor bytes read per frame: {layer_bytes / 1e3:.1f} kB")
    print(
        f"  sent per partition: {sent / 1e6:.2f} MB ({clusterings} clusterings' accumulate rows, "
        f"{rows} rows, and 100 settings' score cuts)"
    )
    print(
        f"  merge: {t_merge * 1e3:.1f} ms per setting over {args.recordings} partitions of this size"
    )
    print(f"  scheduler overhead: {overhead * 1e3:.2f} ms per task (LocalCluster, trivial tasks)")
    frames_merged = args.recordings * len(part.rows)
    cost_model(
        t_part / len(part.rows),
        t_merge / frames_merged,
        overhead,
        sent / len(part.rows),
        layer_bytes,
        clusterings,
    )
    for lc, c in clusters.values():
        c.close()
        lc.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
