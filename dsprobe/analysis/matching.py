"""COCO box matching in numpy: per-detection match tables and their accumulation into precision.

Gives the numbers pycocotools' ``COCOeval`` (iouType "bbox", area range "all", one max-detections
limit) gives, to the last bit, without its per-(image, category) Python loops:

* :func:`match_table` matches detections to ground truth once and returns a :class:`MatchTable`:
  one row per detection (frame image id, class, score, its rank in COCO's order inside its (image,
  class)) with, at each IoU threshold, the ground truth it matched (annotation id), the IoU, whether
  it is a true positive and whether it is ignored (matched a crowd / out-of-range region);
* :meth:`MatchTable.concat` merges tables of disjoint frame sets (partitions of a recording set);
* :func:`dsprobe.analysis.accumulation.accumulate` turns a table (or a subset of its detections)
  into COCO's precision array (that module also holds the compact rows partitions send and the
  threshold-cut accumulator :class:`MatchPlan` builds).

Memory is O(detections + ground truth boxes), not O(frames x classes).

What makes it exact (each point is a line of ``cocoeval.py`` / ``maskApi.c``):

* IoU is ``bbIou``'s float64 arithmetic on COCO ``[x, y, w, h]`` boxes: ``w = x2 - x1`` of the
  detection taken in float64, right edge ``x + w``, ``fmin``/``fmax``, no overlap when ``w <= 0``
  or ``h <= 0``, union = the detection's area for a crowd region;
* a ground truth box is ignored when ``iscrowd`` is set or its ``area`` is outside ``[0, 1e10]``;
  ignored boxes come after the others (stable), detections in descending score (stable, ties in
  input order), at most ``max_det`` per (image, class);
* greedy matching per IoU threshold ``t`` (``min(t, 1 - 1e-10)``): each detection in turn takes the
  free (or crowd) box of highest IoU ``>= t``, the last one on ties, a regular box before an
  ignored one; an unmatched detection with an area outside the range is ignored; a match to an
  annotation whose id is 0 counts as no match (COCO stores ids in a zero-means-none array);
* accumulation per class over frames in image id order: a stable sort by descending score, cumulative
  TP/FP counts as float64, ``rc = tp / npig``, ``pr = tp / (fp + tp + eps)``, the running maximum from
  the right and the precision at each recall threshold (``searchsorted(..., "left")``).

Detections and ground truth with a non-finite IoU (NaN boxes) are matched by a transcription of
COCO's loop for just their (image, class).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from dsprobe.analysis.accumulation import (
    AccumulateRows,
    CutAccumulator,
    same_scoring,
)

#: COCO's IoU thresholds (0.5:0.05:0.95), built as pycocotools does
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
#: COCO's area range "all" (px^2)
AREA_RANGE = (0**2, 1e5**2)


@dataclass
class GroundTruthArrays:
    """COCO ground truth annotations as flat arrays (frame pixels): image_id, category_id, id,
    bbox ``(n, 4)`` x, y, w, h float64, area, iscrowd (int). Built once per GroundTruth."""

    image_id: np.ndarray
    category_id: np.ndarray
    ann_id: np.ndarray
    bbox: np.ndarray
    area: np.ndarray
    iscrowd: np.ndarray
    category_ids: np.ndarray  # every category, sorted (COCO's catIds)

    @classmethod
    def from_coco(cls, coco: dict) -> GroundTruthArrays:
        anns = coco["annotations"]
        try:
            bbox = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
            area = np.array([a["area"] for a in anns], np.float64)
            ids = np.array([a["id"] for a in anns], np.int64)
        except KeyError as exc:
            raise ValueError(f"ground truth annotation without {exc.args[0]!r}") from None
        return cls(
            np.array([a["image_id"] for a in anns], np.int64),
            np.array([a["category_id"] for a in anns], np.int64),
            ids,
            bbox,
            area,
            np.array([int(a.get("iscrowd", 0)) for a in anns], np.int64),
            np.unique(np.array([c["id"] for c in coco["categories"]], np.int64)),
        )


@dataclass
class MatchTable:
    """Per-detection COCO match results of one set of frames (``image_ids``).

    Rows are detections in (image_id, category_id, rank) order; ``T`` = len(``iou_thresholds``):

    * ``index``: the detection's row in the input; ``image_id``, ``category_id``, ``score`` (float64);
    * ``rank``: position inside its (image, category) in COCO's order (descending score, ties in input
      order); COCO scores only ``rank < max_det``;
    * ``gt_id`` ``(T, N)``: the matched annotation's id (-1: none); ``iou`` ``(T, N)``: that match's
      IoU (0 when none); ``tp`` / ``ignored`` ``(T, N)``: true positive / left out of precision;
    * ``num_gt``: per category of ``category_ids``, the ground truth boxes that count (not crowd, area
      in range) on these frames; ``frame_rows``: the input rows on these frames (any class), of which
      there are ``num_detections``; ``num_inputs``: the input's length.
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    iou_thresholds: np.ndarray
    index: np.ndarray
    image_id: np.ndarray
    category_id: np.ndarray
    score: np.ndarray
    rank: np.ndarray
    gt_id: np.ndarray
    iou: np.ndarray
    tp: np.ndarray
    ignored: np.ndarray
    num_gt: np.ndarray
    frame_rows: np.ndarray
    num_inputs: int

    @property
    def num_detections(self) -> int:
        return len(self.frame_rows)

    def __len__(self) -> int:
        return len(self.index)

    def frame(self, threshold: int = 0) -> pd.DataFrame:
        """One row per detection at IoU threshold number ``threshold`` (0: IoU 0.5)."""
        return pd.DataFrame(
            {
                "index": self.index,
                "image_id": self.image_id,
                "category_id": self.category_id,
                "score": self.score,
                "rank": self.rank,
                "gt_id": self.gt_id[threshold],
                "iou": self.iou[threshold],
                "tp": self.tp[threshold],
                "ignored": self.ignored[threshold],
            }
        )

    def subset(self, keep: np.ndarray) -> MatchTable | None:
        """The table of the detections ``keep`` selects (a mask over the *input* rows), or None when
        some (image, category) keeps detections after dropping one before them in COCO's order (then
        the greedy matches can change: match the subset afresh)."""
        k = np.asarray(keep, bool)[self.index]
        same = np.ones(len(k), bool)
        same[1:] = (self.image_id[1:] == self.image_id[:-1]) & (
            self.category_id[1:] == self.category_id[:-1]
        )
        if np.any(k[1:] & ~k[:-1] & same[1:]):
            return None
        frame_rows = self.frame_rows[np.asarray(keep, bool)[self.frame_rows]]
        return self._take(np.flatnonzero(k), frame_rows)

    def _take(self, rows: np.ndarray, frame_rows: np.ndarray) -> MatchTable:
        return MatchTable(
            self.image_ids,
            self.category_ids,
            self.iou_thresholds,
            self.index[rows],
            self.image_id[rows],
            self.category_id[rows],
            self.score[rows],
            self.rank[rows],
            self.gt_id[:, rows],
            self.iou[:, rows],
            self.tp[:, rows],
            self.ignored[:, rows],
            self.num_gt,
            frame_rows,
            self.num_inputs,
        )

    @staticmethod
    def concat(tables: Sequence[MatchTable]) -> MatchTable:
        """One table from tables of disjoint frame sets (e.g. partitions); ``index`` is offset so it
        counts rows of the inputs concatenated in the given order."""
        first = same_scoring(tables, "MatchTable.concat")
        images = np.concatenate([t.image_ids for t in tables])
        if len(np.unique(images)) != len(images):
            raise ValueError("MatchTable.concat: tables share frames (partitions must be disjoint)")
        offsets = np.cumsum([0] + [t.num_inputs for t in tables[:-1]])
        cat = lambda name, axis=0: np.concatenate([getattr(t, name) for t in tables], axis)  # noqa: E731
        merged = MatchTable(
            np.sort(images),
            first.category_ids,
            first.iou_thresholds,
            np.concatenate([t.index + o for t, o in zip(tables, offsets)]),
            cat("image_id"),
            cat("category_id"),
            cat("score"),
            cat("rank"),
            cat("gt_id", 1),
            cat("iou", 1),
            cat("tp", 1),
            cat("ignored", 1),
            np.sum([t.num_gt for t in tables], axis=0),
            np.concatenate([t.frame_rows + o for t, o in zip(tables, offsets)]),
            int(sum(t.num_inputs for t in tables)),
        )
        order = np.lexsort((merged.rank, merged.category_id, merged.image_id))
        return merged._take(order, merged.frame_rows)


def detection_arrays(detections: pd.DataFrame) -> dict[str, np.ndarray]:
    """Frame image ids, COCO boxes (x, y, w, h float64: ``w = x2 - x1`` in float64, as COCO result
    dicts built from the values hold), scores (float64) and class ids of a detections DataFrame."""
    d = detections
    x1, y1 = d["x1"].to_numpy(np.float64), d["y1"].to_numpy(np.float64)
    return {
        "image_id": d["source_id"].to_numpy(np.int64) * 1_000_000
        + d["frame_num"].to_numpy(np.int64),
        "bbox": np.stack(
            [x1, y1, d["x2"].to_numpy(np.float64) - x1, d["y2"].to_numpy(np.float64) - y1], 1
        ).reshape(-1, 4),
        "score": d["score"].to_numpy(np.float64),
        "category_id": d["class_id"].to_numpy(np.int64),
    }


def match_table(
    detections: pd.DataFrame | dict[str, np.ndarray],
    gt: Any,
    image_ids: Sequence[int],
    iou_thresholds: np.ndarray = IOU_THRESHOLDS,
) -> MatchTable:
    """Match ``detections`` (a DataFrame with source_id, frame_num, x1..y2 frame px, score,
    class_id; or :func:`detection_arrays`) to ``gt`` on the frames ``image_ids`` (``frame_image_id``
    numbers) as COCO does; detections on other frames or of classes the ground truth does not list
    are left out. ``gt``: a :class:`~dsprobe.analysis.evaluate.GroundTruth` (its ``arrays()``) or
    :class:`GroundTruthArrays`."""
    return MatchPlan(detections, gt, image_ids, iou_thresholds).table()


@dataclass
class _Matched:
    """The result of matching a subset of a :class:`MatchPlan`'s detections (see ``MatchPlan.match``)."""

    rows: np.ndarray  # the plan's rows kept (table order)
    starts: np.ndarray  # where each (image, class) run of ``rows`` starts
    kept: np.ndarray  # the mask of the plan's rows kept
    paired: np.ndarray  # positions (among ``rows``) of the detections with candidate pairs
    choice: np.ndarray  # (T, len(paired)) the chosen pair (index into ``pairs``), -1 none
    pairs: np.ndarray  # the plan's pairs kept

    @property
    def rank(self) -> np.ndarray:
        """Each kept row's rank inside its (image, class)."""
        n, s = len(self.rows), self.starts
        return np.arange(n) - np.repeat(s, np.diff(np.r_[s, n]))

    def max_rank(self) -> int:
        return int(np.diff(np.r_[self.starts, len(self.rows)]).max()) - 1 if len(self.rows) else -1


class MatchPlan:
    """What :func:`match_table` does before matching, done once for one detection set so that many
    subsets of it can be matched: COCO's order of the detections, every (detection, ground truth)
    pair of the same (image, class) and their IoU. ``table(keep)`` equals ``match_table`` of the
    detections ``keep`` selects, field for field (a subset keeps the set's order, pairs and IoUs);
    ``cuts(keep)`` gives the same subset's :class:`CutAccumulator`."""

    def __init__(
        self,
        detections: pd.DataFrame | dict[str, np.ndarray],
        gt: Any,
        image_ids: Sequence[int],
        iou_thresholds: np.ndarray = IOU_THRESHOLDS,
    ) -> None:
        d = detection_arrays(detections) if isinstance(detections, pd.DataFrame) else detections
        g = gt if isinstance(gt, GroundTruthArrays) else gt.arrays()
        images = np.unique(np.asarray(image_ids, np.int64))
        cats = g.category_ids
        on_frame = np.isin(d["image_id"], images)
        sel = np.flatnonzero(on_frame & np.isin(d["category_id"], cats))
        gsel = np.flatnonzero(np.isin(g.image_id, images) & np.isin(g.category_id, cats))
        # group key (image, category) -> one int; dets by key, descending score, input order
        dkey = d["image_id"][sel] * len(cats) + np.searchsorted(cats, d["category_id"][sel])
        score = d["score"][sel]
        if not _in_order(dkey, score):  # (a search's detections come in this order already)
            order = np.lexsort((sel, -score, dkey))
            sel, dkey, score = sel[order], dkey[order], score[order]
        # ground truth by key, regular before ignored (stable)
        area = g.area[gsel]
        g_ig = (g.iscrowd[gsel] != 0) | (area < AREA_RANGE[0]) | (area > AREA_RANGE[1])
        gkey = g.image_id[gsel] * len(cats) + np.searchsorted(cats, g.category_id[gsel])
        gorder = np.lexsort((gsel, g_ig, gkey))
        gsel, gkey, g_ig = gsel[gorder], gkey[gorder], g_ig[gorder]
        dbox, gbox = d["bbox"][sel], g.bbox[gsel]
        crowd = g.iscrowd[gsel] != 0
        # every (detection, ground truth) pair of the same key
        lo, hi = np.searchsorted(gkey, dkey, "left"), np.searchsorted(gkey, dkey, "right")
        n_pairs = hi - lo
        pd_ = np.repeat(np.arange(len(sel)), n_pairs)
        pg = np.arange(len(pd_)) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs) + lo[pd_]
        dbox_area = dbox[:, 2] * dbox[:, 3]
        self.image_ids, self.category_ids = images, cats
        self.iou_thresholds = np.asarray(iou_thresholds, np.float64)
        self.sel, self.dkey, self.score = sel, dkey, score
        self.image_id, self.category_id = d["image_id"][sel], d["category_id"][sel]
        self.area_out = (dbox_area < AREA_RANGE[0]) | (dbox_area > AREA_RANGE[1])
        self.pd, self.pg, self.piou = pd_, pg, coco_iou(dbox[pd_], gbox[pg], crowd[pg])
        self.gkey, self.g_ig, self.crowd, self.ann_id = gkey, g_ig, crowd, g.ann_id[gsel]
        self.num_gt = np.bincount(
            np.searchsorted(cats, g.category_id[gsel][~g_ig]), minlength=len(cats)
        ).astype(np.int64)
        self.frame_rows = np.flatnonzero(on_frame)
        self.num_inputs = len(on_frame)
        self.all_scores, self.all_classes = d["score"], d["category_id"]
        self._acc: tuple[np.ndarray, ...] | None = None  # accumulate's order (cuts)

    def match(self, keep: np.ndarray | None = None) -> _Matched:
        """COCO's greedy matching of the detections ``keep`` selects (a mask over the input rows;
        None: all), as :func:`match_table` would match them alone."""
        k = np.ones(len(self.sel), bool) if keep is None else np.asarray(keep, bool)[self.sel]
        rows = np.flatnonzero(k)
        dkey = self.dkey[rows]
        starts = np.flatnonzero(np.r_[True, dkey[1:] != dkey[:-1]]) if len(dkey) else dkey
        pairs = np.flatnonzero(k[self.pd]) if keep is not None else np.arange(len(self.pd))
        pos = np.cumsum(k) - 1  # plan row -> position among the kept
        det = pos[self.pd[pairs]]  # ascending
        new = np.r_[True, det[1:] != det[:-1]] if len(det) else np.zeros(0, bool)
        paired = det[new]  # detections without pairs are left out (they match nothing)
        pd_ = np.cumsum(new) - 1
        pg, piou = self.pg[pairs], self.piou[pairs]
        pkey = dkey[paired]
        thr = np.minimum(self.iou_thresholds, 1 - 1e-10)
        choice = np.full((len(thr), len(paired)), -1, np.int64)
        bad = ~np.isfinite(piou)
        loop_keys = np.unique(pkey[pd_[bad]])
        cand = ~(piou < thr.min())
        if len(loop_keys):
            cand &= ~np.isin(pkey[pd_], loop_keys)
        _greedy(pd_, pg, piou, cand, pkey, self.g_ig, self.crowd, thr, choice)
        for key in loop_keys:
            _greedy_loop(key, pkey, self.gkey, pd_, pg, piou, self.g_ig, self.crowd, thr, choice)
        return _Matched(rows, starts, k, paired, choice, pairs)

    def flags(self, m: _Matched) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(tp, ignored, gt_id, iou)`` ``(T, n)`` of a :meth:`match` (gt_id / iou only over
        ``m.paired``: the others matched nothing)."""
        T, n = len(self.iou_thresholds), len(m.rows)
        matched = m.choice >= 0
        safe = np.where(matched, m.choice, 0)
        pair_gt = self.pg[m.pairs][safe] if len(m.pairs) else np.zeros_like(safe)
        gt_id = np.where(matched, self.ann_id[pair_gt] if len(self.ann_id) else -1, -1)
        iou = np.where(matched, self.piou[m.pairs][safe] if len(m.pairs) else 0.0, 0.0)
        area_out = self.area_out[m.rows]
        none = ~matched | (gt_id == 0)  # COCO's dtMatches == 0
        ign_p = (matched & (self.g_ig[pair_gt] if len(self.g_ig) else False)) | (
            none & area_out[m.paired]
        )
        ignored = np.broadcast_to(area_out, (T, n)).copy()  # unpaired: no match
        ignored[:, m.paired] = ign_p
        tp = np.zeros((T, n), bool)
        tp[:, m.paired] = ~none & ~ign_p
        return tp, ignored, gt_id, iou

    def _inputs(self, keep: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, int]:
        """(input row -> row of the subset, the subset's frame rows, its length)."""
        if keep is None:
            return np.arange(self.num_inputs), self.frame_rows, self.num_inputs
        keep = np.asarray(keep, bool)
        pos = np.cumsum(keep) - 1
        return pos, pos[self.frame_rows[keep[self.frame_rows]]], int(keep.sum())

    def table(self, keep: np.ndarray | None = None) -> MatchTable:
        """:func:`match_table` of the detections ``keep`` selects (a mask over the input rows)."""
        m = self.match(keep)
        tp, ignored, gt_p, iou_p = self.flags(m)
        T, n = tp.shape
        gt_id = np.full((T, n), -1, np.int64)
        gt_id[:, m.paired] = gt_p
        iou = np.zeros((T, n))
        iou[:, m.paired] = iou_p
        pos, frame_rows, num_inputs = self._inputs(keep)
        r = m.rows
        return MatchTable(
            self.image_ids,
            self.category_ids,
            self.iou_thresholds,
            pos[self.sel[r]],
            self.image_id[r],
            self.category_id[r],
            self.score[r],
            m.rank,
            gt_id,
            iou,
            tp,
            ignored,
            self.num_gt,
            frame_rows,
            num_inputs,
        )

    def cuts(self, keep: np.ndarray | None = None, max_det: int = 1000) -> CutAccumulator:
        """The :class:`CutAccumulator` of the detections ``keep`` selects (a mask over the input
        rows): matched as :meth:`match`, in accumulate's order, which for a subset is the whole
        set's order restricted (sorted once)."""
        k_acc, use, tp_pos, ign_pos, score_acc, input_acc = self._accumulate_order(keep, max_det)
        outside = self._outside
        if keep is not None:
            outside = outside[np.asarray(keep, bool)[outside]]

        def index() -> tuple[np.ndarray, np.ndarray]:
            inputs, frame_rows, _ = self._inputs(keep)
            return inputs[input_acc], frame_rows

        return CutAccumulator(
            self.category_ids,
            self.iou_thresholds,
            self.num_gt,
            len(self.image_ids),
            k_acc,
            use,
            tp_pos,
            ign_pos,
            score_acc,
            index,
            (self.all_scores[outside], self.all_classes[outside]),
        )

    def rows(self, keep: np.ndarray | None = None, max_det: int = 1000) -> AccumulateRows:
        """The :class:`AccumulateRows` of the detections ``keep`` selects (a mask over the input
        rows): what ``accumulate(table, max_det)`` of their :func:`match_table` reads, compact."""
        k_acc, use, tp_pos, ign_pos, score_acc, _ = self._accumulate_order(keep, max_det)
        if use is not None:  # rows past max_det in their (image, class) never count: drop them
            at = np.cumsum(use) - 1
            tp_pos, ign_pos = [at[p] for p in tp_pos], [at[q] for q in ign_pos]
            k_acc, score_acc = k_acc[use], score_acc[use]
        T, n = len(self.iou_thresholds), len(k_acc)
        tp, ignored = np.zeros((T, n), bool), np.zeros((T, n), bool)
        for t in range(T):
            tp[t, tp_pos[t]] = True
            ignored[t, ign_pos[t]] = True
        return AccumulateRows(
            self.category_ids,
            self.iou_thresholds,
            self.num_gt,
            len(self.image_ids),
            np.searchsorted(k_acc, np.arange(len(self.category_ids) + 1)),
            score_acc,
            np.packbits(tp, axis=0),
            np.packbits(ignored, axis=0),
        )

    def _accumulate_order(
        self, keep: np.ndarray | None, max_det: int
    ) -> tuple[np.ndarray, np.ndarray | None, list, list, np.ndarray, np.ndarray]:
        """The detections ``keep`` selects, matched, in accumulate's order: (class index of each,
        ``use`` (rank < max_det; None: all), per IoU threshold the positions (in that order) of the
        true positives and of the ignored detections that are ``use`` ones, scores, plan input row
        of each)."""
        if self._acc is None:
            # plan rows are by (image, class, rank): two stable sorts give (class, -score, image,
            # rank), np.lexsort((rank, image, -score, class))'s order at a fraction of its cost
            by_score = np.argsort(-self.score, kind="stable")
            k_of = np.searchsorted(self.category_ids, self.category_id)
            order = by_score[np.argsort(k_of[by_score], kind="stable")]
            at = np.empty(len(order), np.int64)
            at[order] = np.arange(len(order))
            outside = np.ones(self.num_inputs, bool)
            outside[self.sel] = False
            self._acc = (order, at, k_of[order], self.score[order], self.sel[order])
            self._outside = self.frame_rows[outside[self.frame_rows]]
            self._area_out_rows = np.flatnonzero(self.area_out)
        order, at_full, k_acc, score_acc, input_acc = self._acc
        m = self.match(keep)
        k = m.kept
        in_acc = k[order]
        acc_pos = np.cumsum(in_acc) - 1  # accumulate-order position of each kept plan row

        def at(plan_rows: np.ndarray) -> np.ndarray:
            return np.sort(acc_pos[at_full[plan_rows]])

        use = None  # every row counts (rank < max_det)
        if m.max_rank() >= max_det:
            use = np.zeros(len(m.rows), bool)
            use[acc_pos[at_full[m.rows]]] = m.rank < max_det
        # true positives and ignored detections (sparse): per IoU threshold, positions ascending.
        # Only matched (threshold, detection) entries can be either, besides unmatched detections
        # with an area out of range (ignored): the same flags as flags() gives, entry by entry.
        paired_rows = m.rows[m.paired]  # plan rows
        ti, pi = np.nonzero(m.choice >= 0)  # by threshold, then detection
        pair_gt = self.pg[m.pairs[m.choice[ti, pi]]]
        ann0 = self.ann_id[pair_gt] == 0  # COCO's dtMatches == 0: no match
        g_ig = self.g_ig[pair_gt]
        rows_m = paired_rows[pi]
        tp_m = ~ann0 & ~g_ig
        ign_m = (~ann0 & g_ig) | (ann0 & (g_ig | self.area_out[rows_m]))
        t_bounds = np.searchsorted(ti, np.arange(len(self.iou_thresholds) + 1))
        out_p = np.flatnonzero(self.area_out[paired_rows])  # paired, out of range
        out = self._area_out_rows[k[self._area_out_rows]]  # no match: ignored when out of range
        out = out[~np.isin(out, paired_rows[out_p])]
        tp_pos, ign_pos = [], []
        for t in range(len(self.iou_thresholds)):
            a, b = t_bounds[t], t_bounds[t + 1]
            p = at(rows_m[a:b][tp_m[a:b]])
            tp_pos.append(p if use is None else p[use[p]])
            unmatched_out = paired_rows[out_p[m.choice[t, out_p] < 0]]
            q = at(np.r_[rows_m[a:b][ign_m[a:b]], unmatched_out, out])
            ign_pos.append(q if use is None else q[use[q]])
        return k_acc[in_acc], use, tp_pos, ign_pos, score_acc[in_acc], input_acc[in_acc]


def _in_order(key: np.ndarray, score: np.ndarray) -> bool:
    """Whether rows are sorted by ``key``, then descending ``score`` (then by row: what
    ``np.lexsort((rows, -score, key))`` gives is then the identity). NaN scores answer False."""
    if len(key) < 2:
        return True
    same = key[1:] == key[:-1]
    return bool(np.all((key[1:] > key[:-1]) | (same & (score[1:] <= score[:-1]))))


def coco_iou(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """``maskApi.c`` ``bbIou`` of paired x, y, w, h boxes (float64): 0 without overlap; over the
    detection's own area for a crowd region."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        w = np.fmin(d[:, 2] + d[:, 0], g[:, 2] + g[:, 0]) - np.fmax(d[:, 0], g[:, 0])
        h = np.fmin(d[:, 3] + d[:, 1], g[:, 3] + g[:, 1]) - np.fmax(d[:, 1], g[:, 1])
        i = w * h
        da = d[:, 2] * d[:, 3]
        u = np.where(crowd, da, da + g[:, 2] * g[:, 3] - i)
        return np.where((w <= 0) | (h <= 0), 0.0, i / u)


def _choose(
    det: np.ndarray, iou: np.ndarray, regular: np.ndarray, ok: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per detection run in ``det`` (pairs sorted by detection, then ground truth order): the pair
    each threshold row of ``ok`` picks (-1: none): highest IoU among regular boxes, the last on
    ties, else the same among ignored boxes. Returns (detections, picks ``(T, runs)``)."""
    starts = np.flatnonzero(np.r_[True, det[1:] != det[:-1]])
    pos = np.arange(len(det))
    picks = []
    for side in (regular, ~regular):
        elig = ok & side
        val = np.where(elig, iou, -np.inf)
        best = np.maximum.reduceat(val, starts, axis=1)
        seg = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, len(det)]))
        hit = elig & (val == best[:, seg])
        picks.append(np.maximum.reduceat(np.where(hit, pos, -1), starts, axis=1))
    return det[starts], np.where(picks[0] >= 0, picks[0], picks[1])


def _greedy(pd_, pg, piou, cand, dkey, g_ig, crowd, thr, choice) -> None:
    """COCO's greedy matching of the candidate pairs, vectorised: detections whose boxes no other
    detection wants are decided at once; the others in rounds, the r-th of each (image, class)."""
    idx = np.flatnonzero(cand)
    if not len(idx):
        return
    det, gtp = pd_[idx], pg[idx]
    wants = np.bincount(gtp[~crowd[gtp]], minlength=len(g_ig))
    contested_pair = (wants[gtp] > 1) & ~crowd[gtp]
    contested_det = np.zeros(choice.shape[1], bool)
    contested_det[det[contested_pair]] = True
    regular = ~g_ig[gtp]
    ok = piou[idx][None, :] >= thr[:, None]
    free = ~contested_det[det]
    if free.any():
        dets, pick = _choose(det[free], piou[idx][free], regular[free], ok[:, free])
        choice[:, dets] = np.where(pick >= 0, idx[free][np.maximum(pick, 0)], -1)
    c = ~free
    if not c.any():
        return
    cidx, cdet = idx[c], det[c]
    # round of each contested detection: its order among the contested ones of its (image, class)
    first = np.r_[True, cdet[1:] != cdet[:-1]]
    grp = dkey[cdet[first]]
    starts = np.flatnonzero(np.r_[True, grp[1:] != grp[:-1]])
    rnd_run = np.arange(len(grp)) - np.repeat(starts, np.diff(np.r_[starts, len(grp)]))
    rnd = np.repeat(rnd_run, np.diff(np.r_[np.flatnonzero(first), len(cdet)]))
    by_round = np.argsort(rnd, kind="stable")
    bounds = np.searchsorted(rnd[by_round], np.arange(int(rnd.max()) + 2))
    cidx, cdet, cok = cidx[by_round], cdet[by_round], ok[:, c][:, by_round]
    cg, ciou, creg = pg[cidx], piou[cidx], regular[c][by_round]
    taken = np.zeros((len(thr), len(g_ig)), bool)
    for a, b in zip(bounds[:-1], bounds[1:]):
        g_r = cg[a:b]
        elig = cok[:, a:b] & (~taken[:, g_r] | crowd[g_r])
        dets, pick = _choose(cdet[a:b], ciou[a:b], creg[a:b], elig)
        picked = np.where(pick >= 0, cidx[a:b][np.maximum(pick, 0)], -1)
        choice[:, dets] = picked
        t_i, d_i = np.nonzero(picked >= 0)
        taken[t_i, pg[picked[t_i, d_i]]] = True


def _greedy_loop(key, dkey, gkey, pd_, pg, piou, g_ig, crowd, thr, choice) -> None:
    """COCO's ``evaluateImg`` loop, line by line, for one (image, class) (NaN IoUs included)."""
    pairs = np.flatnonzero(dkey[pd_] == key)
    dets = np.unique(pd_[pairs])
    gts = np.flatnonzero(gkey == key)
    ious = np.full((len(dets), len(gts)), np.nan)
    ious[np.searchsorted(dets, pd_[pairs]), np.searchsorted(gts, pg[pairs])] = piou[pairs]
    pair_of = np.full(ious.shape, -1, np.int64)
    pair_of[np.searchsorted(dets, pd_[pairs]), np.searchsorted(gts, pg[pairs])] = pairs
    for t_i, t in enumerate(thr):
        gtm = np.zeros(len(gts), bool)
        for d_i, det in enumerate(dets):
            iou, m = t, -1
            for g_i, g in enumerate(gts):
                if gtm[g_i] and not crowd[g]:
                    continue
                if m > -1 and not g_ig[gts[m]] and g_ig[g]:
                    break
                if ious[d_i, g_i] < iou:
                    continue
                iou, m = ious[d_i, g_i], g_i
            if m == -1:
                continue
            gtm[m] = True
            choice[t_i, det] = pair_of[d_i, m]
