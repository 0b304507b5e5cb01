"""Scoring threshold sweeps fast: a COCO match table of a whole recording built on the GPU, and the mAP
of every confidence cut of it from per-class prefix sums.

* :func:`match_table_gpu` gives exactly :func:`dsprobe.analysis.objectives.match_table_of` (the
  :class:`~dsprobe.analysis.objectives.Matches` of per-frame COCO matching) for flat detections and
  ground truth of many frames: one GPU thread per (frame, class, IoU threshold) runs
  :func:`dsprobe.analysis.errors.frame_matches`' greedy loop (detections by descending score, each
  takes the unmatched ground truth of its class with the highest IoU >= the threshold, the last one
  on ties), IoU in float64 as :func:`dsprobe.analysis.evaluate.box_iou`.
* :class:`ThresholdSweep` gives ``average_precision(t.cut(threshold))`` for any threshold without
  cutting: a cut keeps a prefix of each class's score-ordered detections (COCO matching visits them
  in that order, see :mod:`dsprobe.analysis.objectives`), and the cumulative sums of a prefix are a
  prefix of the cumulative sums. Same float64 operations, same result.

A search over 100,000 frames then costs one match table per clustering setting and a few
milliseconds per threshold (``benchmarks/bench_gpu.py``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dsprobe.analysis.objectives import COCO_IOUS, Matches

_REC_POINTS = np.linspace(0.0, 1.0, 101)

_SOURCE = r"""
__device__ __forceinline__ double np_max(double a, double b) { return (a != a || b != b) ? a + b : (a > b ? a : b); }
__device__ __forceinline__ double np_min(double a, double b) { return (a != a || b != b) ? a + b : (a < b ? a : b); }
__device__ __forceinline__ double clip0(double v) { return v != v ? v : (v < 0.0 ? 0.0 : v); }

/* box_iou of x1y1x2y2 boxes in float64, union <= 0 -> 0 */
__device__ double iou64(const double* a, const double* b) {
    double w = clip0(np_min(a[2], b[2]) - np_max(a[0], b[0]));
    double h = clip0(np_min(a[3], b[3]) - np_max(a[1], b[1]));
    double inter = w * h;
    double aa = clip0(a[2] - a[0]) * clip0(a[3] - a[1]);
    double ab = clip0(b[2] - b[0]) * clip0(b[3] - b[1]);
    double uni = aa + ab - inter;
    return uni > 0.0 ? inter / uni : 0.0;
}

/* one thread per (segment, IoU threshold): COCO's greedy matching of a (frame, class) run */
extern "C" __global__ void match_segments(
    const double* det, const int* dstart, const int* dlen, const int* gstart, const int* glen,
    int nseg, const double* gt, const double* thr, int T, unsigned char* used, long long* out)
{
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (long long)nseg * T) return;
    int s = (int)(t / T), k = (int)(t - (long long)s * T);
    int ds = dstart[s], dn = dlen[s], gs = gstart[s], gn = glen[s];
    double floor_ = thr[k] < 1.0 - 1e-10 ? thr[k] : 1.0 - 1e-10;
    for (int d = 0; d < dn; ++d) {
        double best = -1.0; int g = -1;
        for (int j = 0; j < gn; ++j) {
            double c = used[(long long)(gs + j) * T + k] ? -1.0 : iou64(det + 4LL * (ds + d), gt + 4LL * (gs + j));
            if (c >= best) { best = c; g = j; }
        }
        long long o = (long long)(ds + d) * T + k;
        if (g >= 0 && best >= floor_) { out[o] = gs + g; used[(long long)(gs + g) * T + k] = 1; }
        else out[o] = -1;
    }
}
"""

_MODULE: list[Any] = []


def _kernel() -> Any:
    if not _MODULE:
        import cupy

        from dsprobe.postprocess.gpu.kernels import OPTIONS

        _MODULE.append(cupy.RawModule(code=_SOURCE, options=OPTIONS))
    return _MODULE[0].get_function("match_segments")


#: segment key = row * KEY_ROW + class id (class ids below 2**20)
KEY_ROW = 1 << 20


def _segments(cp: Any, key: Any) -> tuple[Any, Any, Any]:
    """Each run of equal values of a sorted key array: its key, start and length."""
    if not key.shape[0]:
        z = cp.zeros(0, np.int64)
        return z, z.astype(np.int32), z.astype(np.int32)
    new = cp.empty(key.shape[0], bool)
    new[0] = True
    new[1:] = key[1:] != key[:-1]
    start = cp.flatnonzero(new)
    length = cp.diff(cp.append(start, key.shape[0]))
    return key[start], start.astype(np.int32), length.astype(np.int32)


def _keys(rows: np.ndarray, classes: np.ndarray, what: str) -> np.ndarray:
    rows, classes = np.asarray(rows, np.int64), np.asarray(classes, np.int64)
    if len(rows) and (rows.min() < 0 or classes.min() < 0 or classes.max() >= KEY_ROW):
        raise ValueError(f"match_table_gpu: {what} rows and class ids must be in [0, 2**20)")
    return rows * KEY_ROW + classes


class GpuGroundTruth:
    """Ground truth of many frames on the GPU, grouped by (frame row, class) once, to match many
    detection sets against (one per clustering setting of a search)."""

    def __init__(self, rows: np.ndarray, boxes: np.ndarray, class_ids: np.ndarray) -> None:
        import cupy as cp

        key = _keys(rows, class_ids, "ground-truth")
        order = np.argsort(key, kind="stable")  # ground-truth order kept within (row, class)
        self.key, self.start, self.length = _segments(cp, cp.asarray(key[order]))
        self.boxes = cp.asarray(np.asarray(boxes, np.float64).reshape(-1, 4)[order])
        self.size = len(order)
        cls, counts = np.unique(np.asarray(class_ids, np.int64), return_counts=True)
        self.num_gt = {int(c): int(k) for c, k in zip(cls, counts)}

    def match(
        self,
        rows: np.ndarray,
        boxes: np.ndarray,
        scores: np.ndarray,
        class_ids: np.ndarray,
        num_frames: int,
        iou_thresholds: Sequence[float] = COCO_IOUS,
    ) -> Matches:
        """:func:`match_table_gpu` of these detections against this ground truth."""
        import cupy as cp

        thr = np.asarray(iou_thresholds, np.float64)
        T = len(thr)
        dkey, dstart, dlen = _segments(cp, cp.asarray(_keys(rows, class_ids, "detection")))
        nseg, ng = int(dkey.shape[0]), int(self.key.shape[0])
        out = cp.full((len(scores), T), -1, np.int64)
        if nseg and ng:
            at = cp.minimum(cp.searchsorted(self.key, dkey), ng - 1)
            hit = self.key[at] == dkey
            gs = cp.where(hit, self.start[at], 0).astype(np.int32)
            gl = cp.where(hit, self.length[at], 0).astype(np.int32)
            det = cp.asarray(np.asarray(boxes, np.float64).reshape(-1, 4))
            used = cp.zeros((self.size, T), np.uint8)
            args = (det, dstart, dlen, gs, gl, np.int32(nseg), self.boxes, cp.asarray(thr))
            threads = nseg * T
            _kernel()(((threads + 127) // 128,), (128,), (*args, np.int32(T), used, out))
        return Matches(
            np.asarray(scores, np.float32).astype(np.float64),
            np.asarray(class_ids, np.int64),
            out.get() >= 0,
            dict(self.num_gt),
            num_frames,
            thr,
            np.asarray(rows, np.int64),
        )


def match_table_gpu(
    rows: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray,
    class_ids: np.ndarray,
    gt_rows: np.ndarray,
    gt_boxes: np.ndarray,
    gt_class_ids: np.ndarray,
    num_frames: int,
    iou_thresholds: Sequence[float] = COCO_IOUS,
) -> Matches:
    """The :class:`Matches` that ``match_table_of`` gives for these frames: detections flat (``rows``
    ascending; within a row by class, then descending score, as a Postprocess emits them), ground
    truth flat (any order; boxes x1y1x2y2 frame px). ``num_frames``: frames scored. To match many
    detection sets against one ground truth, make a :class:`GpuGroundTruth` once."""
    gt = GpuGroundTruth(gt_rows, gt_boxes, gt_class_ids)
    return gt.match(rows, boxes, scores, class_ids, num_frames, iou_thresholds)


def sweep_order_gpu(t: Matches) -> np.ndarray:
    """The order :class:`ThresholdSweep` sorts ``t`` in (class, then descending score, stable),
    computed with two stable sorts on the GPU."""
    import cupy as cp

    o1 = cp.argsort(cp.asarray(-t.scores))  # CuPy's sorts are stable
    o2 = cp.argsort(cp.asarray(np.asarray(t.class_ids, np.int64))[o1])
    return o1[o2].get()


class ThresholdSweep:
    """``mean_ap(t.cut(threshold), ...)`` for many thresholds of one :class:`Matches` ``t``: each class's
    detections sorted once (descending score, stable, as ``average_precision``), with cumulative
    true / false positives; a cut is a prefix of each."""

    def __init__(self, t: Matches, order: np.ndarray | None = None) -> None:
        self.t = t
        self.classes = sorted(set(t.num_gt) | set(np.unique(t.class_ids).tolist()))
        # class by class, descending score, stable: what average_precision's per-class mergesort
        # gives (``order``: the same order computed elsewhere, e.g. sweep_order_gpu)
        order = np.lexsort((-t.scores, t.class_ids)) if order is None else order
        self._cls = t.class_ids[order]
        self._neg = -t.scores[order]
        self._order = order
        self._sums: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _cumsums(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative true / false positives at IoU threshold ``i`` over the sorted detections (whole
        counts in float64: a class's sums are differences of these, exactly)."""
        if i not in self._sums:
            tp = self.t.tp[self._order, i].astype(np.float64)
            fp = self.t.fp(i)[self._order].astype(np.float64)
            self._sums[i] = (
                np.concatenate([[0.0], np.cumsum(tp)]),
                np.concatenate([[0.0], np.cumsum(fp)]),
            )
        return self._sums[i]

    def average_precision(self, threshold: float, iou_index: int = 0) -> dict[int, float]:
        """``objectives.average_precision(t.cut(threshold), iou_index)``."""
        out = {}
        for c in self.classes:
            n = self.t.num_gt.get(c, 0)
            if n == 0:
                out[c] = float("nan")
                continue
            lo = int(np.searchsorted(self._cls, c, side="left"))
            hi = int(np.searchsorted(self._cls, c, side="right"))
            k = int(np.searchsorted(self._neg[lo:hi], -float(threshold), side="right"))
            if k == 0:
                out[c] = 0.0
                continue
            ctp_all, cfp_all = self._cumsums(iou_index)
            ctp = ctp_all[lo + 1 : lo + k + 1] - ctp_all[lo]
            cfp = cfp_all[lo + 1 : lo + k + 1] - cfp_all[lo]
            rec = ctp / n
            prec = ctp / np.maximum(ctp + cfp, np.spacing(1))
            prec = np.maximum.accumulate(prec[::-1])[::-1]
            idx = np.searchsorted(rec, _REC_POINTS, side="left")
            q = np.where(idx < len(prec), prec[np.minimum(idx, len(prec) - 1)], 0.0)
            out[c] = float(q.mean())
        return out

    def mean_ap(self, threshold: float, iou_indices: Sequence[int] | None = None) -> float:
        """``objectives.mean_ap(t.cut(threshold), iou_indices)`` (default all: mAP@0.5:0.95)."""
        idx = range(len(self.t.iou_thresholds)) if iou_indices is None else iou_indices
        per = [[v for v in self.average_precision(threshold, i).values() if v == v] for i in idx]
        vals = [np.mean(p) for p in per if p]
        return float(np.mean(vals)) if vals else 0.0

    def map50(self, threshold: float) -> float:
        return self.mean_ap(threshold, [self.t.iou_index(0.5)])
