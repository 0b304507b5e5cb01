"""COCO mAP from pieces: what each partition of a recording set sends, merged into one ``accumulate``.

COCO scores in two stages. The matching (``evaluate``) matches each image's detections to its ground
truth on its own; ``accumulate`` then sorts every image's detections of a class by score and builds
precision / recall. So the first stage can run anywhere: a partition (a block of consecutive frames)
matches its frames (:class:`~dsprobe.analysis.matching.MatchPlan`, pycocotools' numbers bit for bit)
and sends what ``accumulate`` reads, compact: per detection that counts, its class, score and
true-positive / ignored flags at each IoU threshold, in accumulate's order
(:class:`~dsprobe.analysis.accumulation.AccumulateRows`, 12 bytes a detection). Concatenating the
partitions' rows in partition order and sorting them stably by class and descending score gives
exactly the order ``accumulate`` builds over all frames at once, so the mAP is the single-process
one, bit for bit.

A setting that only cuts its clustering's boxes by score (pre- / post-cluster threshold) sends no
rows of its own: it names the clustering's rows and its thresholds, and the merge accumulates every
such cut from one :class:`~dsprobe.analysis.accumulation.CutAccumulator` of the merged rows (a score cut
drops a low-score suffix of every (frame, class), which leaves every other match as it was).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import pandas as pd

from dsprobe.analysis.accumulation import AccumulateRows, CutAccumulator
from dsprobe.analysis.evaluate import EvalResult, GroundTruth, coco_scores, no_detection_result
from dsprobe.analysis.objectives import Matches

MAX_DETECTIONS = 1000  # per image, evaluate()'s last maxDets


@dataclass
class SettingRows:
    """One setting's share of a partition: the rows it is scored from (``source``, a key of
    :attr:`PartitionScores.sources`), the score cut it applies to them (``(pre, post)`` float32
    thresholds per class id, kept when ``score >= pre`` and ``> post``; None: every row), its
    detections on the partition's frames (any class) and, for the other objectives, its matches."""

    source: str
    cut: tuple[np.ndarray, np.ndarray] | None
    num_detections: int
    matches: Matches | None = None


@dataclass
class PartitionScores:
    """What one partition sends for a chunk of settings: the ground truth's categories
    (``{"id", "name"}``), its frames, the annotations of each category on them (any, crowd
    included: a class with some is scored 0 rather than NaN when nothing is detected), the rows
    its settings are scored from, and each setting's :class:`SettingRows`."""

    recording: str
    categories: list[dict]
    num_images: int
    gt_present: np.ndarray
    sources: dict[str, AccumulateRows]
    settings: dict[int, SettingRows]


def _longest(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Per-class thresholds as partitions give them (each as long as the classes it clustered, the
    same values where they overlap): the longest."""
    return max(arrays, key=len)


def score_partitions(parts: Sequence[PartitionScores]) -> dict[int, EvalResult]:
    """Per setting, the :class:`~dsprobe.analysis.evaluate.EvalResult` of the partitions' rows, in
    partition order: exactly what ``evaluate()`` gives over all their frames at once."""
    if not parts:
        raise ValueError("score_partitions: no partition to score")
    first = parts[0]
    key = sorted((c["id"], c["name"]) for c in first.categories)
    for p in parts[1:]:
        if sorted((c["id"], c["name"]) for c in p.categories) != key:
            raise ValueError(
                f"ground truth of {p.recording!r} names other categories than that of "
                f"{first.recording!r}: {sorted((c['id'], c['name']) for c in p.categories)} vs {key}"
            )
    names = GroundTruth({"categories": first.categories}, pd.DataFrame(), [])
    num_images = sum(p.num_images for p in parts)
    present = np.sum([p.gt_present for p in parts], axis=0)
    ids = np.unique([c["id"] for c in first.categories])
    present_ids = {int(c) for c, n in zip(ids, present) if n}
    merged: dict[str, CutAccumulator] = {}
    out = {}
    for s in first.settings:
        refs = [p.settings[s] for p in parts]
        n_det = sum(r.num_detections for r in refs)
        if n_det == 0:
            out[s] = no_detection_result(first.categories, present_ids, num_images)
            continue
        source = refs[0].source
        if all(r.cut is not None and r.source == source for r in refs):
            if source not in merged:
                merged[source] = AccumulateRows.concat(
                    [p.sources[source] for p in parts]
                ).accumulator()
            pre = _longest([r.cut[0] for r in refs])  # type: ignore[index]
            post = _longest([r.cut[1] for r in refs])  # type: ignore[index]
            acc = replace(merged[source].accumulate_scores(pre, post), num_detections=n_det)
        else:  # some partition scored this setting from rows of its own
            rows = [
                p.sources[r.source] if r.cut is None else p.sources[r.source].cut(*r.cut)
                for p, r in zip(parts, refs)
            ]
            acc = AccumulateRows.concat(rows).accumulator().accumulate_all(n_det)
        out[s] = coco_scores(acc, names)
    return out


def merge_matches(parts: Sequence[tuple[int, Matches]]) -> Matches:
    """One :class:`~dsprobe.analysis.objectives.Matches` (the objectives' match table) from
    partitions' tables, each with its recording index, in (recording, frame row) order: the table
    one process would build recording by recording. Ground-truth counts and frames add up."""
    if not parts:
        raise ValueError("merge_matches: no partition to merge")
    tabs = [m for _, m in parts]
    rec = np.concatenate([np.full(len(m), k, np.int64) for k, m in parts])
    rows = np.concatenate([np.full(len(m), -1) if m.rows is None else m.rows for m in tabs])
    order = np.lexsort((rows, rec))  # stable: a frame's detections keep their order
    num_gt: dict[int, int] = {}
    for m in tabs:
        for c, n in m.num_gt.items():
            num_gt[int(c)] = num_gt.get(int(c), 0) + int(n)
    ignored = None
    if any(m.ignored is not None for m in tabs):
        ignored = np.concatenate(
            [np.zeros(m.tp.shape, bool) if m.ignored is None else m.ignored for m in tabs]
        )[order]
    return Matches(
        np.concatenate([m.scores for m in tabs])[order],
        np.concatenate([m.class_ids for m in tabs])[order],
        np.concatenate([m.tp for m in tabs])[order],
        num_gt,
        sum(m.num_frames for m in tabs),
        tabs[0].iou_thresholds,
        rows[order],
        ignored,
    )
