"""SGIE recording and replay at 50 objects x 128-d embeddings per frame, side by side in one run.

Per round (interleaved, ``--reps`` rounds, medians and ranges):

* copy: ``numpy.copyto`` of the same embedding bytes (50 x 128 float32 = 25.6 KB per frame) into a
  preallocated buffer, the floor any recorder or reader pays;
* record: a Recorder (default options, its own writer thread) given ``--frames`` SGIE FrameRecords of
  50 ObjectRecords each (rect + a 128-d ``embedding`` layer), until ``close()`` returns (on disk);
* replay raw: ``dsprobe.analysis.secondary.sgie_outputs`` (object table + one read per layer);
* replay postprocess: ``embedding_postprocess(...).detections_by_row`` over every SGIE frame (the
  path the notebooks and the demo's live == replay use: a Postprocess run per object).

Targets: recording keeps up with one 30 fps stream carrying 50 objects (>= 30 frames/s); replay of a
recording is at least 10x real time (>= 300 frames/s raw and through the postprocess).

Usage: python benchmarks/bench_sgie.py [--frames 300] [--reps 5] [--objects 50] [--dim 128]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsprobe import (  # noqa: E402
    FrameRecord,
    ObjectRecord,
    Recorder,
    embedding_postprocess,
    open_recording,  # noqa: E402
)
from dsprobe.analysis.secondary import sgie_outputs  # noqa: E402
from dsprobe.sample import SECONDARY_CONFIG_PATH  # noqa: E402

TARGET_RECORD_FPS = 30.0
TARGET_REPLAY_FPS = 300.0


def make_frames(n: int, objects: int, dim: int) -> tuple[list[FrameRecord], np.ndarray]:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(n, objects, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=2, keepdims=True)
    frames = []
    for i in range(n):
        objs = [
            ObjectRecord(
                rect=(float(20 * k % 1200), float(10 * k % 600), 48.0, 64.0),
                class_id=k % 4,
                confidence=0.9,
                unique_component_id=1,
                layers={"embedding": emb[i, k]},
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
    return frames, emb


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--objects", type=int, default=50)
    ap.add_argument("--dim", type=int, default=128)
    args = ap.parse_args(argv)
    frames, emb = make_frames(args.frames, args.objects, args.dim)
    flat = emb.reshape(-1, args.dim)
    dst = np.empty_like(flat)
    pp = embedding_postprocess(SECONDARY_CONFIG_PATH, "embedding")
    out: dict[str, list[float]] = {k: [] for k in ("copy", "record", "raw", "postprocess")}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            path = Path(tmp) / f"sgie{rep}.h5"

            def record(path=path):
                rec = Recorder(path, images=False, drop_when_full=False)
                for f in frames:
                    rec.record(f)
                rec.close()

            out["copy"].append(timed(lambda: np.copyto(dst, flat)))
            out["record"].append(timed(record))
            with open_recording(path) as r:
                out["raw"].append(timed(lambda r=r: sgie_outputs(r, 2)))
                got = sgie_outputs(r, 2).layers["embedding"]
                assert np.array_equal(got, flat), "replay lost bytes"
                out["postprocess"].append(timed(lambda r=r: pp.detections_by_row(r)))
    n, mb = args.frames, flat.nbytes / 1e6
    med = {k: statistics.median(v) for k, v in out.items()}
    print(
        f"SGIE {args.objects} objects x {args.dim}-d float32 per frame, {n} frames "
        f"({mb:.1f} MB of embeddings), {args.reps} interleaved rounds; medians [min .. max]"
    )
    print(f"  {'':<22} {'frames/s':>12} {'objects/s':>12} {'x copy time':>12}   target")
    for name, target in (
        ("copy", None),
        ("record", TARGET_RECORD_FPS),
        ("raw", TARGET_REPLAY_FPS),
        ("postprocess", TARGET_REPLAY_FPS),
    ):
        fps = n / med[name]
        lo, hi = n / max(out[name]), n / min(out[name])
        tgt = f"{fps / target:7.1f}x of >= {target:g} frames/s" if target else ""
        print(
            f"  {name:<22} {fps:12.0f} {fps * args.objects:12.0f} {med[name] / med['copy']:12.0f}"
            f"   {tgt}  [{lo:.0f} .. {hi:.0f} frames/s]"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
