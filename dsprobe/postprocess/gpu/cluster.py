"""GPU pre-cluster threshold, nvinfer cluster-mode 2 NMS / mode 4 top-k, and the nvinfer scaling, on
flat :class:`~dsprobe.postprocess.gpu.decode.Candidates` of many frames at once.

Order and ties are the CPU path's: one stable sort by ``(frame, class, descending score)`` (``-0.0``
ties ``0.0``, NaN last, ties keep the decoder's order), then each (frame, class) run is swept by one
warp with nvinfer's greedy loop and its float32 IoU (``kernels.nms_segments``), then ``score > post``
and the top-k per run. The result is frame by frame, class by class, by descending score: exactly
the CPU ``cluster:nms`` / ``cluster:none`` output of every frame, one after the other.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dsprobe.postprocess.cluster import scalar
from dsprobe.postprocess.gpu.decode import Candidates
from dsprobe.postprocess.gpu.kernels import launch
from dsprobe.postprocess.registry import StepContext
from dsprobe.postprocess.scale import CLAMP_NEGATIVE_SINCE, crop_transform


def per_class_table(value: Any, name: str, classes: Any, dtype: type = np.float32) -> Any:
    """``value`` per box as :func:`dsprobe.postprocess.cluster.per_row` gives it (a scalar for all,
    a list indexed by class id; same error when a class has no entry), as a CuPy array."""
    import cupy

    if scalar(value):
        return cupy.full(classes.shape[0], value, dtype)
    arr = np.asarray(value, dtype)
    if classes.shape[0]:
        top = int(classes.max())
        if top >= len(arr):
            raise ValueError(f"{name} has {len(arr)} per-class values but class {top} occurs")
    return cupy.asarray(arr)[classes]


def threshold(c: Candidates, pre_cluster_threshold: Any = 0.2, num_classes: int = 0) -> Candidates:
    """``filter:threshold``: drop unknown classes (negative, or >= ``num_classes`` when known), keep
    ``score >= pre_cluster_threshold[class]`` (float32)."""
    import cupy

    if not c.n:
        return c
    cls = c.class_ids
    known = (cls >= 0) & (cls < num_classes) if num_classes else cls >= 0
    if scalar(pre_cluster_threshold):
        keep = known & (c.scores >= np.float32(pre_cluster_threshold))
    else:
        thr = per_class_table(
            pre_cluster_threshold, "pre_cluster_threshold", cupy.where(known, cls, 0)
        )
        keep = known & (c.scores >= thr)
    return c.take(cupy.flatnonzero(keep))


def sort_by_class_score(c: Candidates) -> tuple[Candidates, Any]:
    """``c`` in (frame, class, descending score) order, stable, and each box's segment id."""
    import cupy

    top = int(c.class_ids.max()) + 1
    seg = c.frame.astype(np.int64) * top + c.class_ids
    key = cupy.empty(c.n, np.uint64)
    launch("sort_keys", c.n, (c.scores, seg, np.int64(c.n), key))
    order = cupy.argsort(key)  # CuPy's sort is stable (thrust stable_sort_by_key)
    return c.take(order), seg[order]


def _runs(seg: Any) -> tuple[Any, Any, Any]:
    """Start of each run of equal ``seg``, its length, and each box's run number."""
    import cupy

    new = cupy.empty(seg.shape[0], bool)
    new[0] = True
    new[1:] = seg[1:] != seg[:-1]
    start = cupy.flatnonzero(new).astype(np.int32)
    length = cupy.diff(cupy.append(start, np.int32(seg.shape[0]))).astype(np.int32)
    return start, length, cupy.cumsum(new) - 1


def nms_keep(c: Candidates, start: Any, length: Any, iou_threshold: Any) -> Any:
    """Greedy NMS of every run (boxes sorted as :func:`sort_by_class_score`): the kept mask."""
    import cupy

    n, nseg = c.n, int(start.shape[0])
    thr = per_class_table(iou_threshold, "iou_threshold", c.class_ids[start])
    edges = cupy.empty((5, n), np.float32)
    launch("box_edges", n, (c.boxes, np.int64(n), edges))
    alive = cupy.ones(n, np.uint8)
    launch(
        "nms_segments",
        nseg * 32,
        (edges, np.int64(n), start, length, thr, np.int32(nseg), alive),
        block=128,
    )
    return alive.astype(bool)


def per_box(value: Any, name: str, classes: Any, kept: Any, dtype: type = np.float32) -> Any:
    """``value`` for every box: a scalar stays a scalar (no device work), a per-class list is looked
    up by class id; as on the CPU, a list too short for a class among the ``kept`` boxes raises."""
    import cupy

    if scalar(value):
        return dtype(np.float32(value)) if dtype is not np.float32 else np.float32(value)
    arr = np.asarray(value, np.float32)
    if bool(kept.any()):
        top = int(classes[kept].max())
        if top >= len(arr):
            raise ValueError(f"{name} has {len(arr)} per-class values but class {top} occurs")
    table = cupy.asarray(arr.astype(dtype))
    return table[cupy.minimum(classes, len(arr) - 1)]  # other boxes are masked out


def topk_mask(c: Candidates, keep: Any, run: Any, start: Any, topk: Any) -> Any:
    """``keep`` and'ed with nvinfer's top-k per run (rank among the kept; -1 = all, 0 = none)."""
    import cupy

    if scalar(topk) and topk < 0:
        return keep
    k = per_box(topk, "topk", c.class_ids, keep, np.int64)
    csum = cupy.cumsum(keep.astype(np.int32))
    before = (csum - keep)[start]  # kept boxes before each run
    rank = csum - 1 - before[run]
    if np.ndim(k) == 0:  # one top-k for every class (>= 0 here)
        return keep & (rank < k)
    return keep & ((k < 0) | (rank < k))


def cluster(
    c: Candidates,
    method: str,
    iou_threshold: Any = 0.3,
    post_cluster_threshold: Any = 0.0,
    topk: Any = -1,
) -> Candidates:
    """``cluster:nms`` (``method="nms"``) or ``cluster:none`` of every frame: kept boxes, ordered."""
    import cupy

    if not c.n:
        return c
    c, seg = sort_by_class_score(c)
    start, length, run = _runs(seg)
    if method == "nms":
        keep = nms_keep(c, start, length, iou_threshold)
        post = per_box(post_cluster_threshold, "post_cluster_threshold", c.class_ids, keep)
        keep &= c.scores > post
    else:
        keep = cupy.ones(c.n, bool)
    return c.take(cupy.flatnonzero(topk_mask(c, keep, run, start, topk)))


# ---------------------------------------------------------------------------------------------- scaling
def frame_mappings(
    contexts: Sequence[StepContext], maintain_aspect_ratio: Any, symmetric_padding: Any
) -> tuple[Any, Any, Any, Any]:
    """Per frame: padding offset (float32), ratio (float64), crop origin (float32), surface (int32),
    each ``(B, 2)`` on the GPU, from nvinfer's transform of each context (computed once per geometry)."""
    import cupy

    seen: dict[tuple, int] = {}
    index = np.empty(len(contexts), np.int64)
    rows = []
    for i, ctx in enumerate(contexts):
        key = (ctx.crop_rect, ctx.network_size, ctx.frame_size, id(ctx.geometry))
        k = seen.get(key)
        if k is None:
            m = crop_transform(ctx, maintain_aspect_ratio, symmetric_padding)
            k = seen[key] = len(rows)
            rows.append((m.offset, m.ratio, m.origin, np.asarray(ctx.frame_size, np.int32)))
        index[i] = k
    return tuple(cupy.asarray(np.stack([r[j] for r in rows])[index]) for j in range(4))


def _filter_tables(filters: dict, classes: Any) -> tuple[Any, Any]:
    """Per-class filter values as device tables and each box's row in them."""
    import cupy

    names = ("detected_min_w", "detected_min_h", "detected_max_w", "detected_max_h")
    names += ("roi_top_offset", "roi_bottom_offset")
    values = {n: filters.get(n, 0) for n in names}
    lists = [n for n in names if not scalar(values[n])]
    size = min((len(values[n]) for n in lists), default=1)
    if lists and classes.shape[0]:
        top = int(classes.max())
        for n in lists:
            if top >= len(values[n]):
                raise ValueError(
                    f"{n} has {len(values[n])} per-class values but class {top} occurs"
                )
    tables = []
    for n in names:
        dt = np.int64 if n == "roi_bottom_offset" else np.float32
        v = values[n]
        arr = np.full(size, v, dt) if scalar(v) else np.asarray(v, dt)[:size]
        tables.append(cupy.asarray(arr))
    pc = classes if lists else cupy.zeros(classes.shape[0], np.int32)
    return tables, pc.astype(np.int32)


def scale_nvinfer(
    c: Candidates,
    mappings: tuple[Any, Any, Any, Any],
    *,
    deepstream_version: float = 7.1,
    filters: dict | None = None,
) -> Candidates:
    """``scale:nvinfer`` (with the fused ``filter:objects`` params ``filters``): frame pixels."""
    import cupy

    if not c.n:
        return c
    if filters and len(filters.get("filter_out_class_ids", ())):
        ids = cupy.asarray(np.asarray(filters["filter_out_class_ids"]))
        c = c.take(cupy.flatnonzero(~cupy.isin(c.class_ids, ids)))
        if not c.n:
            return c
    off, ratio, origin, surface = mappings
    mode = 0 if filters is None else 2 if filters.get("crop_objects_to_roi_boundary") else 1
    tables, pc = _filter_tables(filters or {}, c.class_ids)
    n = c.n
    out = cupy.empty((n, 4), np.float32)
    keep = cupy.empty(n, np.uint8)
    clamp = np.int32(deepstream_version >= CLAMP_NEGATIVE_SINCE)
    args = (c.boxes, c.frame, pc, np.int64(n), off, ratio, origin, surface, clamp, np.int32(mode))
    launch("scale_nvinfer", n, (*args, *tables, out, keep))
    c = Candidates(out, c.scores, c.class_ids, c.frame, c.index)
    return c if mode == 0 else c.take(cupy.flatnonzero(keep))
