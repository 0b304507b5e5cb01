"""Fast re-runs and automatic parameter search: decode once, then re-run threshold / clustering /
scaling for many settings and score each against ground truth (or a reference set of detections).

:class:`Reclusterer` re-runs a :class:`~dsprobe.postprocess.pipeline.Postprocess` on cached decoder
output and returns exactly what ``DecodedRecording.run`` returns, faster. For the usual nvinfer chain
``decode -> filter:threshold -> cluster:nms|none -> per-box steps`` it clusters every frame once per
clustering setting at the lowest threshold asked for, and gets each pre-cluster threshold, post-cluster
threshold and top-k from that by masking. That is exact because the threshold step comes first and
greedy NMS visits boxes by descending score: a box's fate depends only on higher-scoring boxes, so
dropping every box below a threshold never changes the fate of the others; top-k and the
post-cluster threshold also only cut each class's score-ordered list. Any other chain falls back to
running the steps. On the CPU all frames are clustered at once from flat arrays, every IoU setting
from one set of overlapping pairs, and the per-box steps run once for all settings
(:mod:`dsprobe.analysis.floor`); ``per_frame=True`` keeps the frame-by-frame steps as a reference.

:func:`search` scores each setting with COCO mAP (pycocotools' numbers, computed by
:mod:`dsprobe.analysis.matching`): the boxes of every clustering at the floor share one
:class:`~dsprobe.analysis.matching.MatchPlan` (COCO order, pairs with ground truth, IoUs), each
clustering is matched once, and each threshold cut is accumulated from prefix sums
(:class:`~dsprobe.analysis.accumulation.CutAccumulator`; exact for the same reason: COCO matches and
accumulates detections in descending score order). A cut that is not a low-score prefix of every
class (top-k) is accumulated from the clustering's match table, or matched afresh when it is not a
low-score suffix of every (frame, class).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from dsprobe.analysis.accumulation import accumulate
from dsprobe.analysis.evaluate import (
    EvalResult,
    GroundTruth,
    check_recording_ground_truth,
    coco_scores,
    empty_result,
    evaluate,
    frame_image_id,
)
from dsprobe.analysis.floor import FloorCandidates, Scaled
from dsprobe.analysis.matching import MatchPlan, match_table
from dsprobe.detections import Detections
from dsprobe.postprocess.cluster import per_row as values_per_row
from dsprobe.postprocess.gpu.backend import resolve_device
from dsprobe.postprocess.gpu.recluster import LazyRows
from dsprobe.postprocess.params import plain
from dsprobe.postprocess.pipeline import Postprocess, PostprocessError
from dsprobe.postprocess.registry import one_line
from dsprobe.postprocess.replay import DecodedRecording

#: params the fast path gets by masking instead of re-clustering
MASKED_PARAMS = ("pre_cluster_threshold", "post_cluster_threshold", "topk")
#: steps after clustering that act box by box (so they commute with masking)
_PER_BOX_STEPS = {
    ("scale", "nvinfer"),
    ("scale", "ultralytics"),
    ("scale", "none"),
    ("filter", "objects"),
    ("filter", "threshold"),
}
_MASKABLE_CLUSTERS = ("nms", "none")


# ---------------------------------------------------------------------------------------------- re-running
@dataclass
class _Clustered:
    """Every frame clustered with a pre-cluster threshold of ``floor``, no top-k, no post-cluster
    threshold: boxes in network pixels, flat over frames in cluster output order. ``source``: the
    floor candidates and the mask of those kept (CPU); ``per_row`` / ``offsets``: per frame (the
    per-frame path)."""

    floor: float
    per_row: Mapping[int, Detections] | None
    offsets: dict[int, int] | None
    scores: np.ndarray
    class_ids: np.ndarray
    group_start: np.ndarray  # flat index of the first box of each box's (frame, class) run
    on_device: Any = None  # the clustered boxes on the GPU (device="cuda")
    source: tuple[FloorCandidates, np.ndarray] | None = None


@dataclass
class Selection:
    """The boxes a setting keeps, over every frame: the boxes that survive the per-box steps after
    clustering (flat, frame row order: ``rows``, ``boxes`` frame px, ``scores``, ``class_ids``)
    and ``keep``, a mask over them. ``per_row``: ``{row: (Detections, flat indices)}``."""

    rows: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    per_row: Mapping[int, tuple[Detections, np.ndarray]]
    keep: np.ndarray
    key: str = ""
    base: tuple[Scaled, np.ndarray] | None = None  # these boxes are base[0]'s rows base[1]

    def detections(self) -> dict[int, Detections]:
        return {r: d[self.keep[idx]] for r, (d, idx) in self.per_row.items()}


def _key(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=plain)


class Reclusterer:
    """Re-runs postprocess settings on decoded candidates (``pp.decode_recording(rec)``), exactly as
    ``DecodedRecording.run`` would, with cached clustering for the nvinfer chain (see module doc).

    ``floor``: the lowest pre-cluster threshold to cluster at when a setting first needs clustering
    (lower requests re-cluster; default: the requested threshold). ``max_cached`` clusterings are kept.
    ``device="cuda"``: clustering and scaling run on the GPU for all frames at once
    (:mod:`dsprobe.postprocess.gpu.recluster`, same results; CPU with one warning when no GPU).
    On the CPU every frame is clustered at once from flat arrays (:mod:`dsprobe.analysis.floor`);
    ``per_frame=True`` runs the steps frame by frame instead (the slow reference the flat path is
    tested and benchmarked against; :func:`search` then also scores every cut by matching).
    """

    def __init__(
        self,
        decoded: DecodedRecording,
        floor: float | None = None,
        max_cached: int = 8,
        device: str = "cpu",
        per_frame: bool = False,
    ) -> None:
        self.decoded = decoded
        self.floor = floor
        self.max_cached = max_cached
        self.per_frame = per_frame
        self.device = resolve_device(device)
        self._gpu = None
        if self.device == "cuda":
            from dsprobe.postprocess.gpu.recluster import GpuCandidates

            self._gpu = GpuCandidates(decoded)
        self._clustered: dict[str, _Clustered] = {}
        self._scaled: dict[str, tuple[Any, ...]] = {}
        self._floors: tuple[str, FloorCandidates] | None = None
        #: keep NMS pairs for IoU thresholds down to this (a search sets its lowest)
        self.iou_floor: float | None = None
        self.cluster_runs = (
            0  # how many whole-recording clusterings were computed (for tests / benchmarks)
        )

    @property
    def rows(self) -> list[int]:
        return sorted(self.decoded.candidates)

    # ---------------------------------------------------------------- plan
    def fast_path(self, pp: Postprocess) -> bool:
        """True when ``pp`` is ``decode -> filter:threshold -> cluster:nms|none -> per-box steps``."""
        s = pp.steps
        return (
            len(s) >= 3
            and (s[1].kind, s[1].name) == ("filter", "threshold")
            and s[2].kind == "cluster"
            and s[2].name in _MASKABLE_CLUSTERS
            and all((t.kind, t.name) in _PER_BOX_STEPS for t in s[3:])
        )

    def _check_decoder(self, pp: Postprocess) -> None:
        if pp.steps[0].to_dict() != self.decoded.postprocess.steps[0].to_dict():
            raise PostprocessError(
                "the cached candidates come from another decode step; decode again "
                f"(cached {self.decoded.postprocess.steps[0].to_dict()}, "
                f"asked {pp.steps[0].to_dict()})"
            )

    # ---------------------------------------------------------------- running
    def run(self, pp: Postprocess) -> dict[int, Detections]:
        """``{frame row: Detections}`` (frame px), identical to ``decoded.run(pp)``."""
        self._check_decoder(pp)
        if not self.fast_path(pp):
            return self.decoded.run(pp)
        return self.select(pp).detections()

    def select(self, pp: Postprocess) -> Selection:
        """The boxes ``pp`` keeps as a :class:`Selection` (fast path only)."""
        self._check_decoder(pp)
        if not self.fast_path(pp):
            raise PostprocessError(
                f"{pp}: no fast path (needs decode -> filter:threshold -> cluster:nms|none "
                "-> scale/filter steps)"
            )
        thr = pp.resolved_params(1)["pre_cluster_threshold"]
        cl = self._clustering(pp, float(np.min(thr)))
        key = self._post_key(pp, cl)
        rows, boxes, scores, classes, tags, per_row, base = self._scaled.get(key) or self._scale(
            pp, cl, key
        )
        cparams = pp.steps[2].params
        mask = cl.scores >= _per_box(thr, cl.class_ids, "pre_cluster_threshold")
        if pp.steps[2].name == "nms":
            post = cparams.get("post_cluster_threshold", 0.0)
            mask &= cl.scores > _per_box(post, cl.class_ids, "post_cluster_threshold")
        topk = _per_box(cparams.get("topk", -1), cl.class_ids, "topk", np.int64)
        if len(mask) and np.any(topk >= 0):
            csum = np.cumsum(mask)
            rank = csum - (
                csum[cl.group_start] - mask[cl.group_start]
            )  # 1-based rank among kept in run
            mask &= (topk < 0) | (rank <= topk)
        return Selection(rows, boxes, scores, classes, per_row, mask[tags], key, base)

    def selection_key(self, pp: Postprocess) -> str:
        """``select(pp).key`` without selecting: settings with the same key select from the same
        boxes (fast path only)."""
        thr = pp.resolved_params(1)["pre_cluster_threshold"]
        return self._post_key(pp, self._clustering(pp, float(np.min(thr))))

    def score_cut(
        self, pp: Postprocess, ignore_topk: bool = False
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """When all that ``select(pp).keep`` applies is a score cut (no top-k): the float32
        thresholds per class id, ``(pre, post)``, that it keeps boxes at (``score >= pre`` and
        ``score > post``), covering every class clustered; else None. ``ignore_topk``: the
        thresholds of ``pp`` as if it had no top-k (a caller checks whether its top-k cuts)."""
        if not self.fast_path(pp):
            return None
        thr = pp.resolved_params(1)["pre_cluster_threshold"]
        cl = self._clustering(pp, float(np.min(thr)))
        n = int(cl.class_ids.max()) + 1 if len(cl.class_ids) else 1
        cparams = pp.steps[2].params
        topk = _class_table(cparams.get("topk", -1), n, np.int64)
        if topk is None or (np.any(topk >= 0) and not ignore_topk):
            return None
        pre = _class_table(thr, n)
        post = (
            _class_table(cparams.get("post_cluster_threshold", 0.0), n)
            if pp.steps[2].name == "nms"
            else np.full(n, -np.inf, np.float32)
        )
        return None if pre is None or post is None else (pre, post)

    def detections_frame(self, pp: Postprocess, labels: Sequence[str] = ()) -> pd.DataFrame:
        """Like ``Postprocess.run_recording``: one row per detection (row, source_id, frame_num, x1..y2,
        width, height, score, class_id[, label])."""
        if not self.fast_path(pp):
            from dsprobe.postprocess.replay import detections_frame

            return detections_frame(self.decoded.recording, self.run(pp), labels)
        sel = self.select(pp)
        return _selection_frame(self.decoded.recording, sel, sel.keep, labels)

    def counts(self, pp: Postprocess) -> pd.Series:
        """Detections per frame row (every decoded row, zeros included)."""
        rows = np.asarray(self.rows, np.int64)
        if self.fast_path(pp):
            sel = self.select(pp)
            kept_rows = sel.rows[sel.keep]
        else:
            per = self.run(pp)
            kept_rows = np.repeat(np.array(list(per), np.int64), [len(d) for d in per.values()])
        pos = np.searchsorted(rows, kept_rows)
        return pd.Series(
            np.bincount(pos, minlength=len(rows)),
            index=pd.Index(rows, name="row"),
            name="detections",
        )

    # ---------------------------------------------------------------- caches
    def _cluster_key(self, pp: Postprocess) -> str:
        thr = {k: v for k, v in pp.steps[1].params.items() if k != "pre_cluster_threshold"}
        cl = {k: v for k, v in pp.steps[2].params.items() if k not in MASKED_PARAMS}
        return _key([pp.steps[0].to_dict(), thr, pp.steps[2].name, cl])

    def _post_key(self, pp: Postprocess, cl: _Clustered) -> str:
        return _key([self._cluster_key(pp), cl.floor, [s.to_dict() for s in pp.steps[3:]]])

    def _clustering(self, pp: Postprocess, threshold: float) -> _Clustered:
        key = self._cluster_key(pp)
        cached = self._clustered.get(key)
        if cached is not None and cached.floor <= threshold:
            return cached
        floor = threshold if self.floor is None else min(threshold, self.floor)
        base = pp.with_params(1, pre_cluster_threshold=floor)
        base = base.with_params(
            2,
            topk=-1,
            **({"post_cluster_threshold": float("-inf")} if pp.steps[2].name == "nms" else {}),
        )
        if self._gpu is not None:
            per_row, offsets, scores_a, classes_a, row_a, kept = self._gpu.cluster(base)
            cl = _Clustered(
                floor, per_row, offsets, scores_a, classes_a, _run_starts(row_a, classes_a), kept
            )
            return self._remember(key, cl)
        iou = pp.steps[2].params.get("iou_threshold", 0.3)
        if not self.per_frame:
            fc = self._floor_candidates(pp, floor)
            if pp.steps[2].name == "none" or fc.covers(iou):
                kept = fc.nms(iou) if pp.steps[2].name == "nms" else np.ones(len(fc), bool)
                idx = np.flatnonzero(kept)
                classes_a = fc.dets.class_ids[idx]
                starts = _run_starts(fc.rows[idx], classes_a)
                cl = _Clustered(
                    floor, None, None, fc.dets.scores[idx], classes_a, starts, source=(fc, kept)
                )
                return self._remember(key, cl)
        per_row, offsets, scores, classes = {}, {}, [], []
        n = 0
        for r in self.rows:
            d = base.run(
                {}, self.decoded.contexts[r], start=1, stop=3, dets=self.decoded.candidates[r]
            )
            per_row[r], offsets[r] = d, n
            scores.append(d.scores)
            classes.append(d.class_ids)
            n += len(d)
        scores_a = np.concatenate(scores) if scores else np.zeros(0, np.float32)
        classes_a = np.concatenate(classes) if classes else np.zeros(0, np.int32)
        row_a = np.repeat(np.array(self.rows, np.int64), [len(d) for d in per_row.values()])
        cl = _Clustered(floor, per_row, offsets, scores_a, classes_a, _run_starts(row_a, classes_a))
        return self._remember(key, cl)

    def _floor_candidates(self, pp: Postprocess, floor: float) -> FloorCandidates:
        """The flat candidates at ``floor`` of ``pp``'s decoder and threshold step (the latest kept)."""
        thr = {k: v for k, v in pp.steps[1].params.items() if k != "pre_cluster_threshold"}
        key = _key([pp.steps[0].to_dict(), thr, floor])
        if self._floors is None or self._floors[0] != key:
            self._floors = (key, FloorCandidates(self.decoded, pp, floor))
        self._floors[1].iou_floor = self.iou_floor
        return self._floors[1]

    def _remember(self, key: str, cl: _Clustered) -> _Clustered:
        self.cluster_runs += 1
        if key in self._clustered:
            del self._clustered[key]
        self._clustered[key] = cl
        while len(self._clustered) > self.max_cached:
            del self._clustered[next(iter(self._clustered))]
        return cl

    def _scale(self, pp: Postprocess, cl: _Clustered, key: str) -> tuple:
        """Run the steps after clustering on every clustered box, tagged to follow survivors."""
        if self._gpu is not None and cl.on_device is not None and self._gpu.can_scale(pp):
            value = (*self._gpu.scale(pp, cl.on_device), None)
            self._scaled[key] = value
            while len(self._scaled) > self.max_cached:
                del self._scaled[next(iter(self._scaled))]
            return value
        if cl.source is not None:
            value = self._scale_floor(pp, cl)
            self._scaled[key] = value
            while len(self._scaled) > self.max_cached:
                del self._scaled[next(iter(self._scaled))]
            return value
        assert cl.per_row is not None and cl.offsets is not None
        rows, boxes, scores, classes, tags, per_row = [], [], [], [], [], {}
        n = 0
        for r, d in cl.per_row.items():
            off = cl.offsets[r]
            tagged = replace(d, object_ids=np.arange(off, off + len(d), dtype=np.uint64))
            out = (
                pp.run({}, self.decoded.contexts[r], start=3, dets=tagged)
                if len(pp.steps) > 3
                else tagged
            )
            t = out.object_ids.astype(np.int64)
            orig = d.object_ids
            out = replace(out, object_ids=None if orig is None else orig[t - off])
            per_row[r] = (out, np.arange(n, n + len(out)))
            n += len(out)
            rows.append(np.full(len(out), r, np.int64))
            boxes.append(out.boxes)
            scores.append(out.scores)
            classes.append(out.class_ids)
            tags.append(t)
        cat = lambda parts, shape, dt: np.concatenate(parts) if parts else np.zeros(shape, dt)  # noqa: E731
        value = (
            cat(rows, 0, np.int64),
            cat(boxes, (0, 4), np.float32),
            cat(scores, 0, np.float32),
            cat(classes, 0, np.int32),
            cat(tags, 0, np.int64),
            per_row,
            None,
        )
        self._scaled[key] = value
        while len(self._scaled) > self.max_cached:
            del self._scaled[next(iter(self._scaled))]
        return value

    def _scale_floor(self, pp: Postprocess, cl: _Clustered) -> tuple:
        """:meth:`_scale` from the floor candidates: the per-box steps ran once on all of them;
        this clustering's boxes are those whose candidate it kept."""
        assert cl.source is not None
        fc, kept = cl.source
        sc = fc.scaled(pp, _key([s.to_dict() for s in pp.steps[3:]]))
        idx = np.flatnonzero(kept[sc.tags])
        tags = (np.cumsum(kept) - 1)[sc.tags[idx]]
        d, rows = sc.dets[idx], sc.rows[idx]

        def make(row: int, a: int, b: int) -> tuple[Detections, np.ndarray]:
            return d[a:b], np.arange(a, b)

        return (
            rows,
            d.boxes,
            d.scores,
            d.class_ids,
            tags,
            LazyRows(self.rows, rows, make),
            (sc, idx),
        )


def _per_box(value: Any, classes: np.ndarray, name: str, dtype: type = np.float32) -> Any:
    """A per-class param for every box: ``values_per_row``, or one ``dtype`` scalar for a scalar
    (the same comparisons without an array per setting)."""
    if np.ndim(value) == 0:
        return dtype(value)
    return values_per_row(value, classes, name, dtype)


def _class_table(value: Any, n: int, dtype: type = np.float32) -> np.ndarray | None:
    """A scalar-or-per-class param as one ``dtype`` value per class id ``0 .. n-1`` (as ``_per_box``
    converts it), or None for a list too short for ``n`` classes."""
    if np.ndim(value) == 0:
        return np.full(n, dtype(value), dtype)
    arr = np.asarray(value, dtype)
    return arr if arr.ndim == 1 and len(arr) >= n else None


def _run_starts(row_a: np.ndarray, classes_a: np.ndarray) -> np.ndarray:
    """Flat index of the first box of each box's (frame, class) run."""
    new_run = np.ones(len(classes_a), bool)
    new_run[1:] = (row_a[1:] != row_a[:-1]) | (classes_a[1:] != classes_a[:-1])
    return np.maximum.accumulate(np.where(new_run, np.arange(len(classes_a)), 0))


def _frame_ids(rec: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(source_id, frame_num) of frame ``rows`` (the row number as frame_num without a recording)."""
    if rec is not None:
        src = rec.frames["source_id"].to_numpy()[rows].astype(int)
        fnum = rec.frames["frame_num"].to_numpy()[rows].astype(int)
        return src, fnum
    return np.zeros(len(rows), int), rows.astype(int)


def _selection_frame(
    rec: Any, sel: Selection, mask: np.ndarray, labels: Sequence[str] = ()
) -> pd.DataFrame:
    """A detections DataFrame (as ``detections_frame`` makes) of the selected boxes, built flat."""
    rows = sel.rows[mask]
    b = sel.boxes[mask]
    src, fnum = _frame_ids(rec, rows)
    df = pd.DataFrame(
        {
            "row": rows,
            "source_id": src,
            "frame_num": fnum,
            "x1": b[:, 0],
            "y1": b[:, 1],
            "x2": b[:, 2],
            "y2": b[:, 3],
            "width": b[:, 2] - b[:, 0],
            "height": b[:, 3] - b[:, 1],
            "score": sel.scores[mask],
            "class_id": sel.class_ids[mask],
        }
    )
    if labels:
        df["label"] = [labels[c] if 0 <= c < len(labels) else str(c) for c in df["class_id"]]
    return df


def _detection_arrays(
    rec: Any, rows: np.ndarray, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray
) -> dict[str, np.ndarray]:
    """:func:`~dsprobe.analysis.matching.detection_arrays` of these boxes (frame px, float32) without
    a DataFrame: the same float64 values."""
    src, fnum = _frame_ids(rec, rows)
    b = boxes.astype(np.float64)
    return {
        "image_id": src.astype(np.int64) * 1_000_000 + fnum.astype(np.int64),
        "bbox": np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1).reshape(
            -1, 4
        ),
        "score": scores.astype(np.float64),
        "category_id": class_ids.astype(np.int64),
    }


def selection_plan(
    rec: Any,
    sel: Selection,
    gt: GroundTruth,
    image_ids: Sequence[int],
    plans: dict[int, tuple[Scaled, MatchPlan]] | None = None,
) -> tuple[MatchPlan, np.ndarray | None]:
    """The :class:`~dsprobe.analysis.matching.MatchPlan` that matches ``sel``'s boxes against ``gt``
    on ``image_ids``, and the mask of its inputs that are ``sel``'s boxes (None: all of them, in
    order). A selection from a floor clustering shares the floor's plan (pairs with ground truth
    and IoUs computed once), kept in ``plans`` (one floor at a time)."""
    plans = {} if plans is None else plans
    if sel.base is None:
        return MatchPlan(
            _detection_arrays(rec, sel.rows, sel.boxes, sel.scores, sel.class_ids), gt, image_ids
        ), None
    sc, idx = sel.base
    if id(sc) not in plans or plans[id(sc)][0] is not sc:
        plans.clear()  # one floor at a time
        d = sc.dets
        plans[id(sc)] = (
            sc,
            MatchPlan(
                _detection_arrays(rec, sc.rows, d.boxes, d.scores, d.class_ids), gt, image_ids
            ),
        )
    subset = np.zeros(len(sc.rows), bool)
    subset[idx] = True
    return plans[id(sc)][1], subset


# ---------------------------------------------------------------------------------------------- scoring
class _Scorer:
    """COCO mAP of many subsets of one detection set: every box is matched once
    (:class:`~dsprobe.analysis.matching.MatchPlan`), then each subset that keeps a low-score prefix
    of every class is accumulated from the matches (:class:`~dsprobe.analysis.accumulation.CutAccumulator`:
    exact, COCO matches and accumulates in descending score); any other cut is matched afresh.

    ``plans``: a cache shared by the scorers of one search: the clusterings of one floor share the
    floor's boxes, so the pairs with ground truth and their IoUs are computed once for all of them.
    """

    def __init__(
        self,
        rec: Any,
        sel: Selection,
        gt: GroundTruth,
        frames: Sequence[tuple[int, int]],
        plans: dict[int, tuple[Scaled, MatchPlan]] | None = None,
        cuts: bool = True,
    ) -> None:
        self.gt, self.rec, self.sel = gt, rec, sel
        self.ids = sorted({frame_image_id(s, f) for s, f in frames})
        self.plan, self.subset = selection_plan(rec, sel, gt, self.ids, plans)
        self.cuts = self.plan.cuts(self.subset) if cuts else None
        self._table: Any = None
        self.rematched = 0  # subsets matched afresh (for tests)

    @property
    def table(self) -> Any:
        """The :class:`~dsprobe.analysis.matching.MatchTable` of every box of the selection."""
        if self._table is None:
            self._table = self.plan.table(self.subset)
        return self._table

    def score(self, keep: np.ndarray) -> EvalResult:
        acc = self.cuts.accumulate(keep) if self.cuts is not None else None
        if acc is None:
            table = self.table.subset(keep)
            if table is None:
                self.rematched += 1
                sel, k = self.sel, np.asarray(keep, bool)
                dets = _detection_arrays(
                    self.rec, sel.rows[k], sel.boxes[k], sel.scores[k], sel.class_ids[k]
                )
                table = match_table(dets, self.gt, self.ids)
            acc = accumulate(table)
        if acc.num_detections == 0:
            return empty_result(self.gt, self.ids)
        return coco_scores(acc, self.gt)

    def score_cut(self, pre: np.ndarray, post: np.ndarray) -> EvalResult:
        """:meth:`score` of the boxes scoring ``>= pre[class]`` and ``> post[class]``."""
        assert self.cuts is not None
        acc = self.cuts.accumulate_scores(pre, post)
        if acc.num_detections == 0:
            return empty_result(self.gt, self.ids)
        return coco_scores(acc, self.gt)


# ---------------------------------------------------------------------------------------------- search
@dataclass
class SearchResult:
    """One row per setting tried (params + map50 + map50_95 + detections), best first."""

    table: pd.DataFrame
    best_params: dict[str, Any]
    best: Postprocess
    metric: str

    def pivot(
        self, index: str = "pre_cluster_threshold", columns: str = "iou_threshold"
    ) -> pd.DataFrame:
        """The metric as a 2-D table (for a heat map), best over the other params."""
        return self.table.pivot_table(
            index=index, columns=columns, values=self.metric, aggfunc="max"
        )


def setting_combinations(
    grid: Mapping[str, Sequence[Any]], method: str, n_random: int, seed: int
) -> list[tuple]:
    """The value tuples a search tries: every combination of ``grid`` (``method="grid"``) or
    ``n_random`` of them drawn with ``seed`` (``"random"``), in ``grid``'s order."""
    names = list(grid)
    for n in names:
        if not len(grid[n]):
            raise ValueError(f"search: no values given for {n!r}")
    combos = list(itertools.product(*(grid[n] for n in names)))
    if method == "random":
        rng = np.random.default_rng(seed)
        combos = [
            combos[i]
            for i in sorted(rng.choice(len(combos), size=min(n_random, len(combos)), replace=False))
        ]
    elif method != "grid":
        raise ValueError(f"search: method must be 'grid' or 'random', got {method!r}")
    return combos


def _postprocesses(
    base: Postprocess, settings: Sequence[Mapping[str, Any]]
) -> tuple[dict[int, Postprocess], dict[int, str]]:
    """Each setting applied to ``base``; a setting a step refuses is recorded as failed."""
    pps: dict[int, Postprocess] = {}
    errors: dict[int, str] = {}
    for i, p in enumerate(settings):
        try:
            pps[i] = base.set_params(p)
        except (ValueError, PostprocessError) as exc:
            errors[i] = one_line(exc)
    return pps, errors


class _Decoders:
    """A Reclusterer per decode step: settings of the decoder's own params (the user's decoder's
    too) decode the same frames again, once per distinct decode step."""

    def __init__(self, decoded: DecodedRecording, reclusterer: Reclusterer) -> None:
        self.decoded, self.floor = decoded, reclusterer.floor
        self.device = reclusterer.device  # new decoders decode and re-cluster where it does
        self.by_decoder: dict[str, Reclusterer | str] = {
            _key(self.decode_of(decoded.postprocess)): reclusterer
        }

    @staticmethod
    def decode_of(pp: Postprocess) -> dict[str, Any]:
        return pp.steps[0].to_dict()

    def of(self, pp: Postprocess) -> Reclusterer:
        key = _key(self.decode_of(pp))
        if key not in self.by_decoder:
            try:
                dev = self.device
                rows = sorted(self.decoded.candidates)
                dec = pp.to(dev).decode_recording(self.decoded.recording, rows)
                self.by_decoder[key] = Reclusterer(dec, floor=self.floor, device=dev)
            except PostprocessError as exc:  # the decoder failed: every setting of it fails
                self.by_decoder[key] = one_line(exc)
        rc = self.by_decoder[key]
        if isinstance(rc, str):
            raise PostprocessError(rc)
        return rc

    def group(self, pp: Postprocess, errors: dict[int, str], i: int) -> tuple[str, str]:
        """(decoder key, clustering key or "" for no fast path); a failing decoder fails setting i."""
        try:
            rc = self.of(pp)
        except PostprocessError as exc:
            errors[i] = one_line(exc)
            return ("", "")
        return (_key(self.decode_of(pp)), rc._cluster_key(pp) if rc.fast_path(pp) else "")


def search(
    decoded: DecodedRecording,
    gt: GroundTruth,
    grid: Mapping[str, Sequence[Any]],
    *,
    frames: Sequence[tuple[int, int]] | None = None,
    metric: str = "map50",
    method: str = "grid",
    n_random: int = 20,
    seed: int = 0,
    progress: bool = False,
    reclusterer: Reclusterer | None = None,
    device: str = "cpu",
) -> SearchResult:
    """Try every combination of ``grid`` (``method="grid"``) or ``n_random`` of them drawn at random
    (``"random"``), re-using the decoded candidates; score each with COCO mAP against ``gt`` over
    ``frames`` ((source_id, frame_num); default every decoded frame). ``grid`` maps param names
    (``pre_cluster_threshold``, ``iou_threshold``, ``topk``, ``post_cluster_threshold``, object filter
    params, any step's param by name, the user's own steps' included) to value lists; a decoder param
    decodes again once per value. ``metric``: "map50" or "map50_95". A setting whose step fails (the
    user's function raised, returned NaN boxes...) is kept in the table with NaN scores and its
    one-line message in an ``error`` column (present only then); the search goes on.
    ``device="cuda"``: the re-clustering runs on the GPU (``docs/gpu.md``); the same table results."""
    if metric not in ("map50", "map50_95"):
        raise ValueError(f"search: metric must be 'map50' or 'map50_95', got {metric!r}")
    names = list(grid)
    combos = setting_combinations(grid, method, n_random, seed)
    base = decoded.postprocess
    for n in names:
        base.get_param(n)  # fail early on a name no step takes
    rec = decoded.recording
    check_recording_ground_truth(gt, rec)
    if frames is None:
        f = rec.frames.iloc[sorted(decoded.candidates)]
        frames = list(zip(f["source_id"].astype(int), f["frame_num"].astype(int)))
    if reclusterer is None:
        floors = [float(np.min(v)) for v in grid.get("pre_cluster_threshold", [])]
        floors.append(float(np.min(base.get_param("pre_cluster_threshold"))))
        reclusterer = Reclusterer(decoded, floor=min(floors), max_cached=2, device=device)
    if "iou_threshold" in grid:  # NMS pairs kept once for every IoU threshold of the grid
        lowest = min(float(np.min(v)) for v in grid["iou_threshold"])
        base_iou = base.steps[2].params.get("iou_threshold") if len(base.steps) > 2 else None
        if base_iou is not None:
            lowest = min(lowest, float(np.min(base_iou)))
        if reclusterer.iou_floor is None or lowest < reclusterer.iou_floor:
            reclusterer.iou_floor = lowest
    settings = [dict(zip(names, (plain(v) for v in combo))) for combo in combos]
    pps, errors = _postprocesses(base, settings)
    decoders = _Decoders(decoded, reclusterer)
    # settings that share a decoder and a clustering run back to back: each is evaluated once
    group = {i: decoders.group(pp, errors, i) for i, pp in pps.items()}
    order = sorted((i for i in pps if i not in errors), key=lambda i: group[i])
    scorer: tuple[str, _Scorer] | None = None
    plans: dict = {}  # the floor's match plan, shared by the clusterings of a floor
    results: dict[int, EvalResult] = {}
    it: Iterable = order
    if progress:
        try:
            from tqdm.auto import tqdm

            it = tqdm(order, desc="search", unit="setting")
        except ImportError:
            pass
    for i in it:
        pp, rc = pps[i], decoders.of(pps[i])
        try:
            if group[i][1]:
                key = group[i][0] + rc.selection_key(pp)
                if scorer is None or scorer[0] != key:
                    cuts = not rc.per_frame  # per_frame: the reference, every cut matched
                    scorer = (key, _Scorer(rec, rc.select(pp), gt, frames, plans, cuts))
                cut = rc.score_cut(pp) if scorer[1].cuts is not None else None
                r = (
                    scorer[1].score_cut(*cut)
                    if cut is not None
                    else scorer[1].score(rc.select(pp).keep)
                )
            else:
                r = evaluate(rc.detections_frame(pp), gt, frames)
        except PostprocessError as exc:  # the user's step failed for this setting: go on
            errors[i] = one_line(exc)
            continue
        results[i] = r
    nan = float("nan")
    rows = [
        {
            **settings[i],
            "map50": results[i].map50 if i in results else nan,
            "map50_95": results[i].map50_95 if i in results else nan,
            "detections": results[i].num_detections if i in results else -1,
            **({"error": errors.get(i, "")} if errors else {}),  # only when a setting failed
        }
        for i in range(len(settings))
    ]
    table = pd.DataFrame(rows).sort_values(
        metric, ascending=False, kind="stable", na_position="last"
    )
    if not results:
        raise PostprocessError(f"search: every setting failed; the first: {table['error'].iloc[0]}")
    best_params = dict(settings[int(table.index[0])])  # as given: a table row may upcast ints
    table = table.reset_index(drop=True)
    return SearchResult(table, best_params, base.set_params(best_params), metric)
