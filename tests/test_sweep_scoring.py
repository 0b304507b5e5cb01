"""Threshold sweeps scored from prefix sums equal the objectives' own mAP of each cut; the GPU match
table equals ``match_table_of`` (that half needs CuPy and a GPU, skipped without)."""

from __future__ import annotations

import numpy as np
import pytest

from dsprobe.analysis.objectives import COCO_IOUS, Matches, match_table_of, mean_ap
from dsprobe.analysis.sweep_scoring import (
    GpuGroundTruth,
    ThresholdSweep,
    match_table_gpu,
    sweep_order_gpu,
)
from dsprobe.detections import Detections
from dsprobe.postprocess.gpu import gpu_available


def random_matches(rng: np.random.Generator, n: int = 400) -> Matches:
    scores = np.round(rng.random(n) * 20) / 20  # ties
    classes = rng.integers(0, 5, n)
    tp = rng.random((n, len(COCO_IOUS))) < np.linspace(0.7, 0.1, len(COCO_IOUS))
    num_gt = {0: 30, 1: 0, 2: 50, 3: 7, 6: 4}  # class 4: detections, no ground truth
    return Matches(scores, classes, tp, num_gt, 60, COCO_IOUS.copy())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_sweep_equals_mean_ap_of_each_cut(seed):
    t = random_matches(np.random.default_rng(seed))
    sweep = ThresholdSweep(t)
    for thr in (0.0, 0.05, 0.25, 0.5, 0.51, 0.95, 1.0, 1.5):
        assert sweep.map50(thr) == mean_ap(t.cut(thr), [0])
        assert sweep.mean_ap(thr) == mean_ap(t.cut(thr))


def random_frames(rng, n_frames):
    dets, gts = [], []
    for _ in range(n_frames):
        g = rng.integers(0, 6)
        c = rng.uniform(0, 600, (g, 2))
        wh = rng.choice([0.0, 10.0, 30.0, 60.0], (g, 2))
        gb = np.concatenate([c, c + wh], 1).astype(np.float32)
        gc = rng.integers(0, 3, g)
        k = rng.integers(0, 10)
        pick = rng.integers(0, max(g, 1), k)
        base = gb[pick] if g else rng.uniform(0, 600, (k, 4)).astype(np.float32)
        db = (base + rng.choice([0.0, 1.0, 5.0, 20.0], (k, 4))).astype(np.float32)
        dc = gc[pick] if g else rng.integers(0, 3, k)
        s = np.round(rng.random(k) * 8) / 8
        order = np.lexsort((-s, dc))  # as a Postprocess emits: class, then descending score
        dets.append(Detections(db[order], s[order], dc[order], "frame"))
        gts.append(Detections(gb, np.ones(g), gc, "frame"))
    return dets, gts


@pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA GPU; run on a GPU machine")
def test_gpu_match_table_equals_match_table_of():
    rng = np.random.default_rng(4)
    dets, gts = random_frames(rng, 300)
    rows = list(range(100, 400))
    want = match_table_of(list(zip(dets, gts)), len(rows), rows=rows)
    flat = lambda xs, a: np.concatenate([getattr(x, a) for x in xs])  # noqa: E731
    d_rows = np.repeat(rows, [len(d) for d in dets])
    g_rows = np.repeat(rows, [len(g) for g in gts])
    got = match_table_gpu(
        d_rows,
        flat(dets, "boxes"),
        flat(dets, "scores"),
        flat(dets, "class_ids"),
        g_rows,
        flat(gts, "boxes"),
        flat(gts, "class_ids"),
        len(rows),
    )
    assert np.array_equal(got.tp, want.tp) and np.array_equal(got.scores, want.scores)
    assert np.array_equal(got.class_ids, want.class_ids) and got.num_gt == want.num_gt
    assert mean_ap(got) == mean_ap(want) and got.tp.any()
    sweep = ThresholdSweep(got, order=sweep_order_gpu(got))
    assert np.array_equal(sweep_order_gpu(got), np.lexsort((-got.scores, got.class_ids)))
    for thr in (0.0, 0.25, 0.5, 0.875):
        assert sweep.mean_ap(thr) == mean_ap(want.cut(thr))
    gt = GpuGroundTruth(g_rows, flat(gts, "boxes"), flat(gts, "class_ids"))
    half = d_rows < 250  # a second detection set against the same ground truth
    again = gt.match(
        d_rows[half],
        flat(dets, "boxes")[half],
        flat(dets, "scores")[half],
        flat(dets, "class_ids")[half],
        len(rows),
    )
    assert np.array_equal(again.tp, got.tp[half])
