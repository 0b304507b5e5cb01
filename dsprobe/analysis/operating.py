"""Operating points: the best settings under each objective, side by side, and per-class thresholds.

:func:`search_objectives` tries every setting of a grid on a decoded recording (as
:func:`dsprobe.analysis.search.search` does) and scores each under every objective of
:mod:`dsprobe.analysis.objectives` (mAP@0.5, mAP@0.5:0.95, F1, precision at a target recall, recall at
a target precision, F1 within a false-positives-per-frame budget). Matching is done once per
clustering setting, at the grid's lowest threshold; each threshold / top-k is a mask of that table
(exact: COCO matching visits detections by descending score). The result:

* ``table``: one row per setting, every objective a column;
* ``best_table()``: one row per objective: its best setting, value, precision, recall, F1, mAP and
  false positives per frame, and a warning when a best value sits on the edge of the grid;
* ``per_class(objective)``: the best threshold of each class on its own (exported as per-class
  ``[class-attrs-N]`` by :func:`dsprobe.analysis.export.to_nvinfer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from dsprobe.analysis.evaluate import GroundTruth, check_recording_ground_truth
from dsprobe.analysis.objectives import (
    OBJECTIVES,
    ClassThresholds,
    Matches,
    Objective,
    edge_warning,
    match_table_of,
    objective,
    per_class_thresholds,
    score_all,
)
from dsprobe.analysis.search import Reclusterer
from dsprobe.detections import Detections
from dsprobe.postprocess.params import plain
from dsprobe.postprocess.pipeline import Postprocess


class SettingScorer:
    """Match tables of postprocess settings on a decoded recording's ``rows`` against ``gt``, cached
    per clustering setting (a threshold / top-k change is a mask of the cached table)."""

    def __init__(self, reclusterer: Reclusterer, gt: GroundTruth, rows: Iterable[int]) -> None:
        self.reclusterer, self.gt = reclusterer, gt
        self.rows = np.asarray(sorted(int(r) for r in rows), np.int64)
        f = reclusterer.decoded.recording.frames
        src, fnum = f["source_id"].to_numpy(), f["frame_num"].to_numpy()
        self._key_of_row = {int(r): (int(src[r]), int(fnum[r])) for r in self.rows}
        self._gt: dict[tuple[int, int], Detections] = {}
        b = gt.boxes
        if len(b):
            xy, cls = b[["x1", "y1", "x2", "y2"]].to_numpy(float), b["class_id"].to_numpy()
            for key, idx in b.groupby(["source_id", "frame_num"]).indices.items():
                self._gt[(int(key[0]), int(key[1]))] = Detections(
                    xy[idx], np.ones(len(idx)), cls[idx], "frame"
                )
        self._cache: dict[str, Matches] = {}

    def gt_for_row(self, row: int) -> Detections:
        key = self._key_of_row.get(int(row), (-1, -1))
        return self._gt.get(key, Detections.empty("frame"))

    def matches(self, pp: Postprocess) -> Matches:
        """``pp``'s detections on the rows, matched (COCO, IoU 0.5:0.95)."""
        rc = self.reclusterer
        if not rc.fast_path(pp):
            per = rc.run(pp)
            rows = [r for r in self.rows if r in per]
            parts = [(per[r], self.gt_for_row(r)) for r in rows]
            return match_table_of(parts, len(self.rows), rows=rows)
        sel = rc.select(pp)
        full = self._cache.get(sel.key)
        if full is None:
            rows = list(sel.per_row)
            parts = [(d, self.gt_for_row(r)) for r, (d, _) in sel.per_row.items()]
            full = match_table_of(parts, len(self.rows), rows=rows)
            self._cache[sel.key] = full
            while len(self._cache) > 4:
                del self._cache[next(iter(self._cache))]
        inside = np.isin(full.rows, self.rows)
        return full.subset(sel.keep & inside)


@dataclass
class ObjectiveSearch:
    """Every setting tried, scored under every objective (see the module doc)."""

    table: pd.DataFrame
    params: list[str]
    objectives: list[Objective]
    base: Postprocess
    grid: Mapping[str, Sequence[Any]]
    scorer: SettingScorer
    labels: list[str] = field(default_factory=list)

    def best_params(self, obj: str | Objective) -> dict[str, Any]:
        col = self._column(obj)
        row = self.table.loc[self.table[col].idxmax()]
        return {n: plain(row[n]) for n in self.params}

    def best(self, obj: str | Objective) -> Postprocess:
        """The best setting under ``obj`` as a Postprocess."""
        return self.base.set_params(self.best_params(obj))

    def _column(self, obj: str | Objective) -> str:
        o = objective(obj)
        for have in self.objectives:
            if have.label == o.label or (have.name == o.name and have.params == o.params):
                return have.label
        raise ValueError(f"{o.label} was not scored; scored: {[x.label for x in self.objectives]}")

    def warnings(self, obj: str | Objective) -> list[str]:
        """Edge-of-grid warnings for the best setting under ``obj``."""
        best = self.best_params(obj)
        out = []
        for n in self.params:
            w = edge_warning(self.grid[n], best[n], n)
            if w and len(set(self.grid[n])) > 1:
                out.append(w)
        return out

    def best_table(self) -> pd.DataFrame:
        """One row per objective: its best setting and how that setting does on the other measures."""
        rows = []
        for o in self.objectives:
            col = o.label
            r = self.table.loc[self.table[col].idxmax()]
            rows.append(
                {
                    "objective": col,
                    **{n: plain(r[n]) for n in self.params},
                    "value": r[col],
                    "precision": r["precision"],
                    "recall": r["recall"],
                    "f1": r["f1"],
                    "map50": r["map50"],
                    "fp_per_frame": r["fp_per_frame"],
                    "detections": int(r["detections"]),
                    "warning": "; ".join(self.warnings(o)),
                }
            )
        return pd.DataFrame(rows).set_index("objective")

    def matches_below(self, pp: Postprocess) -> Matches:
        """``pp``'s match table at the grid's lowest pre-cluster threshold (its other params kept):
        what PR and F1-over-confidence curves are drawn from, with ``pp``'s threshold marked."""
        grid = self.grid.get("pre_cluster_threshold") or [0.0]
        return self.scorer.matches(pp.set_params({"pre_cluster_threshold": min(grid)}))

    def per_class(
        self,
        obj: str | Objective = "f1",
        thresholds: Sequence[float] | None = None,
        setting: Mapping[str, Any] | None = None,
    ) -> tuple[ClassThresholds, Postprocess]:
        """Per-class pre-cluster thresholds maximising ``obj`` for each class on its own, with the
        other params of ``setting`` (default: the best setting under ``obj``); ``thresholds``: the
        values tried (default the grid's). Returns the result and the Postprocess with those
        per-class thresholds (nvinfer: one ``[class-attrs-N]`` section per class)."""
        base_params = dict(setting or self.best_params(obj))
        grid = list(thresholds or self.grid.get("pre_cluster_threshold") or [])
        if not grid:
            raise ValueError("per_class: give thresholds= (the grid has no pre_cluster_threshold)")
        low = self.base.set_params({**base_params, "pre_cluster_threshold": min(grid)})
        res = per_class_thresholds(self.scorer.matches(low), grid, obj, self.labels)
        n = self.base.num_classes or (max(res.thresholds, default=-1) + 1)
        per = [res.thresholds.get(c, min(grid)) for c in range(n)]
        pp = self.base.set_params({**base_params, "pre_cluster_threshold": per})
        return res, pp


def search_objectives(
    decoded: Any,
    gt: GroundTruth,
    grid: Mapping[str, Sequence[Any]],
    *,
    objectives: Sequence[str | Objective] | None = None,
    frames: Sequence[tuple[int, int]] | None = None,
    reclusterer: Reclusterer | None = None,
    progress: bool = False,
) -> ObjectiveSearch:
    """Score every combination of ``grid`` under every objective (default all of ``OBJECTIVES`` with
    their default targets) against ``gt`` over ``frames`` (default every decoded frame)."""
    import itertools

    objs = [objective(o) for o in (objectives or list(OBJECTIVES))]
    base = decoded.postprocess
    names = list(grid)
    for n in names:
        if not len(grid[n]):
            raise ValueError(f"search_objectives: no values given for {n!r}")
        base.get_param(n)  # fail early on a name no step takes
    rec = decoded.recording
    check_recording_ground_truth(gt, rec)
    rows = sorted(decoded.candidates)
    if frames is not None:
        want = {(int(s), int(f)) for s, f in frames}
        fr = rec.frames
        rows = [r for r in rows if (int(fr.at[r, "source_id"]), int(fr.at[r, "frame_num"])) in want]
    if reclusterer is None:
        floors = [float(np.min(v)) for v in grid.get("pre_cluster_threshold", [])]
        floors.append(float(np.min(base.get_param("pre_cluster_threshold"))))
        reclusterer = Reclusterer(decoded, floor=min(floors))
    scorer = SettingScorer(reclusterer, gt, rows)
    settings = [dict(zip(names, (plain(v) for v in c))) for c in itertools.product(*grid.values())]
    it: Iterable = settings
    if progress:
        try:
            from tqdm.auto import tqdm

            it = tqdm(settings, desc="objectives", unit="setting")
        except ImportError:
            pass
    out = []
    for p in it:
        m = scorer.matches(base.set_params(p))
        out.append({**p, **score_all(m, objs), "detections": len(m)})
    table = pd.DataFrame(out)
    return ObjectiveSearch(table, names, objs, base, dict(grid), scorer, list(base.labels))
