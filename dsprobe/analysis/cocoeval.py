"""pycocotools as a reference: the same mAP as :func:`dsprobe.analysis.evaluate.evaluate`, computed
by ``COCOeval`` itself (tests and ``benchmarks/bench_search.py`` compare the two bit for bit).

dsprobe scores with its own numpy matcher (:mod:`dsprobe.analysis.matching`); this module is only
for checking it, and needs pycocotools (``pip install 'dsprobe[notebook]'``).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, Sequence

import numpy as np
import pandas as pd

from dsprobe.analysis.accumulation import Accumulated
from dsprobe.analysis.evaluate import (
    EvalResult,
    GroundTruth,
    coco_scores,
    empty_result,
    frame_image_id,
)


def coco_ground_truth(gt: GroundTruth, image_ids: Sequence[int]) -> Any:
    """A pycocotools ``COCO`` holding ``gt``'s annotations of ``image_ids`` (frame pixels)."""
    from pycocotools.coco import COCO

    idset = set(image_ids)
    coco_gt = COCO()
    coco_gt.dataset = {
        "images": [{"id": i} for i in sorted(idset)],
        "annotations": [a for a in gt.coco["annotations"] if a["image_id"] in idset],
        "categories": gt.coco["categories"],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
    return coco_gt


def coco_results(detections: pd.DataFrame, image_ids: set[int] | None = None) -> list[dict]:
    """COCO result dicts (bbox x, y, w, h in frame pixels) of a detections DataFrame, in its row order,
    keeping frames in ``image_ids`` (``frame_image_id`` numbers; default all)."""
    d = detections
    img = [frame_image_id(s, f) for s, f in zip(d["source_id"], d["frame_num"])]
    return [
        {
            "image_id": i,
            "category_id": int(c),
            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
            "score": float(s),
        }
        for i, x1, y1, x2, y2, s, c in zip(
            img, d["x1"], d["y1"], d["x2"], d["y2"], d["score"], d["class_id"]
        )
        if image_ids is None or i in image_ids
    ]


def eval_result(ev: Any, gt: GroundTruth, num_images: int, num_detections: int) -> EvalResult:
    """EvalResult from an accumulated pycocotools ``COCOeval`` (area range 0 = all, the last maxDets)."""
    acc = Accumulated(
        ev.eval["precision"][:, :, :, 0, -1],
        ev.eval["recall"][:, :, 0, -1],
        np.asarray(ev.params.catIds, np.int64),
        np.asarray(ev.params.iouThrs),
        num_images,
        num_detections,
    )
    return coco_scores(acc, gt)


def pycocotools_evaluate(
    detections: pd.DataFrame,
    gt: GroundTruth,
    frames: Sequence[tuple[int, int]] | None = None,
    max_det: int = 1000,
) -> EvalResult:
    """``evaluate`` done by pycocotools' ``COCOeval`` (bbox; area range all, ``max_det`` per frame)."""
    from pycocotools.cocoeval import COCOeval

    if frames is None:
        frames = sorted(
            {(int(s), int(f)) for s, f in zip(detections["source_id"], detections["frame_num"])}
        )
    ids = sorted({frame_image_id(s, f) for s, f in frames})
    coco_gt = coco_ground_truth(gt, ids)
    res = coco_results(detections, set(ids))
    if not res:  # loadRes refuses an empty list
        return empty_result(gt, ids)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco_gt, coco_gt.loadRes(res), "bbox")
        ev.params.imgIds = ids
        ev.params.maxDets = [1, 10, max_det]
        ev.evaluate()
        ev.accumulate()
    return eval_result(ev, gt, len(ids), len(res))
