"""Automatic parameter search: decode once, then re-run threshold / clustering for many settings and
score each against ground truth (or a reference set of detections)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from dsprobe.evaluate import GroundTruth, evaluate
from dsprobe.postprocess.pipeline import DecodedRecording, Postprocess, detections_frame

#: searchable params -> the step kind that owns them
SEARCHABLE = {"pre_cluster_threshold": "filter", "iou_threshold": "cluster", "topk": "cluster",
              "post_cluster_threshold": "cluster"}


@dataclass
class SearchResult:
    """One row per setting tried (params + map50 + map50_95 + detections), best first."""

    table: pd.DataFrame
    best_params: dict[str, Any]
    best: Postprocess
    metric: str

    def pivot(self, index: str = "pre_cluster_threshold", columns: str = "iou_threshold") -> pd.DataFrame:
        """The metric as a 2-D table (for a heat map), best over the other params."""
        return self.table.pivot_table(index=index, columns=columns, values=self.metric, aggfunc="max")


def apply_params(pp: Postprocess, params: Mapping[str, Any]) -> Postprocess:
    """``pp`` with searchable params set in the steps that own them."""
    out = pp
    for name, value in params.items():
        kind = SEARCHABLE.get(name)
        if kind is None:
            raise ValueError(f"search: {name!r} is not searchable; choose from {sorted(SEARCHABLE)}")
        value = value.item() if isinstance(value, np.generic) else value
        if kind == "filter":
            out = out.with_params(next(i for i, s in enumerate(out.steps) if s.kind == "filter"
                                       and s.name == "threshold"), **{name: value})
        else:
            out = out.with_params("cluster", **{name: value})
    return out


def search(decoded: DecodedRecording, gt: GroundTruth, grid: Mapping[str, Sequence[Any]], *,
           frames: Sequence[tuple[int, int]] | None = None, metric: str = "map50", method: str = "grid",
           n_random: int = 20, seed: int = 0, progress: bool = False) -> SearchResult:
    """Try every combination of ``grid`` (``method="grid"``) or ``n_random`` random ones, re-using the
    decoded candidates; score with COCO mAP against ``gt``. ``metric``: "map50" or "map50_95"."""
    if metric not in ("map50", "map50_95"):
        raise ValueError(f"search: metric must be 'map50' or 'map50_95', got {metric!r}")
    names = list(grid)
    combos = list(itertools.product(*(grid[n] for n in names)))
    if method == "random":
        rng = np.random.default_rng(seed)
        combos = [combos[i] for i in rng.choice(len(combos), size=min(n_random, len(combos)), replace=False)]
    elif method != "grid":
        raise ValueError(f"search: method must be 'grid' or 'random', got {method!r}")
    rec = decoded.recording
    if frames is None:
        f = rec.frames.iloc[sorted(decoded.candidates)]
        frames = list(zip(f["source_id"].astype(int), f["frame_num"].astype(int)))
    rows = []
    it = combos
    if progress:
        try:
            from tqdm.auto import tqdm
            it = tqdm(combos, desc="search", unit="setting")
        except ImportError:
            pass
    base = decoded.postprocess
    for combo in it:
        params = dict(zip(names, combo))
        pp = apply_params(base, params)
        df = detections_frame(rec, decoded.run(pp))
        r = evaluate(df, gt, frames)
        rows.append({**params, "map50": r.map50, "map50_95": r.map50_95, "detections": len(df)})
    table = pd.DataFrame(rows).sort_values(metric, ascending=False, kind="stable").reset_index(drop=True)
    best_params = {n: table.iloc[0][n] for n in names}
    best_params = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in best_params.items()}
    return SearchResult(table, best_params, apply_params(base, best_params), metric)
