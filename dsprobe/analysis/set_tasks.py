"""What a worker runs on one partition of a recording set (:mod:`dsprobe.analysis.sets` schedules it).

Each function opens the partition's files itself, so tensors are read where the work runs and never
travel; it returns small things: a detections table, or per-setting COCO match tables
(:mod:`dsprobe.analysis.match_tables`). An error inside becomes a :class:`PartitionFailure` naming the
recording and frame range, so the other partitions' results are kept.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from dsprobe.analysis.evaluate import GroundTruth
from dsprobe.analysis.match_tables import (
    MAX_DETECTIONS,
    MatchTables,
    image_evaluation,
    match_tables,
    tables_from_images,
)
from dsprobe.analysis.search import MASKED_PARAMS, Reclusterer, Selection
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


def _selection_detections(rec: Any, sel: Selection, keep: np.ndarray) -> pd.DataFrame:
    """The boxes ``keep`` selects as a detections DataFrame (what ``coco_results`` reads)."""
    rows, b = sel.rows[keep], sel.boxes[keep]
    f = rec.frames
    return pd.DataFrame(
        {
            "source_id": f["source_id"].to_numpy()[rows].astype(int),
            "frame_num": f["frame_num"].to_numpy()[rows].astype(int),
            "x1": b[:, 0],
            "y1": b[:, 1],
            "x2": b[:, 2],
            "y2": b[:, 3],
            "score": sel.scores[keep],
            "class_id": sel.class_ids[keep],
        }
    )


class _GroupScorer:
    """COCO tables of many subsets of one clustering's boxes on one partition: the images are
    evaluated once; a setting that only drops a low-score suffix of each image's detections takes its
    tables from that evaluation (exact: COCO matches in descending score order)."""

    def __init__(self, rec: Any, sel: Selection, gt: GroundTruth, frames: list) -> None:
        self.rec, self.sel, self.gt, self.frames = rec, sel, gt, frames
        everything = np.ones(len(sel.rows), bool)
        self.ev, _ = image_evaluation(_selection_detections(rec, sel, everything), gt, frames)
        self.n_img = len(self.ev.params.imgIds)
        self.pos = [
            None if e is None else np.asarray(e["dtIds"], np.int64) - 1 for e in self.ev.evalImgs
        ]

    def tables(self, keep: np.ndarray) -> MatchTables:
        imgs = []
        for e, pos in zip(self.ev.evalImgs, self.pos):
            if e is None or not len(pos):
                imgs.append(e)
                continue
            m = keep[pos]
            kept = int(m.sum())
            if kept == len(m):
                imgs.append(e)
            elif m[:kept].all() and len(pos) < MAX_DETECTIONS:
                imgs.append(
                    {
                        "dtScores": np.asarray(e["dtScores"])[:kept],
                        "dtMatches": e["dtMatches"][:, :kept],
                        "dtIgnore": e["dtIgnore"][:, :kept],
                        "gtIgnore": e["gtIgnore"],
                    }
                )
            else:  # not a low-score suffix (or COCO's 1000 cut moves): evaluate this subset afresh
                sub = _selection_detections(self.rec, self.sel, keep)
                return match_tables(sub, self.gt, self.frames)
        return tables_from_images(imgs, self.ev.params.catIds, self.n_img, int(keep.sum()))


def _lowest_threshold(pps: Sequence[Postprocess]) -> float | None:
    """The lowest pre-cluster threshold any setting asks for (one clustering serves them all), or
    None when a setting has no threshold step."""
    try:
        return float(min(np.min(pp.get_param("pre_cluster_threshold")) for pp in pps))
    except ValueError:
        return None


def score_partition(
    part: Partition,
    base: Postprocess,
    settings: Sequence[Mapping[str, Any]],
    gt: GroundTruth,
    chunks: Sequence[Sequence[int]],
) -> tuple[dict[int, MatchTables], ...]:
    """Decode the partition once, run every setting on the cached candidates
    (:class:`~dsprobe.analysis.search.Reclusterer`) and return each setting's COCO match tables,
    grouped as ``chunks`` (lists of setting indices) so each chunk can be merged on its own."""
    with part.open() as rec:
        decoded = base.decode_recording(rec, part.rows)
        frames = _frames_of(rec, part.rows)
        pps = [with_setting(base, s) for s in settings]
        rc = Reclusterer(decoded, floor=_lowest_threshold(pps), max_cached=2)
        # settings that share a clustering back to back (masked params vary fastest)
        order = sorted(
            range(len(pps)),
            key=lambda i: repr(
                [(k, v) for k, v in sorted(settings[i].items()) if k not in MASKED_PARAMS]
            ),
        )
        out: dict[int, MatchTables] = {}
        scorer: tuple[str, _GroupScorer] | None = None
        for i in order:
            pp = pps[i]
            if rc.fast_path(pp):
                sel = rc.select(pp)
                if scorer is None or scorer[0] != sel.key:
                    scorer = (sel.key, _GroupScorer(rec, sel, gt, frames))
                out[i] = scorer[1].tables(sel.keep)
            else:
                out[i] = match_tables(rc.detections_frame(pp), gt, frames)
    return tuple({i: out[i] for i in chunk} for chunk in chunks)
