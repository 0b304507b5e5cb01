"""TIDE error typing, the confusion matrix and errors grouped into runs of frames, by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dsprobe.analysis.errors import (
    ERROR_TYPES,
    confusion_matrix,
    error_breakdown,
    error_runs,
    error_table,
    frame_matches,
    type_frame,
)
from dsprobe.analysis.evaluate import ground_truth_from_detections
from dsprobe.detections import Detections


def D(rows):
    """Detections from (x1, y1, x2, y2, score, class) rows."""
    a = np.array(rows, float).reshape(-1, 6)
    return Detections(a[:, :4], a[:, 4], a[:, 5].astype(int), "frame")


def df(rows):
    return pd.DataFrame(
        rows, columns=["source_id", "frame_num", "x1", "y1", "x2", "y2", "score", "class_id"]
    )


def gt_of(rows, labels=("a", "b")):
    """Ground truth from (source, frame, x1, y1, x2, y2, class) rows."""
    d = df([(s, f, x1, y1, x2, y2, 1.0, c) for s, f, x1, y1, x2, y2, c in rows])
    frames = sorted({(s, f) for s, f, *_ in rows})
    return ground_truth_from_detections(d, list(labels), frames)


def test_every_tide_type_by_hand():
    gt = D([(0, 0, 100, 100, 1, 0), (200, 0, 300, 100, 1, 1), (400, 0, 500, 100, 1, 0)])
    dets = D(
        [
            (0, 0, 100, 100, 0.9, 0),  # tp on gt 0
            (0, 0, 100, 98, 0.8, 0),  # duplicate of gt 0
            (200, 0, 300, 100, 0.7, 0),  # right box, wrong class: classification
            (400, 0, 470, 60, 0.6, 0),  # right class, IoU 0.42: localisation
            (600, 600, 700, 700, 0.5, 1),  # nothing there: background
            (200, 0, 270, 60, 0.4, 0),  # wrong class, poor box (IoU 0.42 with gt 1): both
        ]
    )
    types, nearest, gt_types = type_frame(dets, gt)
    assert types.tolist() == [
        "tp", "duplicate", "classification", "localisation", "background", "both"
    ]  # fmt: skip
    assert nearest.tolist()[:4] == [0, 0, 1, 2] and nearest[5] == 1
    # gt 1 has a classification error on it and gt 2 a localisation error: TIDE charges those, so
    # neither is "missed" (both are still false negatives: "covered")
    assert gt_types.tolist() == ["tp", "covered", "covered"]
    assert type_frame(D([]), gt)[2].tolist() == ["missed"] * 3


def test_frame_matches_is_coco_greedy_by_score():
    gt = D([(0, 0, 10, 10, 1, 0), (1, 0, 11, 10, 1, 0)])
    dets = D([(1, 0, 11, 10, 0.5, 0), (0, 0, 10, 10, 0.9, 0)])
    m = frame_matches(dets, gt, (0.5, 0.95))
    assert m[:, 0].tolist() == [1, 0]  # the higher score chooses first (its best: gt 0)
    assert m[:, 1].tolist() == [1, 0]


def test_error_table_types_and_nearby_ground_truth():
    gt = gt_of([(0, 0, 0, 0, 10, 10, 0), (0, 0, 50, 50, 60, 60, 1)])
    d = df(
        [
            (0, 0, 0, 0, 10, 10, 0.9, 0),
            (0, 0, 52, 52, 62, 62, 0.8, 0),
            (0, 0, 80, 80, 90, 90, 0.1, 1),
        ]
    )
    e = error_table(d, gt, min_score=0.5)
    # the class-a box on the class-b object (IoU 64/136): wrong class and poor box ("both"); only a
    # classification or localisation error covers an object, so the object is also missed (TIDE)
    assert e["kind"].tolist() == ["false_positive", "missed"]
    assert e["type"].tolist() == ["both", "missed"]
    fp = e.iloc[0]
    assert fp["best_iou"] == pytest.approx(64 / 136) and fp["gt_class_id"] == 1
    assert (fp["gt_x1"], fp["gt_y2"]) == (50, 60)
    e2 = error_table(d[d["score"] < 0.85], gt)  # without the true positive: gt 0 is missed
    miss = e2[e2["kind"] == "missed"].iloc[0]
    assert miss["class_id"] == 0 and math.isnan(miss["score"]) and miss["x2"] == 10
    br = error_breakdown(e2)
    assert list(br.index) == list(ERROR_TYPES) and br["missed"] == 2 and br.sum() == len(e2)


def test_confusion_matrix_counts_pairs_background_and_misses():
    gt = gt_of([(0, 0, 0, 0, 10, 10, 0), (0, 0, 50, 50, 60, 60, 1), (0, 0, 100, 100, 110, 110, 1)])
    d = df(
        [
            (0, 0, 0, 0, 10, 10, 0.9, 0),  # a as a
            (0, 0, 50, 50, 60, 60, 0.8, 0),  # b detected as a
            (0, 0, 300, 300, 310, 310, 0.7, 1),  # background as b
        ]
    )
    cm = confusion_matrix(d, gt, ["a", "b"])
    assert cm.loc["a", "a"] == 1 and cm.loc["b", "a"] == 1 and cm.loc["background", "b"] == 1
    assert cm.loc["b", "missed"] == 1 and int(cm.to_numpy().sum()) == 4


def test_errors_over_consecutive_frames_become_one_run():
    rows = [(0, f, 10 + f, 10, 50 + f, 50, 0) for f in range(5)]  # one object moving right
    rows += [(0, f, 300, 300, 340, 340, 1) for f in (1, 2, 9)]  # another; a gap after frame 2
    gt = gt_of(rows)
    e = error_table(df([]), gt, [(0, f) for f in range(10)])
    assert len(e) == 8 and set(e["type"]) == {"missed"}
    runs = error_runs(e)
    assert sorted(runs["frames"].tolist()) == [1, 2, 5]
    longest = runs.iloc[0]
    assert (longest["first_frame"], longest["last_frame"], longest["frame_num"]) == (0, 4, 2)
