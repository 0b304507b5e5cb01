"""Every decoded frame's candidates at a search's lowest pre-cluster threshold, flat, for re-clustering
many settings on the CPU without a per-frame (or per-class) Python loop.

:class:`FloorCandidates` runs ``filter:threshold`` at the floor on each frame once and keeps the
survivors flat: frame rows ascending, each frame's boxes by class, then descending score (the order
``cluster:nms`` visits and emits them in). Then:

* :meth:`FloorCandidates.nms` gives the boxes ``cluster:nms`` keeps at an IoU threshold (top-k -1,
  no post-cluster threshold, as the :class:`~dsprobe.analysis.search.Reclusterer` asks) for every
  frame at once: the IoU of every same-frame, same-class pair that could suppress at any threshold
  of the search is computed once (:func:`~dsprobe.postprocess.iou.suppression_pairs`, nvinfer's
  float32 IoU, bit-identical to the per-frame NMS), and each threshold's greedy NMS runs on those
  pairs (:func:`~dsprobe.postprocess.iou.greedy_graph`). A setting with a lower threshold than the
  pairs were kept for computes them again.
* :meth:`FloorCandidates.scaled` runs the per-box steps after clustering (scale, object filters) once
  on every candidate, one call per run of frames with the same context: each box's result does not
  depend on the other boxes, so every clustering setting takes its boxes from there.

Memory: O(candidates + suppressing pairs), flat arrays only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from dsprobe.detections import Detections
from dsprobe.postprocess.cluster import class_score_order, scalar
from dsprobe.postprocess.iou import greedy_graph, suppression_pairs
from dsprobe.postprocess.pipeline import Postprocess


@dataclass
class Scaled:
    """The per-box steps after clustering run on every floor candidate: the survivors (flat, in
    floor order) as ``dets`` with their frame ``rows`` and ``tags`` (floor positions)."""

    dets: Detections
    rows: np.ndarray
    tags: np.ndarray


class FloorCandidates:
    """The candidates ``pp``'s ``filter:threshold`` keeps at ``floor`` on every frame of ``decoded``
    (a :class:`~dsprobe.postprocess.replay.DecodedRecording`), flat (see the module doc)."""

    def __init__(self, decoded: Any, pp: Postprocess, floor: float) -> None:
        self.floor = floor
        self.rows_order = sorted(decoded.candidates)
        self.contexts = [decoded.contexts[r] for r in self.rows_order]
        base = pp.with_params(1, pre_cluster_threshold=floor)
        parts = []
        for r in self.rows_order:
            d = base.run({}, decoded.contexts[r], start=1, stop=2, dets=decoded.candidates[r])
            parts.append(d[class_score_order(d.scores, d.class_ids)])
        counts = np.array([len(d) for d in parts], np.int64)
        self.bounds = np.r_[0, np.cumsum(counts)]
        self.rows = np.repeat(np.asarray(self.rows_order, np.int64), counts)
        self.dets = Detections.concatenate(parts) if parts else Detections.empty()
        self.max_class = int(self.dets.class_ids.max()) if len(self.dets) else -1
        # one int per (frame, class) run, ascending in floor order (the threshold step keeps class
        # ids >= 0)
        frame = np.repeat(np.arange(len(parts), dtype=np.int64), counts)
        self.group = frame * (self.max_class + 1) + self.dets.class_ids.astype(np.int64)
        self._pairs: tuple[float, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._scaled: dict[str, Scaled] = {}
        self.iou_floor: float | None = None  # keep pairs for thresholds down to this

    def __len__(self) -> int:
        return len(self.dets)

    def covers(self, iou_threshold: Any) -> bool:
        """Whether :meth:`nms` runs here for this (scalar or per-class) threshold: a per-class list
        must name every class present (else the per-frame step raises its own error)."""
        return scalar(iou_threshold) or len(iou_threshold) > self.max_class

    def pairs(self, lowest: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The suppressing pairs for thresholds down to ``lowest`` (computed again when lower)."""
        if self._pairs is None or self._pairs[0] > lowest:
            keep_for = lowest if self.iou_floor is None else min(lowest, self.iou_floor)
            src, dst, iou = suppression_pairs(self.dets.boxes, self.group, keep_for)
            self._pairs = (keep_for, src, dst, iou)
        return self._pairs[1:]

    def nms(self, iou_threshold: Any) -> np.ndarray:
        """The mask of floor candidates ``cluster:nms`` keeps with ``iou_threshold`` (scalar or per
        class), top-k -1 and no post-cluster threshold, on every frame."""
        if scalar(iou_threshold):
            thr = np.float32(iou_threshold)
            src, dst, iou = self.pairs(float(thr))
            hit = ~(iou <= thr)
        else:
            per_class = np.asarray(iou_threshold, np.float32)
            src, dst, iou = self.pairs(float(per_class.min()))
            hit = ~(iou <= per_class[self.dets.class_ids[src]])
        return greedy_graph(len(self.dets), src[hit], dst[hit])

    def scaled(self, pp: Postprocess, key: str) -> Scaled:
        """``pp``'s steps after clustering on every floor candidate (cached under ``key``)."""
        if key in self._scaled:
            return self._scaled[key]
        n = len(self.dets)
        tagged = replace(self.dets, object_ids=np.arange(n, dtype=np.uint64))
        outs, tags = [], []
        for a, b, ctx in self._context_runs():
            part = tagged[self.bounds[a] : self.bounds[b]]
            out = pp.run({}, ctx, start=3, dets=part) if len(pp.steps) > 3 else part
            outs.append(out)
            tags.append(out.object_ids.astype(np.int64))
        t = np.concatenate(tags) if tags else np.zeros(0, np.int64)
        out = Detections.concatenate(outs) if outs else self.dets
        orig = self.dets.object_ids
        value = Scaled(replace(out, object_ids=None if orig is None else orig[t]), self.rows[t], t)
        self._scaled = {key: value}  # one at a time: a search moves on to the next
        return value

    def _context_runs(self) -> list[tuple[int, int, Any]]:
        """``(first, end, context)`` of each run of frames (positions in ``rows_order``) with equal
        contexts."""
        runs: list[tuple[int, int, Any]] = []
        for i, ctx in enumerate(self.contexts):
            if runs and (ctx is runs[-1][2] or ctx == runs[-1][2]):
                runs[-1] = (runs[-1][0], i + 1, runs[-1][2])
            else:
                runs.append((i, i + 1, ctx))
        return runs
