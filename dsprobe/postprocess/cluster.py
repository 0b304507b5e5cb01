"""Clustering steps: nvinfer's cluster modes (exact where the source is public) and common extras.

All work on Detections in any space and return them ordered as nvinfer emits: class by class
(0, 1, ...), within a class by descending confidence (see :func:`topk_per_class` for the one
exception). Per-class params accept a scalar or a list indexed by class id
(``docs/nvinfer-semantics.md`` §3).

IoU and the greedy sweeps (nvinfer's float32 box convention, bit-identical to its loops) live in
:mod:`dsprobe.postprocess.iou`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dsprobe.detections import Detections
from dsprobe.postprocess.iou import greedy_nms, greedy_same_class, iou_matrix, iou_one_to_many
from dsprobe.postprocess.registry import StepContext, register

PerClass = float | int | Sequence[float] | Sequence[int]


def scalar(value: object) -> bool:
    """True for one value for all classes (a number, or any 0-d value), False for a per-class list.
    The isinstance test first: ``np.ndim`` on a float costs microseconds on the per-frame path."""
    return isinstance(value, (int, float, np.number)) or np.ndim(value) == 0


def per_class(value: PerClass, class_id: int, name: str) -> float:
    """``value`` for ``class_id``: a scalar applies to every class, a list is indexed by class id."""
    if scalar(value):
        return value  # type: ignore[return-value]
    seq = list(value)  # type: ignore[arg-type]
    if class_id >= len(seq):
        raise ValueError(f"{name} has {len(seq)} per-class values but class {class_id} occurs")
    return seq[class_id]


def per_row(
    value: PerClass, class_ids: np.ndarray, name: str, dtype: type = np.float32
) -> np.ndarray:
    """Per-detection values of a scalar-or-per-class param (a list is indexed by class id)."""
    if scalar(value):
        return np.full(len(class_ids), value, dtype)
    arr = np.asarray(value, dtype)
    if len(class_ids) and class_ids.max() >= len(arr):
        raise ValueError(
            f"{name} has {len(arr)} per-class values but class {int(class_ids.max())} occurs"
        )
    return arr[class_ids]


def class_score_order(scores: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """Indices ordering detections by class id, then descending score; ties keep their order (the
    stable sort nvinfer's loops see; -0.0 ties with 0.0). Equals ``np.lexsort((-scores, class_ids))``.

    Fast path (float32 scores without NaN, class ids within int16, under 65536 detections): class,
    score and index packed into one int64 key per detection, so one plain sort of distinct keys
    does it (numpy's SIMD sort; a stable float argsort costs several times more)."""
    n = len(scores)
    if 0 < n < 2**16 and scores.dtype == np.float32:
        top = scores.max()
        if top == top and class_ids.min() >= -(2**15) and class_ids.max() < 2**15:
            bits = (scores + np.float32(0)).view(np.int32)  # -0.0 -> 0.0
            mono = (bits >> 31) & 0x7FFFFFFF
            mono ^= bits  # int32 in the floats' order
            key = class_ids.astype(np.int64) << 32
            key -= mono  # class ascending, then score descending
            key <<= 16
            key += np.arange(n)  # ties: input order
            key.sort()
            key &= 0xFFFF
            return key
    return np.lexsort((-scores, class_ids))


def _by_class(dets: Detections):
    for c in np.unique(dets.class_ids):
        yield int(c), np.flatnonzero(dets.class_ids == c)


#: above this many candidates NMS works class by class instead of in one pass (memory)
ONE_PASS_LIMIT = 3000


@register("cluster", "nms")
def nms(
    dets: Detections,
    ctx: StepContext | None = None,
    *,
    iou_threshold: PerClass = 0.3,
    post_cluster_threshold: PerClass = 0.0,
    topk: PerClass = -1,
) -> Detections:
    """nvinfer cluster-mode=2: per class greedy NMS (stable sort by confidence, suppress IoU > thr),
    then ``conf > post`` (strict), then the top-k per class (-1 unlimited, 0 none). Defaults are
    nvinfer's. Output class by class, each by descending confidence.

    All classes are done in one pass: the IoU of every same-class pair (nvinfer's float32 formula) in
    one vectorised call, then one greedy sweep over the class-then-score order, so the result equals
    nvinfer's per-class loop bit for bit."""
    n = len(dets)
    if n == 0:
        return dets
    if n > ONE_PASS_LIMIT:
        kept = []
        for c, idx in _by_class(dets):
            kept.append(
                idx[
                    greedy_nms(
                        dets.boxes[idx],
                        dets.scores[idx],
                        per_class(iou_threshold, c, "iou_threshold"),
                    )
                ]
            )
        keep = np.concatenate(kept)
    else:
        order = class_score_order(dets.scores, dets.class_ids)
        cls = dets.class_ids[order]
        thr = (
            np.float32(iou_threshold)
            if scalar(iou_threshold)
            else per_row(iou_threshold, cls, "iou_threshold")
        )
        keep = order[greedy_same_class(dets.boxes[order], cls, thr)]
    post = (
        np.float32(post_cluster_threshold)
        if scalar(post_cluster_threshold)
        else per_row(post_cluster_threshold, dets.class_ids[keep], "post_cluster_threshold")
    )
    keep = keep[dets.scores[keep] > post]
    return dets[
        keep if scalar(topk) and topk < 0 else topk_per_class(keep, dets, topk, presorted=True)
    ]


def topk_per_class(
    idx: np.ndarray, dets: Detections, topk: PerClass, presorted: bool = False
) -> np.ndarray:
    """nvinfer's ``filterTopKOutputs`` per class, classes in ascending order: a stable sort by
    descending confidence, then the first ``topk`` (-1 = all, 0 = none). ``presorted``: ``idx`` is
    already in that order (NMS output).

    (With ``topk < 0`` nvinfer returns without sorting, so mode 4 / DBSCAN classes keep the parser's
    order there; dsprobe sorts them too: the same objects, in the order NMS gives.)"""
    idx = np.asarray(idx, np.intp)
    if not presorted:
        idx = idx[class_score_order(dets.scores[idx], dets.class_ids[idx])]
    if scalar(topk) and topk < 0:  # type: ignore[operator]
        return idx
    c = dets.class_ids[idx]
    k = np.asarray(per_row(topk, c, "topk"), np.int64)
    rank = np.arange(len(idx)) - np.searchsorted(c, c, side="left")
    return idx[(k < 0) | (rank < k)]


@register("cluster", "none")
def no_clustering(
    dets: Detections, ctx: StepContext | None = None, *, topk: PerClass = -1
) -> Detections:
    """nvinfer cluster-mode=4 (``fillUnclusteredOutput``): split by class, top-k per class only; no
    post-cluster threshold."""
    return dets[topk_per_class(np.arange(len(dets)), dets, topk)]


@register("cluster", "group_rectangles")
def group_rectangles(
    dets: Detections,
    ctx: StepContext | None = None,
    *,
    group_threshold: PerClass = 0,
    eps: PerClass = 0.0,
    post_cluster_threshold: PerClass = 0.0,
    opencv_build: bool = False,
) -> Detections:
    """nvinfer cluster-mode=0.

    * ``opencv_build=False`` (nvinfer built without OpenCV, the default since DeepStream 6.0): nvinfer
      silently runs NMS with IoU 0.5 and top-20 per class instead (post-cluster threshold kept).
    * ``opencv_build=True``: ``cv::groupRectangles(rects, group_threshold, eps)`` per class on
      ``cv::Rect(int(left), int(top), int(width), int(height))`` (C truncation; only when
      group_threshold > 0; eps is the config's float32 value); every output confidence is -0.1 and
      neither the post-cluster threshold nor top-k is applied. The output loses keypoints/vectors."""
    if not opencv_build:
        return nms(
            dets, ctx, iou_threshold=0.5, post_cluster_threshold=post_cluster_threshold, topk=20
        )
    out_b, out_c = [], []
    for c, idx in _by_class(dets):
        g = int(per_class(group_threshold, c, "group_threshold"))
        b = dets.boxes[idx]
        rects = np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1).astype(
            np.int64
        )
        if g > 0:
            rects = cv_group_rectangles(rects, g, float(np.float32(per_class(eps, c, "eps"))))
        out_b.append(rects)
        out_c.append(np.full(len(rects), c, np.int32))
    if not out_b:
        return Detections.empty(dets.space)
    r = np.concatenate(out_b).astype(np.float32)
    boxes = np.stack([r[:, 0], r[:, 1], r[:, 0] + r[:, 2], r[:, 1] + r[:, 3]], 1)
    return Detections(boxes, np.full(len(r), -0.1, np.float32), np.concatenate(out_c), dets.space)


def cv_group_rectangles(rects: np.ndarray, group_threshold: int, eps: float) -> np.ndarray:
    """OpenCV ``groupRectangles`` semantics on (N, 4) int x, y, w, h rects (our own implementation).

    Similarity: every edge within ``delta = eps * (min(w1,w2) + min(h1,h2)) / 2`` (double); clusters
    are the transitive closure (``cv::partition``, numbered by their first member); each becomes the
    mean ``round(float32(sum) * (1.f / n))`` (half to even, as cvRound); clusters with
    ``n <= group_threshold`` are dropped, and so is a cluster inside another surviving one expanded
    by ``round(eps * w2), round(eps * h2)`` when ``n2 > max(3, n1) or n1 < 3``. Output in cluster order.
    """
    n = len(rects)
    if group_threshold <= 0 or n == 0:
        return rects
    x, y, w, h = (rects[:, k].astype(np.float64) for k in range(4))
    delta = eps * (np.minimum(w[:, None], w[None]) + np.minimum(h[:, None], h[None])) * 0.5
    sim = (
        (np.abs(x[:, None] - x[None]) <= delta)
        & (np.abs(y[:, None] - y[None]) <= delta)
        & (np.abs(x[:, None] + w[:, None] - x[None] - w[None]) <= delta)
        & (np.abs(y[:, None] + h[:, None] - y[None] - h[None]) <= delta)
    )
    labels = -np.ones(n, np.int64)  # union-find by BFS over the similarity graph
    nclasses = 0
    for i in range(n):
        if labels[i] >= 0:
            continue
        stack = [i]
        labels[i] = nclasses
        while stack:
            j = stack.pop()
            for k in np.flatnonzero(sim[j] & (labels < 0)):
                labels[k] = nclasses
                stack.append(k)
        nclasses += 1
    sums = np.zeros((nclasses, 4))
    counts = np.zeros(nclasses, np.int64)
    np.add.at(sums, labels, rects.astype(np.float64))
    np.add.at(counts, labels, 1)
    # saturate_cast<int>(sum * (1.f/n)): float math, round half to even as cvRound
    means = np.rint(
        (sums.astype(np.float32) * (np.float32(1) / counts.astype(np.float32))[:, None])
    ).astype(np.int64)
    out = []
    for i in range(nclasses):
        n1 = counts[i]
        if n1 <= group_threshold:
            continue
        r1 = means[i]
        inside = False
        for j in range(nclasses):
            n2 = counts[j]
            if j == i or n2 <= group_threshold:
                continue
            r2 = means[j]
            dx, dy = int(np.rint(r2[2] * eps)), int(np.rint(r2[3] * eps))
            if (
                r1[0] >= r2[0] - dx
                and r1[1] >= r2[1] - dy
                and r1[0] + r1[2] <= r2[0] + r2[2] + dx
                and r1[1] + r1[3] <= r2[1] + r2[3] + dy
                and (n2 > max(3, n1) or n1 < 3)
            ):
                inside = True
                break
        if not inside:
            out.append(r1)
    return np.array(out, np.int64).reshape(-1, 4)


@register("cluster", "dbscan")
def dbscan(
    dets: Detections,
    ctx: StepContext | None = None,
    *,
    eps: PerClass = 0.0,
    min_boxes: PerClass = 0,
    min_score: PerClass = 0.0,
    post_cluster_threshold: PerClass = 0.0,
    topk: PerClass = -1,
    then_nms: bool = False,
    iou_threshold: PerClass = 0.3,
) -> Detections:
    """APPROXIMATION of nvinfer cluster-mode=1 (and 3 with ``then_nms=True``).

    The clustering itself is closed source (``libnvds_dbscan``, ``NvDsInferDBScanCluster``), so its
    output cannot be reproduced; only what surrounds it is exact. This uses the same parameters with
    public DBSCAN semantics: neighbours are same-class boxes with ``1 - IoU <= eps`` (a box is its own
    neighbour); a core box has >= ``min_boxes`` neighbours; clusters grow from core boxes visited by
    descending confidence; a cluster whose summed confidence >= ``min_score`` becomes the
    confidence-weighted mean box with the cluster's max confidence; boxes in no cluster are dropped.
    nvinfer's ATHR filter (sqrt(area)/n > 60) is not modelled.

    Exact parts (as nvinfer): clustering runs only for classes with ``min_boxes > 0`` (others pass
    unchanged); mode 1 then keeps ``conf >= post_cluster_threshold`` (non-strict, unlike NMS) and
    top-k per class; mode 3 (``then_nms``) runs :func:`nms` with ``iou_threshold``, post-cluster
    threshold and top-k."""
    parts = []
    for c, idx in _by_class(dets):
        mb = int(per_class(min_boxes, c, "min_boxes"))
        if mb <= 0:
            parts.append(
                Detections(dets.boxes[idx], dets.scores[idx], dets.class_ids[idx], dets.space)
            )
            continue
        b, s = dets.boxes[idx], dets.scores[idx]
        e = float(per_class(eps, c, "eps"))
        neigh = 1 - iou_matrix(b) <= e
        np.fill_diagonal(neigh, True)
        core = neigh.sum(1) >= mb
        label = -np.ones(len(b), np.int64)
        nl = 0
        for i in np.argsort(-s, kind="stable"):
            if label[i] >= 0 or not core[i]:
                continue
            stack = [i]
            label[i] = nl
            while stack:
                j = stack.pop()
                if not core[j]:
                    continue
                for k in np.flatnonzero(neigh[j] & (label < 0)):
                    label[k] = nl
                    stack.append(k)
            nl += 1
        boxes, scores = [], []
        for lab in range(nl):
            m = label == lab
            if s[m].sum() < float(per_class(min_score, c, "min_score")):
                continue
            wgt = s[m] / s[m].sum()
            boxes.append((b[m] * wgt[:, None]).sum(0))
            scores.append(s[m].max())
        parts.append(
            Detections(
                np.array(boxes, np.float32).reshape(-1, 4),
                scores,
                np.full(len(scores), c),
                dets.space,
            )
        )
    merged = Detections.concatenate(parts) if parts else Detections.empty(dets.space)
    if then_nms:
        return nms(
            merged,
            ctx,
            iou_threshold=iou_threshold,
            post_cluster_threshold=post_cluster_threshold,
            topk=topk,
        )
    keep = np.flatnonzero(
        merged.scores >= per_row(post_cluster_threshold, merged.class_ids, "post_cluster_threshold")
    )
    return merged[topk_per_class(keep, merged, topk)]


@register("cluster", "agnostic_nms")
def agnostic_nms(
    dets: Detections,
    ctx: StepContext | None = None,
    *,
    iou_threshold: float = 0.45,
    score_threshold: float = 0.0,
    max_det: int = 300,
) -> Detections:
    """Class-agnostic greedy NMS (boxes of different classes suppress each other), then
    ``score > score_threshold`` and the ``max_det`` best, in descending score order."""
    keep = greedy_nms(dets.boxes, dets.scores, iou_threshold)
    keep = keep[dets.scores[keep] > np.float32(score_threshold)][:max_det]
    return dets[keep]


@register("cluster", "soft_nms")
def soft_nms(
    dets: Detections,
    ctx: StepContext | None = None,
    *,
    iou_threshold: float = 0.3,
    sigma: float = 0.5,
    method: str = "gaussian",
    score_threshold: float = 0.001,
    per_class_nms: bool = True,
) -> Detections:
    """Soft-NMS (Bodla et al. 2017): decay overlapping scores instead of removing boxes.
    ``method`` "linear" (decay by 1 - IoU above ``iou_threshold``) or "gaussian" (exp(-IoU^2 / sigma))."""
    if method not in ("linear", "gaussian"):
        raise ValueError(f"soft_nms: method must be 'linear' or 'gaussian', got {method!r}")
    groups = _by_class(dets) if per_class_nms else [(0, np.arange(len(dets)))]
    out_idx, out_scores = [], []
    for _, idx in groups:
        s = dets.scores[idx].astype(np.float32).copy()
        b = dets.boxes[idx]
        alive = np.ones(len(idx), bool)
        while alive.any():
            i = np.flatnonzero(alive)[np.argmax(s[alive])]
            if s[i] < score_threshold:
                break
            out_idx.append(idx[i])
            out_scores.append(s[i])
            alive[i] = False
            rest = np.flatnonzero(alive)
            if not len(rest):
                break
            iou = iou_one_to_many(b[i], b[rest])
            decay = (
                np.where(iou > iou_threshold, 1 - iou, 1)
                if method == "linear"
                else np.exp(-(iou**2) / sigma)
            )
            s[rest] *= decay.astype(np.float32)
    if not out_idx:
        return Detections.empty(dets.space)
    sel = dets[np.array(out_idx)]
    res = Detections(
        sel.boxes,
        out_scores,
        sel.class_ids,
        sel.space,
        keypoints=sel.keypoints,
        vectors=sel.vectors,
        masks=sel.masks,
        object_ids=sel.object_ids,
    )
    return _class_order(res)


@register("cluster", "weighted_merge")
def weighted_merge(
    dets: Detections,
    ctx: StepContext | None = None,
    *,
    iou_threshold: float = 0.55,
    score_threshold: float = 0.0,
) -> Detections:
    """Weighted box merge (WBF-style, per class): boxes overlapping a cluster's running box by
    IoU > thr join it; the output box is the confidence-weighted mean, the score the mean score."""
    boxes, scores, classes = [], [], []
    for c, idx in _by_class(dets):
        order = idx[np.argsort(-dets.scores[idx], kind="stable")]
        clusters: list[list[int]] = []
        fused: list[np.ndarray] = []
        for i in order:
            if fused:
                iou = iou_one_to_many(dets.boxes[i], np.array(fused, np.float32))
                j = int(np.argmax(iou))
                if iou[j] > iou_threshold:
                    clusters[j].append(i)
                    w = dets.scores[clusters[j]]
                    fused[j] = (dets.boxes[clusters[j]] * w[:, None]).sum(0) / w.sum()
                    continue
            clusters.append([i])
            fused.append(dets.boxes[i].astype(np.float64))
        for members, box in zip(clusters, fused):
            sc = float(dets.scores[members].mean())
            if sc > score_threshold:
                boxes.append(box)
                scores.append(sc)
                classes.append(c)
    if not boxes:
        return Detections.empty(dets.space)
    return _class_order(Detections(np.array(boxes), scores, classes, dets.space))


def _class_order(d: Detections) -> Detections:
    """Order as nvinfer emits: class ascending, then score descending (stable)."""
    order = class_score_order(d.scores, d.class_ids)
    return d[order]
