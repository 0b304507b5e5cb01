"""What a worker runs on one partition of a recording set (:mod:`dsprobe.analysis.sets` schedules it).

Each function opens the partition's files itself, so tensors are read where the work runs and never
travel; it returns small things: a detections table, or what COCO's ``accumulate`` needs of each setting
(:mod:`dsprobe.analysis.match_tables`). Ground truth given as a file is read by the worker too (once
per process and file). An error inside becomes a :class:`PartitionFailure` naming the
recording and frame range, so the other partitions' results are kept.
"""

from __future__ import annotations

import functools
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from dsprobe.analysis.accumulation import AccumulateRows
from dsprobe.analysis.evaluate import GroundTruth, frame_image_id, load_ground_truth
from dsprobe.analysis.match_tables import MAX_DETECTIONS, PartitionScores, SettingRows
from dsprobe.analysis.matching import MatchPlan
from dsprobe.analysis.operating import SettingScorer
from dsprobe.analysis.search import MASKED_PARAMS, Reclusterer, selection_plan
from dsprobe.postprocess.pipeline import Postprocess
from dsprobe.recording.recording_set import Partition


@dataclass
class PartitionFailure:
    """A partition that raised: which recording and frames, and the error (traceback text)."""

    partition: str
    error: str

    def __str__(self) -> str:
        last = self.error.strip().splitlines()[-1] if self.error.strip() else "?"
        return f"{self.partition}: {last}"


def guarded(fn: Callable[..., Any], part: Partition, *args: Any) -> Any:
    """``fn(part, *args)``, or a PartitionFailure naming ``part`` if it raises."""
    try:
        return fn(part, *args)
    except Exception:
        return PartitionFailure(part.describe(), traceback.format_exc())


def with_setting(base: Postprocess, setting: Mapping[str, Any]) -> Postprocess:
    """``base`` with the params of one search setting applied (by param name)."""
    return base.set_params(dict(setting)) if setting else base


def replay_partition(part: Partition, pp: Postprocess) -> pd.DataFrame:
    """``pp.run_recording`` over the partition's frames, with ``recording`` and ``recording_index``
    columns in front."""
    with part.open() as rec:
        df = pp.run_recording(rec, part.rows)
    df.insert(0, "recording", part.recording)
    df.insert(1, "recording_index", part.recording_index)
    return df


def _frames_of(rec: Any, rows: np.ndarray) -> list[tuple[int, int]]:
    f = rec.frames
    return list(
        zip(
            f["source_id"].to_numpy()[rows].astype(int), f["frame_num"].to_numpy()[rows].astype(int)
        )
    )


@dataclass(frozen=True)
class GroundTruthFile:
    """A recording's ground truth as a COCO JSON path and how to scale it (what
    :func:`~dsprobe.analysis.evaluate.load_ground_truth` takes): small, so tasks carry it instead of
    the boxes, and the worker reads the file itself (:meth:`load`)."""

    path: str
    frame_size: tuple[int, int]
    muxer_keep_aspect: bool = False

    def load(self) -> GroundTruth:
        """The ground truth, read once per process while the file is unchanged."""
        st = os.stat(self.path)
        return _load_cached(self, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _load_cached(source: GroundTruthFile, mtime_ns: int, size: int) -> GroundTruth:
    return load_ground_truth(
        Path(source.path), frame_size=source.frame_size, muxer_keep_aspect=source.muxer_keep_aspect
    )


def _lowest_threshold(pps: Sequence[Postprocess]) -> float | None:
    """The lowest pre-cluster threshold any setting asks for (one clustering serves them all), or
    None when a setting has no threshold step."""
    try:
        return float(min(np.min(pp.get_param("pre_cluster_threshold")) for pp in pps))
    except ValueError:
        return None


def _lowest_iou(pps: Sequence[Postprocess]) -> float | None:
    """The lowest NMS IoU threshold any setting asks for (NMS pairs are then found once for all),
    or None when no setting runs NMS."""
    values = [
        float(np.min(pp.steps[2].params.get("iou_threshold", 0.3)))
        for pp in pps
        if len(pp.steps) > 2 and (pp.steps[2].kind, pp.steps[2].name) == ("cluster", "nms")
    ]
    return min(values) if values else None


def _on_inputs(subset: np.ndarray | None, keep: np.ndarray) -> np.ndarray:
    """A selection's ``keep`` (over its boxes) as a mask over its plan's inputs (``subset``: which
    inputs are the selection's boxes, in order; None: all)."""
    if subset is None:
        return keep
    out = np.zeros(len(subset), bool)
    out[np.flatnonzero(subset)[keep]] = True
    return out


def score_partition(
    part: Partition,
    base: Postprocess,
    settings: Sequence[Mapping[str, Any]],
    ground_truth: GroundTruthFile | GroundTruth,
    chunks: Sequence[Sequence[int]],
    objectives: bool = False,
) -> tuple[PartitionScores, ...]:
    """Decode the partition once, run every setting on the cached candidates
    (:class:`~dsprobe.analysis.search.Reclusterer`), match each clustering once against the ground
    truth and return, per chunk of settings (lists of setting indices, each merged on its own), the
    :class:`~dsprobe.analysis.match_tables.PartitionScores` of its settings: the clusterings'
    accumulate rows, each setting's score cut of them (or, for a setting that is not a score cut,
    rows of its own) and, with ``objectives``, its
    :class:`~dsprobe.analysis.objectives.Matches` for the other objectives."""
    gt = ground_truth.load() if isinstance(ground_truth, GroundTruthFile) else ground_truth
    with part.open() as rec:
        decoded = base.decode_recording(rec, part.rows)
        ids = sorted({frame_image_id(s, f) for s, f in _frames_of(rec, part.rows)})
        pps = [with_setting(base, s) for s in settings]
        rc = Reclusterer(decoded, floor=_lowest_threshold(pps), max_cached=2)
        rc.iou_floor = _lowest_iou(pps)  # NMS pairs found once for every IoU setting
        # settings that share a clustering back to back (masked params vary fastest)
        order = sorted(
            range(len(pps)),
            key=lambda i: repr(
                [(k, v) for k, v in sorted(settings[i].items()) if k not in MASKED_PARAMS]
            ),
        )
        sources: dict[str, AccumulateRows] = {}
        refs: dict[int, SettingRows] = {}
        plans: dict = {}  # the floor's match plan, shared by its clusterings
        matcher = SettingScorer(rc, gt, part.rows) if objectives else None
        for i in order:
            pp = pps[i]
            cut = None
            if rc.fast_path(pp):
                sel = rc.select(pp)
                plan, subset = selection_plan(rec, sel, gt, ids, plans)
                n_det = int(np.count_nonzero(sel.keep))
                cut = rc.score_cut(pp, ignore_topk=True)
                if cut is not None:  # a top-k that cuts nothing here leaves a score cut
                    pre, post = cut
                    c = sel.class_ids
                    if not np.array_equal(
                        sel.keep, (sel.scores >= pre[c]) & (sel.scores > post[c])
                    ):
                        cut = None
                if cut is not None:  # the clustering's rows, cut by score in the merge
                    source = sel.key
                    if source not in sources:
                        sources[source] = plan.rows(subset, MAX_DETECTIONS)
                else:
                    source = f"setting {i}"
                    sources[source] = plan.rows(_on_inputs(subset, sel.keep), MAX_DETECTIONS)
            else:
                plan = MatchPlan(rc.detections_frame(pp), gt, ids)
                n_det, source = len(plan.frame_rows), f"setting {i}"
                sources[source] = plan.rows(None, MAX_DETECTIONS)
            refs[i] = SettingRows(
                source, cut, n_det, None if matcher is None else matcher.matches(pp)
            )
    g = gt.arrays()
    on = np.isin(g.image_id, np.asarray(ids, np.int64))
    present = np.bincount(
        np.searchsorted(g.category_ids, g.category_id[on]), minlength=len(g.category_ids)
    )
    out = []
    for chunk in chunks:
        used = {refs[i].source for i in chunk}
        out.append(
            PartitionScores(
                part.recording,
                list(gt.coco["categories"]),
                len(ids),
                present,
                {k: v for k, v in sources.items() if k in used},
                {i: refs[i] for i in chunk},
            )
        )
    return tuple(out)
