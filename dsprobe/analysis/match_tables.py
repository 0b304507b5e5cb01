"""COCO mAP from pieces: per-partition match tables, merged into one ``accumulate()``.

pycocotools scores in two stages. ``evaluate()`` matches each image's detections to its ground truth
on its own (one ``evaluateImg`` table per image and category); ``accumulate()`` then concatenates the
tables of every image, in image-id order, sorts the detections by score and builds precision / recall.
So the first stage can run anywhere: a partition (a block of consecutive frames) evaluates its images
and keeps, per category, the concatenation of its tables (:class:`MatchTables`: scores, matched flags,
ignore flags, ground-truth ignore flags, in image order). Concatenating the partitions' tables in
partition order gives exactly the arrays ``accumulate()`` would have built over all images, so
:func:`score_tables` feeds them to pycocotools' own ``accumulate()`` and the mAP is the single-process
one, bit for bit. Only area range "all" and one max-detections cut (1000 per image, as
:func:`~dsprobe.analysis.evaluate.evaluate` reports) are kept.
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from dsprobe.analysis.cocoeval import coco_ground_truth, coco_results, eval_result
from dsprobe.analysis.evaluate import EvalResult, GroundTruth, frame_image_id
from dsprobe.analysis.objectives import Matches

MAX_DETECTIONS = 1000  # per image, evaluate()'s last maxDets
NO_CUT = 2**62  # accumulate()'s cut on an already-cut partition table: none


@dataclass
class MatchTables:
    """What ``accumulate()`` reads of a block of images, per category (``category_ids`` order):
    ``entries[k]`` is None (no image of the block has a detection or ground truth of that class) or a
    dict with ``dtScores`` (D,), ``dtMatches`` (T, D) bool, ``dtIgnore`` (T, D) bool and ``gtIgnore``
    (G,), concatenated over the block's images in image-id order."""

    category_ids: list[int]
    entries: list[dict[str, np.ndarray] | None]
    num_images: int
    num_detections: int

    def gt_count(self, k: int) -> int:
        e = self.entries[k]
        return 0 if e is None else len(e["gtIgnore"])


def gt_subset(gt: GroundTruth, frames: Sequence[tuple[int, int]]) -> GroundTruth:
    """``gt`` restricted to ``frames`` ((source_id, frame_num)): what one partition needs, small."""
    ids = {frame_image_id(s, f) for s, f in frames}
    anns = [a for a in gt.coco["annotations"] if a["image_id"] in ids]
    coco = {
        "images": [i for i in gt.coco["images"] if i["id"] in ids],
        "annotations": anns,
        "categories": gt.coco["categories"],
    }
    boxes = gt.boxes[gt.boxes["image_id"].isin(ids)] if len(gt.boxes) else gt.boxes
    return GroundTruth(coco, boxes.reset_index(drop=True), list(gt.categories))


def image_evaluation(
    detections: pd.DataFrame, gt: GroundTruth, frames: Sequence[tuple[int, int]]
) -> tuple[Any, int]:
    """A pycocotools ``COCOeval`` after ``evaluate()`` over ``frames`` (area "all", up to 1000
    detections per image) for a detections DataFrame in frame pixels (``coco_results`` order), and the
    number of detections on those frames. Works with no detections too (``loadRes`` refuses none)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ids = sorted({frame_image_id(s, f) for s, f in frames})
    coco_gt = coco_ground_truth(gt, ids)
    res = coco_results(detections, set(ids))
    with contextlib.redirect_stdout(io.StringIO()):
        if res:
            coco_dt = coco_gt.loadRes(res)
        else:
            coco_dt = COCO()
            coco_dt.dataset = {**coco_gt.dataset, "annotations": []}
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.imgIds = ids
        ev.params.areaRng, ev.params.areaRngLbl = ev.params.areaRng[:1], ev.params.areaRngLbl[:1]
        ev.params.maxDets = [MAX_DETECTIONS]
        ev.evaluate()
    return ev, len(res)


def tables_from_images(
    eval_imgs: Sequence[dict | None],
    category_ids: Sequence[int],
    num_images: int,
    num_detections: int,
) -> MatchTables:
    """Concatenate per-image ``evaluateImg`` tables (category-major, then image, as ``evaluate()``
    lists them for one area range) into :class:`MatchTables`."""
    entries: list[dict[str, np.ndarray] | None] = []
    for k in range(len(category_ids)):
        imgs = [e for e in eval_imgs[k * num_images : (k + 1) * num_images] if e is not None]
        if not imgs:
            entries.append(None)
            continue
        entries.append(
            {
                "dtScores": np.concatenate([np.asarray(e["dtScores"], np.float64) for e in imgs]),
                "dtMatches": np.concatenate(
                    [np.asarray(e["dtMatches"]) != 0 for e in imgs], axis=1
                ),
                "dtIgnore": np.concatenate([np.asarray(e["dtIgnore"], bool) for e in imgs], axis=1),
                "gtIgnore": np.concatenate([np.asarray(e["gtIgnore"]) for e in imgs]),
            }
        )
    return MatchTables(list(category_ids), entries, num_images, num_detections)


def match_tables(
    detections: pd.DataFrame, gt: GroundTruth, frames: Sequence[tuple[int, int]]
) -> MatchTables:
    """:class:`MatchTables` of ``detections`` against ``gt`` over ``frames``."""
    ev, n_det = image_evaluation(detections, gt, frames)
    return tables_from_images(ev.evalImgs, ev.params.catIds, len(ev.params.imgIds), n_det)


def score_tables(parts: Sequence[MatchTables], gt: GroundTruth) -> EvalResult:
    """One :class:`~dsprobe.analysis.evaluate.EvalResult` from partitions' tables, in partition order:
    exactly what ``evaluate()`` gives over all their frames at once."""
    num_images = sum(p.num_images for p in parts)
    num_detections = sum(p.num_detections for p in parts)
    cats = sorted(gt.coco["categories"], key=lambda c: c["id"])
    if not parts:
        raise ValueError("score_tables: no partition to score")
    category_ids = parts[0].category_ids
    if any(p.category_ids != category_ids for p in parts):
        raise ValueError("score_tables: partitions were scored against different categories")
    if num_detections == 0:  # as evaluate(): every class with ground truth scores 0
        present = {cid for k, cid in enumerate(category_ids) if any(p.gt_count(k) for p in parts)}
        per = {c["name"]: 0.0 if c["id"] in present else float("nan") for c in cats}
        return EvalResult(0.0, 0.0, per, {}, num_images, 0, dict(per))
    from pycocotools.cocoeval import COCOeval

    ev = COCOeval(iouType="bbox")
    p = ev.params
    p.catIds = list(category_ids)
    p.imgIds = list(range(len(parts)))  # one pseudo-image per partition, in order
    p.areaRng, p.areaRngLbl = p.areaRng[:1], p.areaRngLbl[:1]
    p.maxDets = [NO_CUT]  # each image was already cut at MAX_DETECTIONS
    ev.evalImgs = [part.entries[k] for k in range(len(category_ids)) for part in parts]
    ev._paramsEval = copy.deepcopy(p)  # what evaluate() would have set; accumulate() reads it
    with contextlib.redirect_stdout(io.StringIO()):
        ev.accumulate()
    return eval_result(ev, gt, num_images, num_detections)


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
