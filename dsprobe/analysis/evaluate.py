"""Scoring detections: COCO ground truth and mAP (pycocotools), and box matching between two sets.

Ground truth is COCO JSON whose images carry ``source_id`` and ``frame_num`` (as the sample
generator writes) or ids ``source_id * 1_000_000 + frame_num``; GT boxes are in source-video pixels
and are scaled to frame (nvstreammux) pixels, where dsprobe's detections live.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from dsprobe.analysis.accumulation import RECALL_THRESHOLDS, Accumulated, accumulate
from dsprobe.analysis.matching import GroundTruthArrays, match_table
from dsprobe.detections import Detections
from dsprobe.nvinfer.geometry import muxer_content_size


def frame_image_id(source_id: int, frame_num: int) -> int:
    return int(source_id) * 1_000_000 + int(frame_num)


@dataclass
class GroundTruth:
    """COCO ground truth scaled to frame pixels. ``boxes`` DataFrame: image_id, source_id, frame_num,
    x1, y1, x2, y2 (frame px), class_id; ``coco``: the COCO dict with boxes in frame pixels."""

    coco: dict
    boxes: pd.DataFrame
    categories: list[str]
    #: the (width, height) the boxes were scaled to (``load_ground_truth(frame_size=)``); None: left
    #: in the source video's pixels
    frame_size: tuple[int, int] | None = None
    #: each image's own (width, height) from the COCO file, by (source_id, frame_num), where given
    image_sizes: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    _arrays: Any = field(default=None, init=False, repr=False, compare=False)

    def arrays(self) -> GroundTruthArrays:
        """The COCO annotations as flat arrays (built once; what :func:`evaluate` matches against)."""
        if self._arrays is None:
            self._arrays = GroundTruthArrays.from_coco(self.coco)
        return self._arrays

    def for_frame(self, source_id: int, frame_num: int) -> Detections:
        m = (self.boxes["source_id"] == source_id) & (self.boxes["frame_num"] == frame_num)
        b = self.boxes[m]
        return Detections(
            b[["x1", "y1", "x2", "y2"]].to_numpy(),
            np.ones(len(b)),
            b["class_id"].to_numpy(),
            "frame",
        )


def source_to_frame_scale(
    source_size: tuple[float, float], frame_size: tuple[int, int], keep_aspect: bool = False
) -> tuple[float, float]:
    """(sx, sy) mapping source-video pixels to frame (nvstreammux) pixels: stretched by default, or
    one truncated scale with ``keep_aspect`` (``enable-padding=1``, picture at the top-left)."""
    sw, sh = source_size
    if not keep_aspect:
        return frame_size[0] / sw, frame_size[1] / sh
    dw, dh = muxer_content_size((int(sw), int(sh)), frame_size)
    return dw / sw, dh / sh


def load_ground_truth(
    path: str | Path, frame_size: tuple[int, int] | None = None, muxer_keep_aspect: bool = False
) -> GroundTruth:
    """Load COCO JSON; with ``frame_size`` (muxer width, height) boxes are scaled from each image's
    width/height to it (nvstreammux scaling: stretched, or letterboxed at the top-left with
    ``muxer_keep_aspect``). Images need ``width``/``height`` for that; ``source_id``/``frame_num``
    or ids ``source_id * 1_000_000 + frame_num`` say which frame they are."""
    p = Path(path)
    try:
        coco = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{p}: cannot read COCO ground truth: {exc}") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise ValueError(f"{p}: not COCO ground truth (no {key!r} list)")
    imgs = {}
    sizes: dict[tuple[int, int], tuple[int, int]] = {}
    for im in coco["images"]:
        src = im.get("source_id", im["id"] // 1_000_000)
        fn = im.get("frame_num", im["id"] % 1_000_000)
        if im.get("width") and im.get("height"):
            sizes[(int(src), int(fn))] = (int(im["width"]), int(im["height"]))
        if frame_size:
            if not im.get("width") or not im.get("height"):
                raise ValueError(
                    f"{p}: image {im['id']} has no width/height; they are needed to scale its boxes "
                    f"to the {frame_size[0]}x{frame_size[1]} frame"
                )
            sx, sy = source_to_frame_scale(
                (im["width"], im["height"]), frame_size, muxer_keep_aspect
            )
        else:
            sx = sy = 1.0
        imgs[im["id"]] = (src, fn, sx, sy)
    rows = []
    anns = []
    for a in coco["annotations"]:
        if a["image_id"] not in imgs:
            raise ValueError(
                f"{p}: annotation {a.get('id')} refers to image {a['image_id']}, which is not listed"
            )
        src, fn, sx, sy = imgs[a["image_id"]]
        x, y, w, h = a["bbox"]
        rows.append(
            (
                frame_image_id(src, fn),
                src,
                fn,
                x * sx,
                y * sy,
                (x + w) * sx,
                (y + h) * sy,
                a["category_id"],
            )
        )
        anns.append(
            {
                **a,
                "image_id": frame_image_id(src, fn),
                "bbox": [x * sx, y * sy, w * sx, h * sy],
                "area": w * sx * h * sy,
                "iscrowd": a.get("iscrowd", 0),
            }
        )
    scaled = {
        "images": [
            {
                "id": frame_image_id(s, f),
                "width": frame_size[0] if frame_size else 0,
                "height": frame_size[1] if frame_size else 0,
            }
            for s, f, _, _ in imgs.values()
        ],
        "annotations": anns,
        "categories": coco["categories"],
    }
    df = pd.DataFrame(
        rows, columns=["image_id", "source_id", "frame_num", "x1", "y1", "x2", "y2", "class_id"]
    )
    cats = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    size = (int(frame_size[0]), int(frame_size[1])) if frame_size else None
    return GroundTruth(scaled, df, cats, size, sizes)


@dataclass
class EvalResult:
    """COCO-style scores (pycocotools, area range all, up to 1000 detections per frame): mAP@0.5,
    mAP@0.5:0.95, per-class AP@0.5 and AP@0.5:0.95, and precision/recall curves per class (IoU 0.5).

    A class with no ground truth in the evaluated frames is not scored: its AP is NaN and it is left
    out of the means (as pycocotools does); a class with ground truth and no detection scores 0.
    """

    map50: float
    map50_95: float
    per_class_ap50: dict[str, float]
    pr_curves: dict[str, tuple[np.ndarray, np.ndarray]]
    num_images: int
    num_detections: int
    per_class_ap50_95: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        per = ", ".join(
            f"{k} {v:.3f}" if v == v else f"{k} n/a" for k, v in self.per_class_ap50.items()
        )
        return (
            f"mAP@0.5 {self.map50:.3f}  mAP@0.5:0.95 {self.map50_95:.3f}  "
            f"({self.num_images} frames, {self.num_detections} detections; AP@0.5 per class: {per})"
        )


def evaluate(
    detections: pd.DataFrame,
    gt: GroundTruth | str | Path,
    frames: Any = None,
) -> EvalResult:
    """COCO mAP of a detections DataFrame (``source_id, frame_num, x1..y2, score, class_id`` in frame
    pixels, as ``Postprocess.run_recording`` returns) against ``gt``, over ``frames``.

    ``frames``: the Recording the detections came from (its frames are scored, and its frame size is
    checked against the ground truth's), or (source_id, frame_num) pairs. Ground truth on a scored
    frame without detections counts as missed. Left out, only the frames that have a detection can be
    known: a warning says so when the ground truth has boxes on other frames.

    ``gt``: a :class:`GroundTruth`, or the path of a COCO JSON file (loaded with ``frame_size`` =
    the Recording's frame size when ``frames`` is one, stretched as nvstreammux does by default).

    The numbers are pycocotools' ``COCOeval`` (bbox, area all, 1000 detections per frame) to the last
    bit, computed by :mod:`dsprobe.analysis.matching` (tested against pycocotools)."""
    recorded = getattr(frames, "frames", None)
    if isinstance(recorded, pd.DataFrame):  # a Recording
        if isinstance(gt, (str, Path)):
            gt = load_ground_truth(gt, frame_size=recorded_frame_size(recorded, frames))
        check_recording_ground_truth(gt, frames)
        pairs = recorded[["source_id", "frame_num"]].to_numpy()
        frames = sorted({(int(s), int(f)) for s, f in pairs})
    elif isinstance(gt, (str, Path)):
        gt = load_ground_truth(gt)
    if frames is None:
        frames = sorted(
            {(int(s), int(f)) for s, f in zip(detections["source_id"], detections["frame_num"])}
        )
        warn_unscored_ground_truth(gt, frames)
    ids = sorted({frame_image_id(s, f) for s, f in frames})
    table = match_table(detections, gt, ids)
    if table.num_detections == 0:
        return empty_result(gt, ids)
    return coco_scores(accumulate(table), gt)


def recorded_frame_size(frames: pd.DataFrame, rec: Any) -> tuple[int, int] | None:
    """The one (width, height) of a recording's frames (nvstreammux output); None when they differ."""
    sizes = set(zip(frames["frame_width"].tolist(), frames["frame_height"].tolist()))
    if len(sizes) == 1:
        w, h = sizes.pop()
        return int(w), int(h)
    return None


def check_frame_size(gt: GroundTruth, size: tuple[int, int] | None, rec: Any) -> None:
    """A ValueError when ``gt``'s boxes are not in ``rec``'s frame pixels: left in source-video
    pixels of another size (``load_ground_truth`` without ``frame_size``), or scaled to another size."""
    if size is None:
        return
    where = getattr(rec, "paths", [rec])[0]
    fix = f"load_ground_truth(path, frame_size={size})"
    if gt.frame_size is not None:
        if tuple(gt.frame_size) != size:
            raise ValueError(
                f"ground truth scaled to {gt.frame_size[0]}x{gt.frame_size[1]}, but {where} has "
                f"{size[0]}x{size[1]} frames: load it with {fix}"
            )
        return
    other = sorted({s for s in gt.image_sizes.values() if s != size})
    if other:
        w, h = other[0]
        raise ValueError(
            f"ground truth boxes are in {w}x{h} source-video pixels, but {where} has "
            f"{size[0]}x{size[1]} frames (nvstreammux output), where detections live: load it with "
            f"{fix} (add muxer_keep_aspect=True for enable-padding=1), or pass the path to evaluate()"
        )


def check_recording_ground_truth(gt: GroundTruth, rec: Any) -> None:
    """:func:`check_frame_size` for a Recording's frames (nothing to check for objects without a
    frames table with frame sizes, or frames of several sizes)."""
    f = getattr(rec, "frames", None)
    if isinstance(f, pd.DataFrame) and {"frame_width", "frame_height"} <= set(f.columns):
        check_frame_size(gt, recorded_frame_size(f, rec), rec)


def warn_unscored_ground_truth(gt: GroundTruth, frames: Sequence[tuple[int, int]]) -> None:
    """Warn when ``gt`` has boxes on frames outside ``frames`` (evaluate's default frame set)."""
    import warnings

    b = gt.boxes
    if not len(b) or "source_id" not in b:
        return
    have = {frame_image_id(s, f) for s, f in frames}
    ids = np.unique(
        b["source_id"].to_numpy(np.int64) * 1_000_000 + b["frame_num"].to_numpy(np.int64)
    )
    missing = int((~np.isin(ids, np.fromiter(have, np.int64, len(have)))).sum())
    if missing:
        warnings.warn(
            f"evaluate: frames= not given, so only the {len(have)} frames with a detection are "
            f"scored; the ground truth has boxes on {missing} other frames, not counted as misses: "
            "pass frames=rec (the Recording) or its (source_id, frame_num) pairs",
            stacklevel=3,
        )


def empty_result(gt: GroundTruth, image_ids: Sequence[int]) -> EvalResult:
    """Nothing detected on ``image_ids``: every class with ground truth there scores 0, others NaN."""
    g = gt.arrays()
    present = set(g.category_id[np.isin(g.image_id, np.asarray(image_ids, np.int64))].tolist())
    return no_detection_result(gt.coco["categories"], present, len(image_ids))


def no_detection_result(
    categories: Sequence[dict], present: set[int], num_images: int
) -> EvalResult:
    """Nothing detected on ``num_images`` frames: each COCO category (``{"id", "name"}``) whose id
    is in ``present`` (it has ground truth there) scores 0, the others NaN."""
    cats = sorted(categories, key=lambda c: c["id"])
    per = {c["name"]: 0.0 if c["id"] in present else float("nan") for c in cats}
    return EvalResult(0.0, 0.0, per, {}, num_images, 0, dict(per))


def coco_scores(acc: Accumulated, gt: GroundTruth) -> EvalResult:
    """EvalResult from COCO precision (``acc.precision`` ``(T, R, K)``, -1 where a class is absent)."""
    names = {c["id"]: c["name"] for c in gt.coco["categories"]}
    prec = acc.precision
    T, R, K = prec.shape
    # each class's mean over all its values at once where none is -1 (the usual case): numpy sums
    # a contiguous row as it sums the same values as a 1-D array (pairwise), so the bits agree
    valid0, valid_all = prec[0] > -1, (prec > -1).reshape(T * R, K)
    full0, full_all = valid0.all(axis=0), valid_all.all(axis=0)
    mean0 = np.ascontiguousarray(prec[0].T).mean(axis=1)
    mean_all = np.ascontiguousarray(prec.transpose(2, 0, 1)).reshape(K, T * R).mean(axis=1)
    any0, any_all = valid0.any(axis=0), valid_all.any(axis=0)
    nan = float("nan")
    per_class, per_class_all, curves = {}, {}, {}
    for k, cid in enumerate(acc.category_ids):
        p = prec[0, :, k]
        valid = valid0[:, k]
        per_class[names[cid]] = (
            float(mean0[k]) if full0[k] else float(p[valid].mean()) if any0[k] else nan
        )
        pk = prec[:, :, k]
        per_class_all[names[cid]] = (
            float(mean_all[k]) if full_all[k] else float(pk[pk > -1].mean()) if any_all[k] else nan
        )
        curves[names[cid]] = (RECALL_THRESHOLDS[valid], p[valid])
    p50 = prec[0]
    return EvalResult(
        float(p50[p50 > -1].mean()) if (p50 > -1).any() else 0.0,
        float(prec[prec > -1].mean()) if (prec > -1).any() else 0.0,
        per_class,
        curves,
        acc.num_images,
        acc.num_detections,
        per_class_all,
    )


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

    pairs: np.ndarray  # (K, 2) indices into a, b
    ious: np.ndarray  # (K,)
    unmatched_a: np.ndarray
    unmatched_b: np.ndarray


def match(
    a: Detections, b: Detections, iou_threshold: float = 0.5, same_class: bool = True
) -> Match:
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
    return Match(
        np.array(pairs, np.int64).reshape(-1, 2),
        np.array(ious),
        np.array(sorted(set(range(len(a))) - used_a), np.int64),
        np.array(sorted(set(range(len(b))) - used_b), np.int64),
    )


def ground_truth_from_detections(
    detections: pd.DataFrame,
    labels: Sequence[str],
    frames: Sequence[tuple[int, int]] | None = None,
    min_score: float = 0.0,
) -> GroundTruth:
    """A reference set of detections (e.g. another recording's ``run_recording`` output, frame pixels)
    used as ground truth: boxes with ``score >= min_score`` of ``frames`` ((source_id, frame_num); default
    the frames in ``detections``) become annotations of class ``class_id`` named by ``labels``."""
    d = detections[detections["score"] >= min_score]
    if frames is None:
        frames = sorted(
            {(int(s), int(f)) for s, f in zip(detections["source_id"], detections["frame_num"])}
        )
    bad = sorted(set(int(c) for c in d["class_id"]) - set(range(len(labels))))
    if bad:
        raise ValueError(
            f"reference detections have class ids {bad} but only {len(labels)} labels were given"
        )
    ids = [frame_image_id(s, f) for s, f in zip(d["source_id"], d["frame_num"])]
    anns = [
        {
            "id": k + 1,
            "image_id": i,
            "category_id": int(c),
            "iscrowd": 0,
            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
            "area": float((x2 - x1) * (y2 - y1)),
        }
        for k, (i, x1, y1, x2, y2, c) in enumerate(
            zip(ids, d["x1"], d["y1"], d["x2"], d["y2"], d["class_id"])
        )
    ]
    coco = {
        "images": [{"id": frame_image_id(s, f), "width": 0, "height": 0} for s, f in frames],
        "annotations": anns,
        "categories": [{"id": i, "name": n} for i, n in enumerate(labels)],
    }
    boxes = pd.DataFrame(
        {
            "image_id": ids,
            "source_id": d["source_id"].to_numpy(int),
            "frame_num": d["frame_num"].to_numpy(int),
            "x1": d["x1"].to_numpy(float),
            "y1": d["y1"].to_numpy(float),
            "x2": d["x2"].to_numpy(float),
            "y2": d["y2"].to_numpy(float),
            "class_id": d["class_id"].to_numpy(int),
        }
    )
    return GroundTruth(coco, boxes, list(labels))
