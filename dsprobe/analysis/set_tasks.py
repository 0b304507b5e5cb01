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
from dsprobe.analysis.objectives import Matches
from dsprobe.analysis.operating import SettingScorer
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


@dataclass
class _CategoryIndex:
    """Where one category's concatenated detections came from: ``pos`` (index into the evaluated
    boxes, i.e. into a setting's keep mask), ``rank`` (place in its image's score order), ``start`` /
    ``length`` of each image's run (images with detections only)."""

    pos: np.ndarray
    rank: np.ndarray
    start: np.ndarray
    length: np.ndarray


class _GroupScorer:
    """COCO tables of many subsets of one clustering's boxes on one partition. The images are
    evaluated once; a setting that only drops a low-score suffix of each image's detections takes its
    tables from that evaluation by masking the concatenated arrays (exact: COCO matches detections in
    descending score order, so dropping the lowest ones never changes the others' matches)."""

    def __init__(self, rec: Any, sel: Selection, gt: GroundTruth, frames: list) -> None:
        self.rec, self.sel, self.gt, self.frames = rec, sel, gt, frames
        everything = np.ones(len(sel.rows), bool)
        ev, n = image_evaluation(_selection_detections(rec, sel, everything), gt, frames)
        cats, n_img = ev.params.catIds, len(ev.params.imgIds)
        self.base = tables_from_images(ev.evalImgs, cats, n_img, n)
        self.index = []
        for k in range(len(cats)):
            imgs = [e for e in ev.evalImgs[k * n_img : (k + 1) * n_img] if e is not None]
            ids = [np.asarray(e["dtIds"], np.int64) - 1 for e in imgs if len(e["dtIds"])]
            lengths = np.array([len(i) for i in ids], np.int64)
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
            pos = np.concatenate(ids) if ids else np.zeros(0, np.int64)
            rank = np.arange(len(pos)) - np.repeat(starts, lengths)
            self.index.append(_CategoryIndex(pos, rank, starts, lengths))

    def tables(self, keep: np.ndarray) -> MatchTables:
        entries = []
        for entry, ix in zip(self.base.entries, self.index):
            if entry is None or not len(ix.pos):
                entries.append(entry)
                continue
            m = keep[ix.pos]
            if m.all():
                entries.append(entry)
                continue
            kept = np.add.reduceat(m.astype(np.int64), ix.start)
            suffix = np.array_equal(m, ix.rank < np.repeat(kept, ix.length))
            if not suffix or np.any((ix.length >= MAX_DETECTIONS) & (kept < ix.length)):
                # not a low-score suffix somewhere (or COCO's per-image cut would move): afresh
                sub = _selection_detections(self.rec, self.sel, keep)
                return match_tables(sub, self.gt, self.frames)
            entries.append(
                {
                    "dtScores": entry["dtScores"][m],
                    "dtMatches": entry["dtMatches"][:, m],
                    "dtIgnore": entry["dtIgnore"][:, m],
                    "gtIgnore": entry["gtIgnore"],
                }
            )
        return MatchTables(self.base.category_ids, entries, self.base.num_images, int(keep.sum()))


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
    objectives: bool = False,
) -> tuple[dict[int, tuple[MatchTables, Matches | None]], ...]:
    """Decode the partition once, run every setting on the cached candidates
    (:class:`~dsprobe.analysis.search.Reclusterer`) and return each setting's COCO match tables (and,
    with ``objectives``, its :class:`~dsprobe.analysis.objectives.Matches` for the other objectives),
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
        out: dict[int, tuple[MatchTables, Matches | None]] = {}
        scorer: tuple[str, _GroupScorer] | None = None
        matcher = SettingScorer(rc, gt, part.rows) if objectives else None
        for i in order:
            pp = pps[i]
            if rc.fast_path(pp):
                sel = rc.select(pp)
                if scorer is None or scorer[0] != sel.key:
                    scorer = (sel.key, _GroupScorer(rec, sel, gt, frames))
                tables = scorer[1].tables(sel.keep)
            else:
                tables = match_tables(rc.detections_frame(pp), gt, frames)
            out[i] = (tables, None if matcher is None else matcher.matches(pp))
    return tuple({i: out[i] for i in chunk} for chunk in chunks)
