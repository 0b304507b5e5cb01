"""Scoring detections: COCO ground truth and mAP (pycocotools), and box matching between two sets.

Ground truth is COCO JSON whose images carry ``source_id`` and ``frame_num`` (as the sample
generator writes) or ids ``source_id * 1_000_000 + frame_num``; GT boxes are in source-video pixels
and are scaled to frame (nvstreammux) pixels, where dsprobe's detections live.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from dsprobe.detections import Detections


def frame_image_id(source_id: int, frame_num: int) -> int:
    return int(source_id) * 1_000_000 + int(frame_num)


@dataclass
class GroundTruth:
    """COCO ground truth scaled to frame pixels. ``boxes`` DataFrame: image_id, source_id, frame_num,
    x1, y1, x2, y2 (frame px), class_id; ``coco``: the COCO dict with boxes in frame pixels."""

    coco: dict
    boxes: pd.DataFrame
    categories: list[str]

    def for_frame(self, source_id: int, frame_num: int) -> Detections:
        m = (self.boxes["source_id"] == source_id) & (self.boxes["frame_num"] == frame_num)
        b = self.boxes[m]
        return Detections(b[["x1", "y1", "x2", "y2"]].to_numpy(), np.ones(len(b)), b["class_id"].to_numpy(), "frame")


def load_ground_truth(path: str | Path, frame_size: tuple[int, int] | None = None) -> GroundTruth:
    """Load COCO JSON; with ``frame_size`` (muxer width, height) boxes are scaled from each image's
    width/height to it (nvstreammux scaling without aspect ratio)."""
    p = Path(path)
    try:
        coco = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{p}: cannot read COCO ground truth: {exc}") from None
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise ValueError(f"{p}: not COCO ground truth (no {key!r} list)")
    imgs = {}
    for im in coco["images"]:
        src = im.get("source_id", im["id"] // 1_000_000)
        fn = im.get("frame_num", im["id"] % 1_000_000)
        sx = frame_size[0] / im["width"] if frame_size else 1.0
        sy = frame_size[1] / im["height"] if frame_size else 1.0
        imgs[im["id"]] = (src, fn, sx, sy)
    rows = []
    anns = []
    for a in coco["annotations"]:
        src, fn, sx, sy = imgs[a["image_id"]]
        x, y, w, h = a["bbox"]
        rows.append((frame_image_id(src, fn), src, fn, x * sx, y * sy, (x + w) * sx, (y + h) * sy, a["category_id"]))
        anns.append({**a, "image_id": frame_image_id(src, fn), "bbox": [x * sx, y * sy, w * sx, h * sy],
                     "area": w * sx * h * sy})
    scaled = {"images": [{"id": frame_image_id(s, f), "width": frame_size[0] if frame_size else 0,
                          "height": frame_size[1] if frame_size else 0} for s, f, _, _ in imgs.values()],
              "annotations": anns, "categories": coco["categories"]}
    df = pd.DataFrame(rows, columns=["image_id", "source_id", "frame_num", "x1", "y1", "x2", "y2", "class_id"])
    cats = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    return GroundTruth(scaled, df, cats)


@dataclass
class EvalResult:
    """mAP@0.5, mAP@0.5:0.95, per-class AP@0.5, and precision/recall curves per class (IoU 0.5)."""

    map50: float
    map50_95: float
    per_class_ap50: dict[str, float]
    pr_curves: dict[str, tuple[np.ndarray, np.ndarray]]
    num_images: int
    num_detections: int

    def summary(self) -> str:
        per = ", ".join(f"{k} {v:.3f}" for k, v in self.per_class_ap50.items())
        return (f"mAP@0.5 {self.map50:.3f}  mAP@0.5:0.95 {self.map50_95:.3f}  "
                f"({self.num_images} frames, {self.num_detections} detections; AP@0.5 per class: {per})")


def evaluate(detections: pd.DataFrame, gt: GroundTruth, frames: Sequence[tuple[int, int]] | None = None) -> EvalResult:
    """COCO mAP of a detections DataFrame (``source_id, frame_num, x1..y2, score, class_id`` in frame
    pixels, as ``Postprocess.run_recording`` returns) against ``gt``, over ``frames`` ((source_id,
    frame_num) pairs; default: the frames present in ``detections`` plus those with no detection are
    not known, so pass the recorded frames to count misses on empty frames)."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:  # pragma: no cover
        raise ImportError("mAP uses pycocotools: pip install 'dsprobe[notebook]'") from exc
    if frames is None:
        frames = sorted({(int(s), int(f)) for s, f in zip(detections["source_id"], detections["frame_num"])})
    ids = sorted({frame_image_id(s, f) for s, f in frames})
    idset = set(ids)
    coco_gt = COCO()
    coco_gt.dataset = {"images": [{"id": i} for i in ids],
                       "annotations": [a for a in gt.coco["annotations"] if a["image_id"] in idset],
                       "categories": gt.coco["categories"]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
    d = detections
    img = [frame_image_id(s, f) for s, f in zip(d["source_id"], d["frame_num"])]
    res = [{"image_id": i, "category_id": int(c), "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
            "score": float(s)} for i, x1, y1, x2, y2, s, c in
           zip(img, d["x1"], d["y1"], d["x2"], d["y2"], d["score"], d["class_id"]) if i in idset]
    cat_ids = [c["id"] for c in sorted(gt.coco["categories"], key=lambda c: c["id"])]
    names = {c["id"]: c["name"] for c in gt.coco["categories"]}
    if not res:
        return EvalResult(0.0, 0.0, {names[c]: 0.0 for c in cat_ids}, {}, len(ids), 0)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = coco_gt.loadRes(res)
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.imgIds = ids
        ev.params.maxDets = [1, 10, 1000]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"]  # [T, R, K, A, M]
    rec_thr = ev.params.recThrs
    per_class, curves = {}, {}
    for k, cid in enumerate(ev.params.catIds):
        p = prec[0, :, k, 0, -1]
        valid = p > -1
        per_class[names[cid]] = float(p[valid].mean()) if valid.any() else 0.0
        curves[names[cid]] = (rec_thr[valid], p[valid])
    p50 = prec[0, :, :, 0, -1]
    pall = prec[:, :, :, 0, -1]
    return EvalResult(float(p50[p50 > -1].mean()) if (p50 > -1).any() else 0.0,
                      float(pall[pall > -1].mean()) if (pall > -1).any() else 0.0,
                      per_class, curves, len(ids), len(res))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU matrix of x1y1x2y2 boxes (float64)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(1)
    union = area_a[:, None] + area_b[None] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


@dataclass
class Match:
    """Greedy one-to-one matching of ``a`` (e.g. detections) to ``b`` (e.g. reference/GT)."""

    pairs: np.ndarray      # (K, 2) indices into a, b
    ious: np.ndarray       # (K,)
    unmatched_a: np.ndarray
    unmatched_b: np.ndarray


def match(a: Detections, b: Detections, iou_threshold: float = 0.5, same_class: bool = True) -> Match:
    """Greedy matching by descending IoU (then ``a``'s score): each box used once, IoU >= threshold."""
    iou = box_iou(a.boxes, b.boxes)
    if same_class and iou.size:
        iou = np.where(a.class_ids[:, None] == b.class_ids[None], iou, 0.0)
    pairs, ious = [], []
    used_a, used_b = set(), set()
    if iou.size:
        cand = np.argwhere(iou >= iou_threshold)
        order = np.lexsort((-a.scores[cand[:, 0]], -iou[cand[:, 0], cand[:, 1]]))
        for i, j in cand[order]:
            if i in used_a or j in used_b:
                continue
            used_a.add(int(i))
            used_b.add(int(j))
            pairs.append((int(i), int(j)))
            ious.append(float(iou[i, j]))
    return Match(np.array(pairs, np.int64).reshape(-1, 2), np.array(ious),
                 np.array(sorted(set(range(len(a))) - used_a), np.int64),
                 np.array(sorted(set(range(len(b))) - used_b), np.int64))
