"""nvinfer's IoU in float32 and the greedy suppression sweeps behind ``cluster:nms`` and friends.

A box ``x1, y1, x2, y2`` stands for the nvinfer object a C++ parser would emit from those corners:
``left = x1, top = y1, width = float32(x2 - x1), height = float32(y2 - y1)``; nvinfer's IoU then uses
``left + width`` (float32) as the right edge, no +1 pixel, ``overlap1D`` after ordering by left edge
and ``union == 0 -> 0``. Everything here computes in that convention, so the sweeps are bit-identical
to nvinfer's loops on the same objects (tests/nvinfer_reference.py).
"""

from __future__ import annotations

import numpy as np


def edges(boxes: np.ndarray) -> np.ndarray:
    """nvinfer's view of x1y1x2y2 boxes, stacked on a new first axis: ``left, top, left + width,
    top + height, width * height`` (float32, width = x2 - x1)."""
    b = np.asarray(boxes, np.float32)
    with quiet():
        return _edges(b)


def _edges(b: np.ndarray) -> np.ndarray:
    corners = b.transpose(
        b.ndim - 1, *range(b.ndim - 1)
    )  # x1, y1, x2, y2 first (np.moveaxis is slow)
    e = np.empty((5, *b.shape[:-1]), np.float32)
    e[0:2] = corners[0:2]
    np.subtract(corners[2:4], corners[0:2], out=e[2:4])  # width, height
    np.multiply(e[2], e[3], out=e[4])
    e[2:4] += e[0:2]  # right, bottom = left + width, top + height
    return e


def _overlap(a0: np.ndarray, a1: np.ndarray, b0: np.ndarray, b1: np.ndarray) -> np.ndarray:
    """nvinfer's ``overlap1D``: order the pair by left edge (swap when a0 > b0); 0 when the first ends
    before the second starts, else min(rights) - the later left (negative for inverted boxes, as in C++)."""
    swap = a0 > b0
    lo1, hi0 = np.where(swap, b1, a1), np.where(swap, a0, b0)
    return np.where(lo1 < hi0, np.float32(0), np.minimum(a1, b1) - hi0)


def iou_edges(ea: np.ndarray, eb: np.ndarray) -> np.ndarray:
    """IoU from :func:`edges` arrays (broadcasting); call under :func:`quiet` for inf/NaN boxes."""
    inter = _overlap(ea[0], ea[2], eb[0], eb[2]) * _overlap(ea[1], ea[3], eb[1], eb[3])
    union = ea[4] + eb[4] - inter
    return np.where(union == 0, np.float32(0), inter / np.where(union == 0, np.float32(1), union))


def iou_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise IoU of broadcastable ``(..., 4)`` x1y1x2y2 boxes in float32, exactly as nvinfer's
    ``computeIoU`` on ``left, top, width, height`` objects: right edge ``left + width``, no +1 pixel,
    ``overlap1D`` after ordering by left edge, ``union == 0 -> 0``."""
    with quiet():
        return iou_edges(edges(a), edges(b))


def iou_one_to_many(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box with many (nvinfer's float32 formula)."""
    return iou_pairs(np.asarray(box)[None, :], boxes)


def iou_matrix(boxes: np.ndarray) -> np.ndarray:
    """(N, N) IoU matrix (nvinfer's float32 formula)."""
    b = np.asarray(boxes, np.float32)
    return iou_pairs(b[:, None, :], b[None, :, :])


def quiet() -> np.errstate:
    """Silence float warnings: inf/NaN boxes go through the arithmetic as in C++."""
    return np.errstate(divide="ignore", invalid="ignore", over="ignore")


def suppresses(iou: np.ndarray, thr: np.ndarray | np.float32) -> np.ndarray:
    """nvinfer keeps a box while ``IoU <= thr`` (so a NaN IoU suppresses, as in its loop)."""
    return ~(iou <= thr)


def greedy_nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, matrix_limit: int = 3000
) -> np.ndarray:
    """Indices kept by greedy NMS: stable sort by descending score (ties keep input order), a box is
    suppressed when its IoU with a kept box is ``> iou_threshold``. Up to ``matrix_limit`` boxes the
    IoU matrix is computed at once; above it, row by row (memory)."""
    order = np.argsort(-scores, kind="stable")
    b = boxes[order].astype(np.float32, copy=False)
    n = len(order)
    alive = np.ones(n, bool)
    keep = []
    thr = np.float32(iou_threshold)
    if n <= matrix_limit:
        suppress = suppresses(iou_matrix(b), thr)
        for i in range(n):
            if alive[i]:
                keep.append(i)
                alive &= ~suppress[i]
        return order[np.asarray(keep, dtype=np.intp)]
    for i in range(n):
        if not alive[i]:
            continue
        keep.append(i)
        rest = np.flatnonzero(alive[i + 1 :]) + i + 1
        if len(rest):
            alive[rest[suppresses(iou_one_to_many(b[i], b[rest]), thr)]] = False
    return order[np.asarray(keep, dtype=np.intp)]


#: rounds of the all-classes-at-once greedy NMS before crowded classes switch to all pairs
NMS_ROUNDS = 8


def plain_edges(boxes: np.ndarray) -> tuple[np.ndarray, bool]:
    """:func:`edges` of (N, 4) x1y1x2y2 boxes, and whether all of them are plain: corners within
    +-1e18 pixels, right > left, bottom > top and an area of at least the smallest normal float32.
    For plain boxes nvinfer's ``overlap1D`` is ``max(0, min(rights) - max(lefts))``, the union is never
    0 and nothing overflows, so :func:`iou_plain` gives its IoU bit for bit with fewer operations and
    no float warnings. (Corners within 1e18 are checked first: then the edges cannot overflow either,
    and they are computed without switching numpy's error state, which costs microseconds.)"""
    b = np.asarray(boxes, np.float32)
    if not len(b):
        return _edges(b), True
    if not (b.max() < _FAR and b.min() > -_FAR):  # NaN compares False, without a warning
        return edges(b), False
    e = _edges(b)
    return e, bool((e[2:4] > e[0:2]).all() and e[4].min() >= _TINY)


_TINY = np.finfo(np.float32).tiny
_FAR = np.float32(1e18)


def iou_plain(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of :func:`edges` arrays of plain boxes (:func:`plain_edges`), same float32 result as
    :func:`iou_edges`."""
    side = np.minimum(a[2:4], b[2:4])
    side -= np.maximum(a[0:2], b[0:2])
    np.maximum(side, 0, out=side)
    inter = side[0] * side[1]
    union = a[4] + b[4]
    union -= inter
    return np.divide(inter, union, out=inter)


def greedy_same_class(
    boxes: np.ndarray, cls: np.ndarray, thr: np.ndarray | np.float32
) -> np.ndarray:
    """Greedy NMS over boxes sorted by class, then descending score: the indices kept, ascending.
    ``thr``: the IoU threshold, one per box or one for all.

    All classes advance together, one kept box per class per round: in each class the first box
    not yet decided is kept (everything before it is decided, and no kept box suppressed it), and
    the IoU of that box with the class's undecided rest (one vectorised call for all classes)
    suppresses those above the threshold. That is exactly nvinfer's box-by-box loop; a round costs
    one pass over the undecided boxes, so the usual few kept boxes per class take a few passes.
    Boxes still undecided after ``NMS_ROUNDS`` rounds (crowds) finish with :func:`greedy_pairs`."""
    e, plain = plain_edges(boxes)
    per_box = isinstance(thr, np.ndarray) and thr.ndim > 0
    if plain:  # plain boxes raise no float warnings
        kept, undecided = _rounds(e, cls, thr, per_box, iou_plain)
    else:
        with quiet():
            kept, undecided = _rounds(e, cls, thr, per_box, iou_edges)
    if len(undecided):
        kept.append(
            undecided[
                greedy_pairs(boxes[undecided], cls[undecided], thr[undecided] if per_box else thr)
            ]
        )
    out = np.concatenate(kept)
    out.sort()
    return out


def _rounds(
    e: np.ndarray, cls: np.ndarray, thr: np.ndarray | np.float32, per_box: bool, iou_of
) -> tuple[list[np.ndarray], np.ndarray]:
    """Up to ``NMS_ROUNDS`` rounds of :func:`greedy_same_class`: the kept boxes of each round and the
    boxes still undecided."""
    start = np.searchsorted(cls, cls)  # where each box's class starts in the sorted order
    undecided = np.arange(len(cls))
    kept = [undecided[:0]]
    for r in range(NMS_ROUNDS):
        # each undecided box's class top: the first undecided box at or after its class start
        top_of = undecided[np.searchsorted(undecided, start[undecided])] if r else start
        first = top_of == undecided
        tops = undecided[first]
        kept.append(tops)
        if len(tops) == len(undecided):
            return kept, undecided[:0]
        iou = iou_of(e.take(top_of, axis=1), e if r == 0 else e.take(undecided, axis=1))
        stay = iou <= (thr[undecided] if per_box else thr)
        stay[first] = False
        undecided = undecided[stay]
    return kept, undecided


def greedy_pairs(boxes: np.ndarray, cls: np.ndarray, thr: np.ndarray) -> np.ndarray:
    """Greedy NMS over boxes sorted by class, then descending score: indices kept, ascending.

    The IoU of every same-class pair ``(i, j)``, ``i < j`` (the only ones that can suppress) comes
    from one vectorised call; then only boxes that suppress something are visited, in order: a box
    still alive when visited is kept and suppresses its partners. Boxes that suppress nothing are
    kept exactly when nothing before them suppressed them, so this equals the box-by-box loop."""
    n = len(cls)
    later = np.searchsorted(cls, cls, side="right") - np.arange(n) - 1  # same-class boxes after i
    rows = np.repeat(np.arange(n), later)
    if not len(rows):
        return np.arange(n)
    first = np.cumsum(later) - later  # where row i's pairs start
    cols = rows + 1 + (np.arange(len(rows)) - np.repeat(first, later))
    e, plain = plain_edges(boxes)
    iou_of = iou_plain if plain else iou_edges
    with quiet():
        hit = suppresses(
            iou_of(e.take(rows, axis=1), e.take(cols, axis=1)), thr[rows] if np.ndim(thr) else thr
        )
    rows, cols = rows[hit], cols[hit]
    alive = np.ones(n, bool)
    if len(rows):
        suppressors, at = np.unique(rows, return_index=True)
        bounds = np.append(at, len(rows))
        for k, i in enumerate(suppressors.tolist()):
            if alive[i]:
                alive[cols[bounds[k] : bounds[k + 1]]] = False
    return np.flatnonzero(alive)


def suppression_pairs(
    boxes: np.ndarray, group: np.ndarray, floor: float, max_pairs: int = 1 << 20
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of boxes that greedy NMS at any IoU threshold ``>= floor`` could suppress, with
    their IoU: every ``(i, j)``, ``i < j``, of the same group (``group``: ascending, e.g. frame and
    class; the boxes of a group in greedy order) whose nvinfer IoU (float32, as :func:`iou_matrix`)
    is not ``<= floor`` (NaN included: it suppresses at every threshold). Returns ``src`` (the
    earlier box), ``dst`` (int64 indices) and ``iou`` (float32), in no particular order. Works
    through at most ``max_pairs`` pairs at a time (memory). With :func:`greedy_graph` this is
    :func:`greedy_same_class` for many thresholds: a threshold's pairs are ``~(iou <= threshold)``.

    For plain boxes (:func:`plain_edges`) and ``floor >= 0`` only pairs that overlap along x are
    looked at (a sweep over each group's boxes sorted by left edge): the others have IoU 0."""
    n = len(group)
    e, plain = plain_edges(boxes)
    group = np.asarray(group, np.int64)
    if plain and floor >= 0 and n and 0 <= group.min() and group.max() < 2**31:
        # (group, left edge) as one int64, ordered as the pair: float32 -> int32 in float order
        key = (group << 32) + _ordered(e[0])
        perm = np.argsort(key)
        key = key[perm]
        reach = (group[perm] << 32) + _ordered(e[2][perm])  # (group, right edge)
        later = np.searchsorted(key, reach, side="left") - np.arange(n) - 1
        later = np.maximum(later, 0)
    else:
        perm = None
        later = np.searchsorted(group, group, side="right") - np.arange(n) - 1
    ends = np.cumsum(later)
    iou_of = iou_plain if plain else iou_edges
    thr = np.float32(floor)
    src, dst, ious = [], [], []
    a = 0
    while a < n:
        done = int(ends[a - 1]) if a else 0
        b = max(int(np.searchsorted(ends, done + max_pairs, side="right")), a + 1)
        cnt = later[a:b]
        rows = np.repeat(np.arange(a, b), cnt)
        if len(rows):
            first = np.cumsum(cnt) - cnt
            cols = rows + 1 + (np.arange(len(rows)) - np.repeat(first, cnt))
            if perm is not None:  # overlapping along x: keep those overlapping along y too
                rows, cols = perm[rows], perm[cols]
                rows, cols = np.minimum(rows, cols), np.maximum(rows, cols)
                top, bottom = e[1], e[3]
                y = (top[rows] < bottom[cols]) & (top[cols] < bottom[rows])
                rows, cols = rows[y], cols[y]
            with quiet():
                iou = iou_of(e.take(rows, axis=1), e.take(cols, axis=1))
            hit = ~(iou <= thr)
            src.append(rows[hit])
            dst.append(cols[hit])
            ious.append(iou[hit])
        a = b
    if not src:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(src), np.concatenate(dst), np.concatenate(ious).astype(np.float32)


def _ordered(v: np.ndarray) -> np.ndarray:
    """Finite float32 values as int64 in ``[0, 2**32)``, in the same order (-0.0 == 0.0)."""
    bits = (np.asarray(v, np.float32) + np.float32(0)).view(np.int32)
    mono = bits ^ ((bits >> 31) & 0x7FFFFFFF)
    return mono.astype(np.int64) + 2**31


def greedy_graph(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Greedy NMS from its suppression pairs: boxes ``0 .. n-1`` in greedy order (each group's boxes
    by descending score), ``src[k] < dst[k]``: box ``src[k]`` suppresses ``dst[k]`` when kept.
    Returns the kept mask, exactly the box-by-box loop's: a box is kept when none of the kept boxes
    before it suppresses it.

    Decided in rounds, all groups at once: a box whose suppressors were all dropped is kept, a box
    with a kept suppressor is dropped; each round decides at least the first undecided box of every
    group, so the rounds are as many as the longest chain of boxes suppressing each other."""
    state = np.zeros(n, np.int8)  # 0 undecided, 1 kept, 2 dropped
    blocked = np.zeros(n, bool)
    blocked[dst] = True
    undecided = np.flatnonzero(blocked)
    state[~blocked] = 1
    blocked[dst] = False
    src, dst = np.asarray(src), np.asarray(dst)
    while len(undecided):
        state[dst[state[src] == 1]] = 2
        live = (state[src] != 2) & (state[dst] == 0)
        src, dst = src[live], dst[live]
        undecided = undecided[state[undecided] == 0]
        blocked[dst] = True
        free = undecided[~blocked[undecided]]
        blocked[dst] = False
        state[free] = 1
        undecided = undecided[state[undecided] == 0]
    return state == 1
