"""Filter steps: nvinfer's pre-cluster threshold (network space, before clustering) and its
frame-space object filters (after scaling), ``nvinfer_semantics.md`` §1.6 and §3."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dsprobe.detections import Detections
from dsprobe.postprocess.cluster import PerClass
from dsprobe.postprocess.registry import StepContext, register


def _lookup(value: PerClass, class_ids: np.ndarray, name: str, dtype: type = np.float32) -> np.ndarray:
    """Per-detection values of a scalar-or-per-class param (a list is indexed by class id)."""
    if np.ndim(value) == 0:
        return np.full(len(class_ids), value, dtype)
    arr = np.asarray(value, dtype)
    if len(class_ids) and class_ids.max() >= len(arr):
        raise ValueError(f"{name} has {len(arr)} per-class values but class {int(class_ids.max())} occurs")
    return arr[class_ids]


@register("filter", "threshold")
def threshold(dets: Detections, ctx: StepContext | None = None, *, pre_cluster_threshold: PerClass = 0.2,
              num_classes: int = 0) -> Detections:
    """nvinfer's ``preClusteringThreshold``: drop ``class_id >= num-detected-classes`` (when known,
    from the param or the context), keep ``conf >= pre-cluster-threshold[class]``."""
    n = num_classes or (ctx.num_classes if ctx is not None else 0)
    keep = dets.class_ids >= 0
    if n:
        keep &= dets.class_ids < n
    d = dets[keep]
    thr = _lookup(pre_cluster_threshold, d.class_ids, "pre_cluster_threshold")
    return d[d.scores >= thr]


@register("filter", "objects")
def object_filters(dets: Detections, ctx: StepContext, *, filter_out_class_ids: Sequence[int] = (),
                   detected_min_w: PerClass = 0, detected_min_h: PerClass = 0, detected_max_w: PerClass = 0,
                   detected_max_h: PerClass = 0, roi_top_offset: PerClass = 0, roi_bottom_offset: PerClass = 0,
                   crop_objects_to_roi_boundary: bool = False) -> Detections:
    """nvinfer's frame-space filters, in its order: filter-out-class-ids; detected-min/max-w/h (drop;
    max only when > 0); then ROI offsets against the muxer surface height: with
    ``crop_objects_to_roi_boundary`` boxes are clipped (top to the ROI, right to the surface, bottom
    to the ROI), otherwise boxes crossing the top/bottom ROI edge are dropped."""
    d = dets
    if len(filter_out_class_ids):
        d = d[~np.isin(d.class_ids, np.asarray(filter_out_class_ids))]
    c = d.class_ids
    w, h = d.widths, d.heights
    keep = (w >= _lookup(detected_min_w, c, "detected_min_w")) & (h >= _lookup(detected_min_h, c, "detected_min_h"))
    mw, mh = _lookup(detected_max_w, c, "detected_max_w"), _lookup(detected_max_h, c, "detected_max_h")
    keep &= ~((mw > 0) & (w > mw)) & ~((mh > 0) & (h > mh))
    d = d[keep]
    c = d.class_ids
    top_off = _lookup(roi_top_offset, c, "roi_top_offset")
    bottom_off = _lookup(roi_bottom_offset, c, "roi_bottom_offset")
    if not (top_off.any() or bottom_off.any() or crop_objects_to_roi_boundary):
        return d
    surf_w, surf_h = ctx.frame_size
    left, top = d.boxes[:, 0].copy(), d.boxes[:, 1].copy()
    width, height = d.widths.copy(), d.heights.copy()
    if crop_objects_to_roi_boundary:
        top = np.maximum(top, top_off)
        width = np.where(left + width >= surf_w, surf_w - left, width)
        limit = surf_h - bottom_off
        height = np.where(top + height > limit, limit - top, height)
        boxes = np.stack([left, top, left + width, top + height], 1)
        return Detections(boxes, d.scores, d.class_ids, d.space, keypoints=d.keypoints, vectors=d.vectors,
                          masks=d.masks, object_ids=d.object_ids)
    return d[~((top < top_off) | (top + height > surf_h - bottom_off))]
