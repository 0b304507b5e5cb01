"""What "best" means: objectives scored from a match table (which detection matched ground truth at
which IoU), pure functions of numpy arrays, so a search, a widget or a Dask job can share them.

A :class:`Matches` holds, for every detection of a setting over a set of frames, its score, class
and whether it is a true positive at each COCO IoU threshold (0.5, 0.55, ... 0.95), plus the number
of ground-truth boxes per class and of frames. Because COCO matching visits detections by descending
score, dropping every detection below a confidence never changes the matches of the others:
``table.cut(threshold)`` is exactly the table of the higher threshold (per class with a per-class
threshold), which is what makes threshold sweeps cheap.

Objectives (``OBJECTIVES``; all "higher is better"):

* ``map50``, ``map50_95``: COCO mAP (101-point interpolated AP, mean over classes with ground truth);
* ``f1``: F1 at IoU 0.5 of the setting's detections;
* ``precision_at_recall`` (``target``): precision when recall >= target, else ``recall - target``
  (negative: how far short of the target the setting is);
* ``recall_at_precision`` (``target``): likewise with the roles swapped;
* ``f1_fp_budget`` (``fp_per_frame``): F1 while false positives per frame stay within the budget, else
  ``budget - fp_per_frame`` (negative).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

#: COCO's IoU thresholds 0.5:0.05:0.95
COCO_IOUS = np.round(np.linspace(0.5, 0.95, 10), 2)
_REC_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass(frozen=True)
class Matches:
    """Detections matched to ground truth: ``scores`` (D,), ``class_ids`` (D,), ``tp`` (D, T) bool at
    ``iou_thresholds`` (T,), ``num_gt`` {class id: ground-truth boxes}, ``num_frames`` scored.
    ``rows`` (D,): each detection's frame row (for per-frame views; -1 when unknown)."""

    scores: np.ndarray
    class_ids: np.ndarray
    tp: np.ndarray
    num_gt: Mapping[int, int]
    num_frames: int
    iou_thresholds: np.ndarray = field(default_factory=lambda: COCO_IOUS.copy())
    rows: np.ndarray | None = None
    ignored: np.ndarray | None = None  # (D, T): neither TP nor FP (matched a crowd region)

    def __len__(self) -> int:
        return len(self.scores)

    def subset(self, mask: np.ndarray) -> "Matches":
        """The detections ``mask`` keeps (ground truth unchanged)."""
        return Matches(
            self.scores[mask],
            self.class_ids[mask],
            self.tp[mask],
            self.num_gt,
            self.num_frames,
            self.iou_thresholds,
            None if self.rows is None else self.rows[mask],
        )

    def cut(self, threshold: float | Mapping[int, float]) -> "Matches":
        """Detections with ``score >= threshold`` (one value, or {class id: value}; classes not named
        keep every detection). Exact for COCO matching (see the module doc)."""
        if isinstance(threshold, Mapping):
            thr = np.array([threshold.get(int(c), -np.inf) for c in self.class_ids], np.float64)
        else:
            thr = float(threshold)
        return self.subset(self.scores >= thr)

    def for_class(self, class_id: int) -> "Matches":
        """One class's detections and ground truth."""
        t = self.subset(self.class_ids == class_id)
        return Matches(
            t.scores,
            t.class_ids,
            t.tp,
            {class_id: self.num_gt.get(class_id, 0)},
            self.num_frames,
            self.iou_thresholds,
            t.rows,
        )

    @property
    def total_gt(self) -> int:
        return int(sum(self.num_gt.values()))

    def fp(self, i: int) -> np.ndarray:
        """False positives at IoU threshold number ``i`` (not matched, not ignored)."""
        f = ~self.tp[:, i]
        return f if self.ignored is None else f & ~self.ignored[:, i]

    def iou_index(self, iou: float) -> int:
        hit = np.flatnonzero(np.isclose(self.iou_thresholds, iou))
        if not len(hit):
            raise ValueError(
                f"IoU {iou} is not one of the table's thresholds {self.iou_thresholds}"
            )
        return int(hit[0])


# ---------------------------------------------------------------------------------------------- counts
def counts(t: Matches, iou: float = 0.5) -> tuple[int, int, int]:
    """(true positives, false positives, misses) at IoU ``iou``."""
    i = t.iou_index(iou)
    tp = int(t.tp[:, i].sum())
    return tp, int(t.fp(i).sum()), t.total_gt - tp


def precision_recall_f1(t: Matches, iou: float = 0.5) -> tuple[float, float, float]:
    """Precision, recall and F1 at IoU ``iou`` (precision 1 with no detection, recall 1 with no
    ground truth: nothing was wrong)."""
    tp, fp, fn = counts(t, iou)
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def average_precision(t: Matches, iou_index: int = 0) -> dict[int, float]:
    """COCO AP per class at one IoU threshold: 101-point interpolated precision over recall, detections
    in descending score order (stable, as pycocotools sorts); NaN for a class with no ground truth."""
    out = {}
    classes = sorted(set(t.num_gt) | set(np.unique(t.class_ids).tolist()))
    for c in classes:
        n = t.num_gt.get(c, 0)
        if n == 0:
            out[int(c)] = float("nan")
            continue
        m = t.class_ids == c
        order = np.argsort(-t.scores[m], kind="mergesort")
        tp = t.tp[m][order, iou_index].astype(np.float64)
        fp = t.fp(iou_index)[m][order].astype(np.float64)
        if not len(tp):
            out[int(c)] = 0.0
            continue
        ctp, cfp = np.cumsum(tp), np.cumsum(fp)
        rec = ctp / n
        prec = ctp / np.maximum(ctp + cfp, np.spacing(1))
        prec = np.maximum.accumulate(prec[::-1])[::-1]
        idx = np.searchsorted(rec, _REC_POINTS, side="left")
        q = np.where(idx < len(prec), prec[np.minimum(idx, len(prec) - 1)], 0.0)
        out[int(c)] = float(q.mean())
    return out


def mean_ap(t: Matches, iou_indices: Sequence[int] | None = None) -> float:
    """Mean AP over classes with ground truth and over ``iou_indices`` (default all: mAP@0.5:0.95)."""
    idx = range(len(t.iou_thresholds)) if iou_indices is None else iou_indices
    per = [[v for v in average_precision(t, i).values() if v == v] for i in idx]
    vals = [np.mean(p) for p in per if p]
    return float(np.mean(vals)) if vals else 0.0


# ---------------------------------------------------------------------------------------------- objectives
def map50(t: Matches) -> float:
    return mean_ap(t, [t.iou_index(0.5)])


def map50_95(t: Matches) -> float:
    return mean_ap(t)


def f1(t: Matches) -> float:
    return precision_recall_f1(t)[2]


def precision_at_recall(t: Matches, target: float = 0.9) -> float:
    p, r, _ = precision_recall_f1(t)
    return p if r >= target else r - target


def recall_at_precision(t: Matches, target: float = 0.9) -> float:
    p, r, _ = precision_recall_f1(t)
    return r if p >= target else p - target


def f1_fp_budget(t: Matches, fp_per_frame: float = 0.1) -> float:
    fp = counts(t)[1] / max(t.num_frames, 1)
    return f1(t) if fp <= fp_per_frame else fp_per_frame - fp


@dataclass(frozen=True)
class Objective:
    """A named objective: ``fn(table, **params)``, higher is better."""

    name: str
    fn: Callable[..., float]
    params: Mapping[str, float] = field(default_factory=dict)
    description: str = ""

    def __call__(self, t: Matches) -> float:
        return float(self.fn(t, **self.params))

    @property
    def label(self) -> str:
        extra = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"{self.name}({extra})" if extra else self.name


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective("map50", map50, {}, "COCO mAP at IoU 0.5"),
        Objective("map50_95", map50_95, {}, "COCO mAP at IoU 0.5:0.95"),
        Objective("f1", f1, {}, "F1 at IoU 0.5"),
        Objective(
            "precision_at_recall",
            precision_at_recall,
            {"target": 0.9},
            "precision while recall >= target",
        ),
        Objective(
            "recall_at_precision",
            recall_at_precision,
            {"target": 0.9},
            "recall while precision >= target",
        ),
        Objective(
            "f1_fp_budget",
            f1_fp_budget,
            {"fp_per_frame": 0.1},
            "F1 while false positives per frame <= budget",
        ),
    )
}


def objective(spec: str | Objective, **params: float) -> Objective:
    """An objective by name (``OBJECTIVES``), with its params overridden: ``objective("f1_fp_budget",
    fp_per_frame=0.5)``."""
    if isinstance(spec, Objective):
        return (
            spec
            if not params
            else Objective(spec.name, spec.fn, {**spec.params, **params}, spec.description)
        )
    if spec not in OBJECTIVES:
        raise ValueError(f"unknown objective {spec!r}; choose one of {sorted(OBJECTIVES)}")
    base = OBJECTIVES[spec]
    bad = set(params) - set(base.params)
    if bad:
        raise ValueError(
            f"objective {spec!r} takes {sorted(base.params) or 'no params'}, got {sorted(bad)}"
        )
    return Objective(base.name, base.fn, {**base.params, **params}, base.description)


def score_all(t: Matches, objectives: Sequence[Objective] | None = None) -> dict[str, float]:
    """Precision, recall, F1, mAP@0.5, TP, FP, misses and FP per frame, plus every objective of
    ``objectives`` (default ``OBJECTIVES``) under its label (``name(param=value)`` when it has params)."""
    p, r, f = precision_recall_f1(t)
    tp, fp, fn = counts(t)
    out = {
        "precision": p,
        "recall": r,
        "f1": f,
        "map50": map50(t),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "fp_per_frame": fp / max(t.num_frames, 1),
    }
    for o in objectives or OBJECTIVES.values():
        if o.label not in out:
            out[o.label] = o(t)
    return out


# ---------------------------------------------------------------------------------------------- sweeps
def confidence_sweep(
    t: Matches, thresholds: Sequence[float] | None = None, iou: float = 0.5
) -> pd.DataFrame:
    """Precision, recall, F1, TP, FP and FP per frame at each confidence ``threshold`` (default every
    distinct score): the curves behind PR and F1-vs-confidence plots."""
    i = t.iou_index(iou)
    order = np.argsort(-t.scores, kind="mergesort")
    s, tp, fp = t.scores[order], t.tp[order, i], t.fp(i)[order]
    ctp, cfp, n = np.cumsum(tp), np.cumsum(fp), t.total_gt
    thr = np.unique(s)[::-1] if thresholds is None else np.asarray(thresholds, np.float64)
    k = np.searchsorted(-s, -thr, side="right")  # detections with score >= thr
    tps = np.where(k > 0, ctp[np.maximum(k - 1, 0)] if len(ctp) else 0, 0)
    fps = np.where(k > 0, cfp[np.maximum(k - 1, 0)] if len(cfp) else 0, 0)
    p = np.where(tps + fps > 0, tps / np.maximum(tps + fps, 1), 1.0)
    r = tps / n if n else np.ones(len(thr))
    f = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0.0)
    return pd.DataFrame(
        {
            "threshold": thr,
            "precision": p,
            "recall": r,
            "f1": f,
            "tp": tps,
            "fp": fps,
            "fp_per_frame": fps / max(t.num_frames, 1),
        }
    )


def edge_warning(values: Sequence[float], best: float, name: str) -> str | None:
    """A sentence when ``best`` is the lowest or highest of the grid ``values`` (the optimum may lie
    beyond it: widen the grid), else None."""
    v = sorted(set(float(x) for x in values))
    if len(v) < 2 or float(best) not in (v[0], v[-1]):
        return None
    side = "lowest" if float(best) == v[0] else "highest"
    return (
        f"best {name} {best:g} is the {side} value of the grid {v[0]:g}..{v[-1]:g}: "
        f"the optimum may lie beyond it; widen the grid"
    )


@dataclass
class ClassThresholds:
    """A per-class threshold search: ``thresholds`` {class id: best threshold}, ``table`` (one row per
    class: class_id, threshold, value, precision, recall, fp_per_frame), ``warnings`` (edge of grid)."""

    thresholds: dict[int, float]
    table: pd.DataFrame
    objective: str
    warnings: list[str]


def per_class_thresholds(
    t: Matches, grid: Sequence[float], obj: str | Objective = "f1", labels: Sequence[str] = ()
) -> ClassThresholds:
    """For each class with ground truth or detections, the threshold of ``grid`` that maximises ``obj``
    on that class alone (classes are independent: nvinfer clusters and thresholds per class). ``t``
    must hold the detections at (or below) the lowest grid value."""
    o = objective(obj)
    grid = sorted(float(g) for g in grid)
    classes = sorted(set(t.num_gt) | set(np.unique(t.class_ids).tolist()))
    rows, best, warns = [], {}, []
    for c in classes:
        tc = t.for_class(int(c))
        vals = [o(tc.cut(g)) for g in grid]
        k = int(np.nanargmax(vals))
        cut = tc.cut(grid[k])
        p, r, _ = precision_recall_f1(cut)
        best[int(c)] = grid[k]
        rows.append(
            {
                "class_id": int(c),
                "label": labels[c] if 0 <= c < len(labels) else str(c),
                "threshold": grid[k],
                "value": vals[k],
                "precision": p,
                "recall": r,
                "fp_per_frame": counts(cut)[1] / max(t.num_frames, 1),
            }
        )
        w = edge_warning(grid, grid[k], f"threshold for class {rows[-1]['label']}")
        if w:
            warns.append(w)
    return ClassThresholds(best, pd.DataFrame(rows), o.label, warns)


def match_table_of(
    parts: Sequence[tuple[Any, Any]],
    num_frames: int,
    iou_thresholds: Sequence[float] = COCO_IOUS,
    rows: Sequence[int] | None = None,
) -> Matches:
    """A Matches from per-frame ``(detections, ground truth)`` pairs (Detections, frame px), matched
    the COCO way (:func:`dsprobe.analysis.errors.frame_matches`)."""
    from dsprobe.analysis.errors import frame_matches

    sc, cl, tp, rr, ngt = [], [], [], [], {}
    for k, (d, g) in enumerate(parts):
        m = frame_matches(d, g, iou_thresholds)
        sc.append(d.scores)
        cl.append(d.class_ids)
        tp.append(m >= 0)
        rr.append(np.full(len(d), -1 if rows is None else rows[k], np.int64))
        for c, n in zip(*np.unique(g.class_ids, return_counts=True)):
            ngt[int(c)] = ngt.get(int(c), 0) + int(n)
    T = len(iou_thresholds)
    cat = lambda a, e: np.concatenate(a) if a else e  # noqa: E731
    return Matches(
        cat(sc, np.zeros(0, np.float32)).astype(np.float64),
        cat(cl, np.zeros(0, np.int64)),
        cat(tp, np.zeros((0, T), bool)),
        ngt,
        num_frames,
        np.asarray(iou_thresholds, np.float64),
        cat(rr, np.zeros(0, np.int64)),
    )
