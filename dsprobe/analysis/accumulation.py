"""COCO's ``accumulate`` in numpy: precision and recall at COCO's recall thresholds from matched
detections, to the last bit of pycocotools' ``COCOeval.accumulate``.

* :func:`accumulate` of a :class:`~dsprobe.analysis.matching.MatchTable` (or a subset of it);
* :class:`AccumulateRows`: what ``accumulate`` reads of one matched detection set, compact (12 bytes
  a detection), so that the sets of disjoint frame blocks (a recording set's partitions) travel and
  merge exactly (:meth:`AccumulateRows.concat`);
* :class:`CutAccumulator`: every threshold cut of one matched set from its prefix sums (a search's
  settings that differ only in thresholds).

The matching itself (which detection takes which ground truth box) is
:mod:`dsprobe.analysis.matching`; its ``MatchPlan`` builds the last two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

#: COCO's recall thresholds (0:0.01:1), built as pycocotools does
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


@dataclass
class AccumulateRows:
    """What COCO's ``accumulate`` reads of one matched detection set, compact, so that the sets of
    disjoint frame blocks (a recording set's partitions) can travel and merge exactly
    (:meth:`concat`, then :meth:`accumulator`).

    Rows are the detections that count (rank < max_det in their (image, class)) of the ground
    truth's categories, in accumulate's order: by category (``category_ids`` order; category ``k``
    holds rows ``bounds[k]:bounds[k + 1]``), then descending score, then image id, then rank.
    ``score`` (float64); ``tp`` / ``ignored``: ``np.packbits`` of the ``(T, n)`` true-positive /
    ignored flags along the IoU thresholds (``T`` = len(``iou_thresholds``); :meth:`flags` unpacks);
    ``num_gt``: per category, the ground truth boxes that count on these frames; ``num_images``:
    the frames scored."""

    category_ids: np.ndarray
    iou_thresholds: np.ndarray
    num_gt: np.ndarray
    num_images: int
    bounds: np.ndarray
    score: np.ndarray
    tp: np.ndarray
    ignored: np.ndarray

    def __len__(self) -> int:
        return len(self.score)

    def flags(self) -> tuple[np.ndarray, np.ndarray]:
        """``(tp, ignored)``, each ``(T, n)`` bool."""
        T, n = len(self.iou_thresholds), len(self.score)
        unpack = lambda a: np.unpackbits(a, axis=0, count=T).astype(bool).reshape(T, n)  # noqa: E731
        return unpack(self.tp), unpack(self.ignored)

    def cut(self, pre: np.ndarray, post: np.ndarray) -> AccumulateRows:
        """The rows scoring ``>= pre[class id]`` and ``> post[class id]`` (float32 thresholds per
        class id): a low-score suffix of each (image, class), so the matches and ranks of the rows
        kept do not change (COCO matches in descending score); the rows of that cut, exactly."""
        k = np.repeat(np.arange(len(self.category_ids)), np.diff(self.bounds))
        cid = self.category_ids[k]
        rows = np.flatnonzero((self.score >= pre[cid]) & (self.score > post[cid]))
        return self._take(k, rows, self.num_gt, self.num_images)

    def _take(
        self, k: np.ndarray, rows: np.ndarray, num_gt: np.ndarray, num_images: int
    ) -> AccumulateRows:
        """Rows ``rows`` (in that order, which must keep ``k``, each row's category index, sorted)."""
        return AccumulateRows(
            self.category_ids,
            self.iou_thresholds,
            num_gt,
            num_images,
            np.searchsorted(k[rows], np.arange(len(self.category_ids) + 1)),
            self.score[rows],
            self.tp[:, rows],
            self.ignored[:, rows],
        )

    @staticmethod
    def concat(parts: Sequence[AccumulateRows]) -> AccumulateRows:
        """The rows of disjoint frame sets scored as one set whose images are ``parts[0]``'s, then
        ``parts[1]``'s, ... (each part's in image id order): accumulate's order over all of them
        (a stable sort by category and descending score keeps, on ties, part order, then each part's
        own order), ground truth counts and frames added up."""
        first = same_scoring(parts, "AccumulateRows.concat")
        K = len(first.category_ids)
        k = np.concatenate([np.repeat(np.arange(K), np.diff(p.bounds)) for p in parts])
        score = np.concatenate([p.score for p in parts])
        order = np.lexsort((-score, k))  # stable
        whole = AccumulateRows(
            first.category_ids,
            first.iou_thresholds,
            first.num_gt,
            first.num_images,
            np.r_[0, len(k)],  # not used by _take
            score,
            np.concatenate([p.tp for p in parts], axis=1),
            np.concatenate([p.ignored for p in parts], axis=1),
        )
        num_gt = np.sum([p.num_gt for p in parts], axis=0)
        return whole._take(k, order, num_gt, sum(p.num_images for p in parts))

    def accumulator(self) -> CutAccumulator:
        """The :class:`CutAccumulator` of these rows (:meth:`CutAccumulator.accumulate_scores`
        cuts them; ``accumulate_all`` takes them all; ``num_detections`` of its results count only
        these rows: a caller that knows the set's detections sets it)."""
        tp, ignored = self.flags()
        K = len(self.category_ids)

        def no_index() -> tuple[np.ndarray, np.ndarray]:
            raise ValueError("an accumulator of AccumulateRows cuts by score, not by input rows")

        return CutAccumulator(
            self.category_ids,
            self.iou_thresholds,
            self.num_gt,
            self.num_images,
            np.repeat(np.arange(K), np.diff(self.bounds)),
            None,
            [np.flatnonzero(f) for f in tp],
            [np.flatnonzero(f) for f in ignored],
            self.score,
            no_index,
            (np.zeros(0), np.zeros(0, np.int64)),
        )


class CutAccumulator:
    """COCO's ``accumulate`` of many cuts of one matched detection set, each equal to
    ``accumulate(table.subset(keep))`` without matching or sorting again: a cut that keeps, in every
    class, a prefix of the class's detections in accumulate's order (descending score, then image,
    then rank) keeps every match (COCO matches in that order) and its cumulative TP / FP counts are
    a prefix of the set's. Only the true positives matter for the precision at each recall
    threshold: precision falls at every other detection, so the running maximum from the right,
    read at the first detection reaching a recall, is the maximum over the true positives from
    there on. Same float64 operations on the same whole counts, same numbers.

    Rows are in accumulate's order: ``k`` (category index), ``use`` (rank < max_det), per IoU
    threshold the positions of the true positives and of the ignored detections (``use`` ones),
    ``score``; ``index()``: (the input row of each, the input rows on the frames scored);
    ``outside``: scores and class ids of input rows on the frames that are not rows (classes the
    ground truth does not list)."""

    def __init__(
        self,
        category_ids: np.ndarray,
        iou_thresholds: np.ndarray,
        num_gt: np.ndarray,
        num_images: int,
        k: np.ndarray,
        use: np.ndarray | None,
        tp_pos: Sequence[np.ndarray],
        ign_pos: Sequence[np.ndarray],
        score: np.ndarray,
        index: Callable[[], tuple[np.ndarray, np.ndarray]],
        outside: tuple[np.ndarray, np.ndarray],
    ) -> None:
        self.category_ids, self.iou_thresholds = category_ids, iou_thresholds
        self.num_gt, self.num_images = num_gt, num_images
        self._index_of, self._index = index, None
        self.outside = outside
        K, T = len(category_ids), len(iou_thresholds)
        self.k = k
        self.bounds = np.searchsorted(k, np.arange(K + 1))
        self.neg_score = -score  # ascending within each class
        # rows counted before each position (use: rank < max_det; None: all)
        self.cum_use = None if use is None else np.r_[0, np.cumsum(use)]
        # every true positive of every (class, IoU threshold) "segment", flat: segments in order,
        # inside one by position; j = its TP count, pr = the precision there (accumulate's float64)
        segs, poss, prs = [], [], []
        for t, (p, q) in enumerate(zip(tp_pos, ign_pos)):
            kk = np.searchsorted(self.bounds, p, side="right") - 1
            a = self.bounds[kk]
            first = np.searchsorted(p, self.bounds[:-1])  # each class's first TP in p
            j = np.arange(1, len(p) + 1) - first[kk]
            ign = np.searchsorted(q, p, side="right") - np.searchsorted(q, a)
            fp = (self._used(p + 1) - self._used(a)) - j - ign  # use rows = tp + ign + fp
            jf = j.astype(np.float64)
            segs.append(kk * T + t)
            poss.append(p)
            prs.append(jf / (fp.astype(np.float64) + jf + np.spacing(1)))
        seg = np.concatenate(segs) if segs else np.zeros(0, np.int64)
        small = seg.astype(np.int16) if K * T < 2**15 else seg  # few keys: a radix sort
        by_seg = np.argsort(small, kind="stable")
        self.seg = seg[by_seg]
        self.pos = np.concatenate(poss)[by_seg] if segs else np.zeros(0, np.int64)
        pr = np.concatenate(prs)[by_seg] if segs else np.zeros(0)
        self.seg_start = np.searchsorted(self.seg, np.arange(K * T + 1))
        self.seg_key = self.seg * (len(k) + 1) + self.pos  # ascending
        self.precision = np.r_[pr, 0.0]  # one more: a reduceat may start at the end
        self.gt_classes = np.flatnonzero(num_gt > 0)
        # per class, the TP count that first reaches each recall threshold (1-based)
        self.first_tp = np.array(
            [
                np.searchsorted(
                    np.arange(1, n + 1, dtype=np.float64) / int(n), RECALL_THRESHOLDS, side="left"
                )
                + 1
                for n in num_gt[self.gt_classes]
            ],
            np.int64,
        ).reshape(len(self.gt_classes), len(RECALL_THRESHOLDS))

    def _used(self, i: np.ndarray) -> np.ndarray:
        """How many counted rows come before positions ``i``."""
        return i if self.cum_use is None else self.cum_use[i]

    def accumulate(self, keep: np.ndarray) -> Accumulated | None:
        """``accumulate(table.subset(keep))`` (``keep``: a mask over the input rows), or None when
        ``keep`` is not a prefix of every class in accumulate's order."""
        if self._index is None:
            self._index = self._index_of()
        index, frame_rows = self._index
        ks = np.asarray(keep, bool)[index]
        if np.any(ks[1:] & ~ks[:-1] & (self.k[1:] == self.k[:-1])):
            return None
        c = np.r_[0, np.cumsum(ks)]
        kept = c[self.bounds[1:]] - c[self.bounds[:-1]]
        n_det = int(np.count_nonzero(np.asarray(keep, bool)[frame_rows]))
        return self._prefixes(self.bounds[:-1] + kept, n_det)

    def accumulate_all(self, num_detections: int) -> Accumulated:
        """``accumulate`` of every row (``num_detections``: the set's detections, reported as is)."""
        return self._prefixes(self.bounds[1:].copy(), num_detections)

    def accumulate_scores(self, pre: np.ndarray, post: np.ndarray) -> Accumulated:
        """``accumulate`` of the detections whose score is ``>= pre[class id]`` and ``> post[class
        id]`` (float32 arrays indexed by class id, long enough for every class present): per class
        a prefix, found by bisection."""
        ends = self.bounds[:-1].copy()
        n_det = 0
        for kk in range(len(self.category_ids)):
            a, b = self.bounds[kk], self.bounds[kk + 1]
            if a == b:
                continue
            c = int(self.category_ids[kk])
            neg = self.neg_score[a:b]
            ge = np.searchsorted(neg, -np.float64(pre[c]), side="right")
            gt = np.searchsorted(neg, -np.float64(post[c]), side="left")
            ends[kk] = a + min(ge, gt)
            n_det += min(ge, gt)
        s, c = self.outside
        if len(s):
            n_det += int(np.count_nonzero((s >= pre[c]) & (s > post[c])))
        return self._prefixes(ends, n_det)

    def _prefixes(self, ends: np.ndarray, num_detections: int) -> Accumulated:
        """Accumulated of the prefixes ``[bounds[k], ends[k])`` of every class."""
        T, K, R = len(self.iou_thresholds), len(self.category_ids), len(RECALL_THRESHOLDS)
        precision = -np.ones((T, R, K))
        recall = -np.ones((T, K))
        S = K * T
        seg_ids = np.arange(S)
        n = len(self.k)
        # TPs of each segment in its class's prefix
        m = (
            np.searchsorted(self.seg_key, seg_ids * (n + 1) + ends[seg_ids // T])
            - (self.seg_start[:-1])
        )
        g = self.gt_classes
        if len(g):
            # the precision at recall threshold i is the maximum over the prefix's true positives
            # from the one that first reaches it on: the maximum of each stretch between two
            # thresholds' first true positives (one reduceat over the prefixes), then a running
            # maximum from the right over the stretches
            sg = g[:, None] * T + np.arange(T)[None, :]  # (G, T) segments
            j = self.first_tp[:, None, :]  # (G, 1, R)
            end = (self.seg_start[sg] + m[sg])[:, :, None]  # past the prefix's last true positive
            at = np.minimum(self.seg_start[sg][:, :, None] + j - 1, end)  # (G, T, R)
            stops = np.concatenate([at, end], axis=2)  # (G, T, R + 1), ascending when flat
            stretch = np.maximum.reduceat(self.precision, stops.reshape(-1)).reshape(stops.shape)
            stretch = np.where(np.diff(stops, axis=2) > 0, stretch[:, :, :R], 0.0)
            # 0 where no true positive of the prefix reaches the recall threshold
            p = np.maximum.accumulate(stretch[:, :, ::-1], axis=2)[:, :, ::-1]
            precision[:, :, g] = p.transpose(1, 2, 0)
            recall[:, g] = (m[sg].astype(np.float64) / self.num_gt[g][:, None]).T
            empty = g[self._used(ends[g]) == self._used(self.bounds[g])]
            precision[:, :, empty] = 0.0
            recall[:, empty] = 0.0
        return Accumulated(
            precision,
            recall,
            self.category_ids,
            self.iou_thresholds,
            self.num_images,
            num_detections,
        )


def same_scoring(parts: Sequence[Any], what: str) -> Any:
    """The first of ``parts`` (match tables or accumulate rows of disjoint frame sets), after checking
    that all were scored against the same categories and IoU thresholds (a ValueError naming
    ``what`` otherwise, or when there are none)."""
    if not parts:
        raise ValueError(f"{what}: nothing to concatenate")
    first = parts[0]
    for p in parts[1:]:
        if not np.array_equal(p.category_ids, first.category_ids) or not np.array_equal(
            p.iou_thresholds, first.iou_thresholds
        ):
            raise ValueError(f"{what}: parts scored against different categories")
    return first


@dataclass
class Accumulated:
    """COCO precision ``(T, R, K)`` (-1 for a class without ground truth that counts) and recall
    ``(T, K)`` at ``iou_thresholds`` x ``RECALL_THRESHOLDS`` x ``category_ids``."""

    precision: np.ndarray
    recall: np.ndarray
    category_ids: np.ndarray
    iou_thresholds: np.ndarray
    num_images: int
    num_detections: int


def accumulate(table: Any, max_det: int = 1000) -> Accumulated:
    """COCO's ``accumulate`` (area range all, ``max_det`` per image and class) of ``table``, a
    :class:`~dsprobe.analysis.matching.MatchTable` (typed ``Any``: that module imports this one)."""
    T, K, R = len(table.iou_thresholds), len(table.category_ids), len(RECALL_THRESHOLDS)
    precision = -np.ones((T, R, K))
    recall = -np.ones((T, K))
    use = np.flatnonzero(table.rank < max_det)
    k_of = np.searchsorted(table.category_ids, table.category_id[use])
    order = use[np.lexsort((table.rank[use], table.image_id[use], -table.score[use], k_of))]
    k_sorted = np.searchsorted(table.category_ids, table.category_id[order])
    bounds = np.searchsorted(k_sorted, np.arange(K + 1))
    tps = np.cumsum(table.tp[:, order], axis=1)
    fps = np.cumsum(~table.tp[:, order] & ~table.ignored[:, order], axis=1)
    for k in np.flatnonzero(table.num_gt > 0):
        a, b = bounds[k], bounds[k + 1]
        npig = int(table.num_gt[k])
        if a == b:
            precision[:, :, k] = 0.0
            recall[:, k] = 0.0
            continue
        tp = (tps[:, a:b] - (tps[:, a - 1 : a] if a else 0)).astype(float)
        fp = (fps[:, a:b] - (fps[:, a - 1 : a] if a else 0)).astype(float)
        rc = tp / npig
        pr = tp / (fp + tp + np.spacing(1))
        recall[:, k] = rc[:, -1]
        pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
        nd = b - a
        for t in range(T):
            inds = np.searchsorted(rc[t], RECALL_THRESHOLDS, side="left")
            inside = inds < nd
            precision[t, inside, k] = pr[t, inds[inside]]
            precision[t, ~inside, k] = 0.0
    return Accumulated(
        precision,
        recall,
        table.category_ids,
        table.iou_thresholds,
        len(table.image_ids),
        table.num_detections,
    )
