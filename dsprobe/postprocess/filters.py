"""Filter steps: nvinfer's pre-cluster threshold (network space, before clustering) and its
object filters (after mapping to the frame), ``docs/nvinfer-semantics.md`` §1.6 and §3.

nvinfer applies the object filters to ``left, top, width, height`` float32 rects;
:func:`nvinfer_object_filter` does exactly that on rect arrays. A box ``x1, y1, x2, y2`` stands for
the rect ``x1, y1, float32(x2 - x1), float32(y2 - y1)`` and a rect becomes the box
``left, top, float32(left + width), float32(top + height)`` (:func:`rects_to_boxes`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

import numpy as np

from dsprobe.detections import Detections
from dsprobe.postprocess.cluster import PerClass, per_row, scalar
from dsprobe.postprocess.registry import StepContext, register

#: params of :func:`object_filters` (nvinfer's [class-attrs-*] / [property] object filter keys)
OBJECT_FILTER_DEFAULTS: dict = {
    "filter_out_class_ids": (),
    "detected_min_w": 0,
    "detected_min_h": 0,
    "detected_max_w": 0,
    "detected_max_h": 0,
    "roi_top_offset": 0,
    "roi_bottom_offset": 0,
    "crop_objects_to_roi_boundary": False,
}


@register("filter", "threshold")
def threshold(
    dets: Detections,
    ctx: StepContext | None = None,
    *,
    pre_cluster_threshold: PerClass = 0.2,
    num_classes: int = 0,
) -> Detections:
    """nvinfer's ``preClusteringThreshold``: drop ``class_id >= num-detected-classes`` (when known,
    from the param or the context) and negative class ids, keep ``conf >= pre-cluster-threshold[class]``
    (float32 comparison). Order is kept."""
    n = num_classes or (ctx.num_classes if ctx is not None else 0)
    c = dets.class_ids
    if not len(c):
        return dets
    if scalar(pre_cluster_threshold) and c.min() >= 0 and (not n or c.max() < n):  # the usual case
        keep = dets.scores >= np.float32(pre_cluster_threshold)
        return dets if keep.all() else dets[keep]
    known = (c >= 0) & (c < n) if n else c >= 0
    thr = per_row(pre_cluster_threshold, np.where(known, c, 0), "pre_cluster_threshold")
    return dets[known & (dets.scores >= thr)]


def rects_to_boxes(rects: np.ndarray, origin: np.ndarray | None = None) -> np.ndarray:
    """(N, 4) float32 ``left, top, width, height`` -> ``x1, y1, x2, y2`` with ``x2 = float32(left + width)``.
    ``origin``: float32 ``(x, y)`` added to left/top first (an SGIE's parent rect origin, as nvinfer)."""
    r = np.asarray(rects, np.float32).reshape(-1, 4)
    boxes = np.empty_like(r)
    if origin is None:
        boxes[:, :2] = r[:, :2]
    else:
        np.add(r[:, :2], origin, out=boxes[:, :2])
    np.add(boxes[:, :2], r[:, 2:], out=boxes[:, 2:])
    return boxes


def nvinfer_object_filter(
    rects: np.ndarray,
    class_ids: np.ndarray,
    surface_size: tuple[int, int],
    *,
    filter_out_class_ids: Sequence[int] = (),
    detected_min_w: PerClass = 0,
    detected_min_h: PerClass = 0,
    detected_max_w: PerClass = 0,
    detected_max_h: PerClass = 0,
    roi_top_offset: PerClass = 0,
    roi_bottom_offset: PerClass = 0,
    crop_objects_to_roi_boundary: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """nvinfer's per-object checks in ``attach_metadata_detector``, in its order, on float32 rects
    ``left, top, width, height`` (frame scale; crop-relative for an SGIE, as nvinfer has them):

    1. drop ``class_id`` in ``filter_out_class_ids``;
    2. drop ``width < detected_min_w``, ``height < detected_min_h``; when a max is > 0, drop
       ``width > detected_max_w`` / ``height > detected_max_h``;
    3. ``crop_objects_to_roi_boundary``: ``top = max(top, roi_top_offset)``; if
       ``left + width >= surface width``: ``width = surface width - left``; if
       ``top + height > surface height - roi_bottom_offset``: ``height = that - top``. Otherwise drop
       ``top < roi_top_offset`` and ``top + height > surface height - roi_bottom_offset``.

    ``surface_size`` is the muxer frame ``(width, height)`` (also for an SGIE). Returns the indices
    kept and their (possibly clipped) rects.
    """
    r = np.asarray(rects, np.float32).reshape(-1, 4)
    c = np.asarray(class_ids)
    idx = np.arange(len(r))
    if len(filter_out_class_ids):
        idx = idx[~np.isin(c, np.asarray(filter_out_class_ids))]
    r, c = r[idx], c[idx]
    left, top, w, h = r[:, 0], r[:, 1], r[:, 2], r[:, 3]
    min_w, min_h = (
        per_row(detected_min_w, c, "detected_min_w"),
        per_row(detected_min_h, c, "detected_min_h"),
    )
    max_w, max_h = (
        per_row(detected_max_w, c, "detected_max_w"),
        per_row(detected_max_h, c, "detected_max_h"),
    )
    drop = (w < min_w) | (h < min_h) | ((max_w > 0) & (w > max_w)) | ((max_h > 0) & (h > max_h))
    idx, r, c = idx[~drop], r[~drop], c[~drop]
    top_off = per_row(roi_top_offset, c, "roi_top_offset")
    surf_w, surf_h = (int(v) for v in surface_size)
    bottom = (surf_h - per_row(roi_bottom_offset, c, "roi_bottom_offset", np.int64)).astype(
        np.float32
    )
    left, top, w, h = r[:, 0], r[:, 1], r[:, 2], r[:, 3]
    if crop_objects_to_roi_boundary:
        top = np.where(top < top_off, top_off, top)
        w = np.where(left + w >= np.float32(surf_w), np.float32(surf_w) - left, w)
        h = np.where(top + h > bottom, bottom - top, h)
        return idx, np.stack([left, top, w, h], axis=1).astype(np.float32)
    drop = (top < top_off) | (top + h > bottom)
    return idx[~drop], r[~drop]


@register("filter", "objects")
def object_filters(
    dets: Detections,
    ctx: StepContext,
    *,
    filter_out_class_ids: Sequence[int] = (),
    detected_min_w: PerClass = 0,
    detected_min_h: PerClass = 0,
    detected_max_w: PerClass = 0,
    detected_max_h: PerClass = 0,
    roi_top_offset: PerClass = 0,
    roi_bottom_offset: PerClass = 0,
    crop_objects_to_roi_boundary: bool = False,
) -> Detections:
    """nvinfer's object filters (:func:`nvinfer_object_filter`) on the boxes given, against the muxer
    surface ``ctx.frame_size``. Sizes and offsets are frame pixels.

    Directly after ``scale:nvinfer`` in a :class:`~dsprobe.postprocess.Postprocess`, both steps run
    together as nvinfer does (:func:`dsprobe.postprocess.scale.nvinfer_attach`: on its float32 rects,
    crop-relative for an SGIE, before the parent offset is added)."""
    idx, rects = nvinfer_object_filter(
        dets.to_rects(),
        dets.class_ids,
        ctx.frame_size,
        filter_out_class_ids=filter_out_class_ids,
        detected_min_w=detected_min_w,
        detected_min_h=detected_min_h,
        detected_max_w=detected_max_w,
        detected_max_h=detected_max_h,
        roi_top_offset=roi_top_offset,
        roi_bottom_offset=roi_bottom_offset,
        crop_objects_to_roi_boundary=crop_objects_to_roi_boundary,
    )
    d = dets[idx]
    if not crop_objects_to_roi_boundary:
        return d
    changed = np.any(
        rects != d.to_rects(), axis=1
    )  # only clipped boxes are rebuilt (no re-rounding)
    boxes = d.boxes.copy()
    boxes[changed] = rects_to_boxes(rects[changed])
    return replace(d, boxes=boxes)
