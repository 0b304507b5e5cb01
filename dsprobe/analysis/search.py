"""Fast re-runs and automatic parameter search: decode once, then re-run threshold / clustering /
scaling for many settings and score each against ground truth (or a reference set of detections).

:class:`Reclusterer` re-runs a :class:`~dsprobe.postprocess.pipeline.Postprocess` on cached decoder
output and returns exactly what ``DecodedRecording.run`` returns, faster. For the usual nvinfer chain
``decode -> filter:threshold -> cluster:nms|none -> per-box steps`` it clusters every frame once per
clustering setting at the lowest threshold asked for, and gets each pre-cluster threshold, post-cluster
threshold and top-k from that by masking. That is exact because greedy NMS visits boxes by descending
score: a box's fate depends only on higher-scoring boxes, so dropping every box below a threshold
never changes the fate of the others; top-k and the post-cluster threshold also only cut each
class's score-ordered list. Any other chain falls back to running the steps.

:func:`search` scores each setting with COCO mAP (pycocotools' numbers, computed by
:mod:`dsprobe.analysis.matching`): per clustering setting it matches every box once and accumulates
each threshold / top-k from the rows it keeps (exact for the same reason: COCO matches detections
greedily in descending score order; when a cut is not a low-score suffix it matches that subset
afresh).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from dsprobe.analysis.evaluate import (
    EvalResult,
    GroundTruth,
    coco_scores,
    empty_result,
    evaluate,
    frame_image_id,
)
from dsprobe.analysis.matching import accumulate, detection_arrays, match_table
from dsprobe.analysis.settings import apply_params, get_param, param_owner, plain, step_defaults
from dsprobe.detections import Detections
from dsprobe.postprocess.cluster import per_row as values_per_row
from dsprobe.postprocess.pipeline import Postprocess, PostprocessError
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
    threshold: boxes in network pixels, flat over frames in cluster output order."""

    floor: float
    per_row: dict[int, Detections]
    offsets: dict[int, int]
    scores: np.ndarray
    class_ids: np.ndarray
    group_start: np.ndarray  # flat index of the first box of each box's (frame, class) run


@dataclass
class Selection:
    """The boxes a setting keeps, over every frame: the boxes that survive the per-box steps after
    clustering (flat, frame row order: ``rows``, ``boxes`` frame px, ``scores``, ``class_ids``)
    and ``keep``, a mask over them. ``per_row``: ``{row: (Detections, flat indices)}``."""

    rows: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    per_row: dict[int, tuple[Detections, np.ndarray]]
    keep: np.ndarray
    key: str = ""

    def detections(self) -> dict[int, Detections]:
        return {r: d[self.keep[idx]] for r, (d, idx) in self.per_row.items()}


def _key(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=plain)


class Reclusterer:
    """Re-runs postprocess settings on decoded candidates (``pp.decode_recording(rec)``), exactly as
    ``DecodedRecording.run`` would, with cached clustering for the nvinfer chain (see module doc).

    ``floor``: the lowest pre-cluster threshold to cluster at when a setting first needs clustering
    (lower requests re-cluster; default: the requested threshold). ``max_cached`` clusterings are kept.
    """

    def __init__(
        self, decoded: DecodedRecording, floor: float | None = None, max_cached: int = 8
    ) -> None:
        self.decoded = decoded
        self.floor = floor
        self.max_cached = max_cached
        self._clustered: dict[str, _Clustered] = {}
        self._scaled: dict[str, tuple[np.ndarray, ...]] = {}
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
        thr = pp.steps[1].params.get(
            "pre_cluster_threshold", step_defaults(pp.steps[1], False)["pre_cluster_threshold"]
        )
        cl = self._clustering(pp, float(np.min(thr)))
        key = self._post_key(pp, cl)
        rows, boxes, scores, classes, tags, per_row = self._scaled.get(key) or self._scale(
            pp, cl, key
        )
        cparams = pp.steps[2].params
        mask = cl.scores >= values_per_row(thr, cl.class_ids, "pre_cluster_threshold")
        if pp.steps[2].name == "nms":
            post = cparams.get("post_cluster_threshold", 0.0)
            mask &= cl.scores > values_per_row(post, cl.class_ids, "post_cluster_threshold")
        topk = values_per_row(cparams.get("topk", -1), cl.class_ids, "topk", np.int64)
        if len(mask) and np.any(topk >= 0):
            csum = np.cumsum(mask)
            rank = csum - (
                csum[cl.group_start] - mask[cl.group_start]
            )  # 1-based rank among kept in run
            mask &= (topk < 0) | (rank <= topk)
        return Selection(rows, boxes, scores, classes, per_row, mask[tags], key)

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
        new_run = np.ones(len(scores_a), bool)
        new_run[1:] = (row_a[1:] != row_a[:-1]) | (classes_a[1:] != classes_a[:-1])
        group_start = np.maximum.accumulate(np.where(new_run, np.arange(len(scores_a)), 0))
        cl = _Clustered(floor, per_row, offsets, scores_a, classes_a, group_start)
        self.cluster_runs += 1
        if key in self._clustered:
            del self._clustered[key]
        self._clustered[key] = cl
        while len(self._clustered) > self.max_cached:
            del self._clustered[next(iter(self._clustered))]
        return cl

    def _scale(self, pp: Postprocess, cl: _Clustered, key: str) -> tuple:
        """Run the steps after clustering on every clustered box, tagged to follow survivors."""
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
        )
        self._scaled[key] = value
        while len(self._scaled) > self.max_cached:
            del self._scaled[next(iter(self._scaled))]
        return value


def _selection_frame(
    rec: Any, sel: Selection, mask: np.ndarray, labels: Sequence[str] = ()
) -> pd.DataFrame:
    """A detections DataFrame (as ``detections_frame`` makes) of the selected boxes, built flat."""
    rows = sel.rows[mask]
    b = sel.boxes[mask]
    if rec is not None:
        src = rec.frames["source_id"].to_numpy()[rows].astype(int)
        fnum = rec.frames["frame_num"].to_numpy()[rows].astype(int)
    else:
        src, fnum = np.zeros(len(rows), int), rows.astype(int)
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


# ---------------------------------------------------------------------------------------------- scoring
class _Scorer:
    """COCO mAP of many subsets of one detection set: every box is matched once
    (:func:`~dsprobe.analysis.matching.match_table`), then each subset is accumulated from the rows
    it keeps (exact when, per frame and class, it drops a low-score suffix: COCO matches greedily in
    descending score; any other cut is matched afresh)."""

    def __init__(
        self, rec: Any, sel: Selection, gt: GroundTruth, frames: Sequence[tuple[int, int]]
    ) -> None:
        self.gt = gt
        self.ids = sorted({frame_image_id(s, f) for s, f in frames})
        self.dets = detection_arrays(_selection_frame(rec, sel, np.ones(len(sel.rows), bool)))
        self.table = match_table(self.dets, gt, self.ids)
        self.rematched = 0  # subsets matched afresh (for tests)

    def score(self, keep: np.ndarray) -> EvalResult:
        table = self.table.subset(keep)
        if table is None:
            self.rematched += 1
            table = match_table({k: v[keep] for k, v in self.dets.items()}, self.gt, self.ids)
        if table.num_detections == 0:
            return empty_result(self.gt, self.ids)
        return coco_scores(accumulate(table), self.gt)


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


def _combos(
    grid: Mapping[str, Sequence[Any]], method: str, n_random: int, seed: int
) -> list[tuple]:
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
) -> SearchResult:
    """Try every combination of ``grid`` (``method="grid"``) or ``n_random`` of them drawn at random
    (``"random"``), re-using the decoded candidates; score each with COCO mAP against ``gt`` over
    ``frames`` ((source_id, frame_num); default every decoded frame). ``grid`` maps param names
    (``pre_cluster_threshold``, ``iou_threshold``, ``topk``, ``post_cluster_threshold``, object filter
    params, any cluster step param) to value lists. ``metric``: "map50" or "map50_95"."""
    if metric not in ("map50", "map50_95"):
        raise ValueError(f"search: metric must be 'map50' or 'map50_95', got {metric!r}")
    names = list(grid)
    combos = _combos(grid, method, n_random, seed)
    base = decoded.postprocess
    for n in names:
        param_owner(base, n)  # fail early on a name no step takes
    rec = decoded.recording
    if frames is None:
        f = rec.frames.iloc[sorted(decoded.candidates)]
        frames = list(zip(f["source_id"].astype(int), f["frame_num"].astype(int)))
    if reclusterer is None:
        floors = [float(np.min(v)) for v in grid.get("pre_cluster_threshold", [])]
        floors.append(float(np.min(get_param(base, "pre_cluster_threshold"))))
        reclusterer = Reclusterer(decoded, floor=min(floors))
    settings = [dict(zip(names, (plain(v) for v in combo))) for combo in combos]
    pps = [apply_params(base, p) for p in settings]
    # settings that share a clustering run back to back, so each clustering is evaluated once
    group = [reclusterer._cluster_key(pp) if reclusterer.fast_path(pp) else "" for pp in pps]
    order = sorted(range(len(pps)), key=lambda i: group[i])
    scorer: tuple[str, _Scorer] | None = None
    results: dict[int, EvalResult] = {}
    it: Iterable = order
    if progress:
        try:
            from tqdm.auto import tqdm

            it = tqdm(order, desc="search", unit="setting")
        except ImportError:
            pass
    for i in it:
        pp = pps[i]
        r = None
        if group[i]:
            sel = reclusterer.select(pp)
            if scorer is None or scorer[0] != sel.key:
                scorer = (sel.key, _Scorer(rec, sel, gt, frames))
            r = scorer[1].score(sel.keep)
        else:
            r = evaluate(reclusterer.detections_frame(pp), gt, frames)
        results[i] = r
    rows = [
        {
            **settings[i],
            "map50": results[i].map50,
            "map50_95": results[i].map50_95,
            "detections": results[i].num_detections,
        }
        for i in range(len(settings))
    ]
    table = (
        pd.DataFrame(rows)
        .sort_values(metric, ascending=False, kind="stable")
        .reset_index(drop=True)
    )
    best_params = {n: plain(table.iloc[0][n]) for n in names}
    return SearchResult(table, best_params, apply_params(base, best_params), metric)
