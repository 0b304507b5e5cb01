"""Replay, evaluate, search and compare a recording set as Dask tasks (``pip install 'dsprobe[dask]'``).

Work is cut into partitions, (recording, block of frames) (:meth:`RecordingSet.partitions`). Each
partition is one task: the worker opens the HDF5 files by path (so they must be on storage every
worker sees), decodes and scores its frames, and returns small tables; tensors never leave the worker.
Search tasks return what COCO's ``accumulate`` reads of each clustering (12 bytes a detection) and each
setting's score cut of it; merge tasks, one per chunk of clusterings, concatenate them in partition
order and accumulate every setting, so every number equals the single-process one exactly
(:mod:`dsprobe.analysis.match_tables`). Ground truth files are read by the workers.

Where it runs (``client=``): any ``dask.distributed.Client`` (a LocalCluster, or a scheduler with
workers on many machines); by default (None) a LocalCluster of ``workers`` processes started for you
on first use and reused (:func:`dsprobe.analysis.dask_run.local_client`); or the name of one of Dask's local schedulers
(``"sync"`` runs everything in this process, ``"processes"``, ``"threads"``). A partition that raises is reported (recording
and frame range, as :class:`~dsprobe.analysis.set_tasks.PartitionFailure`) and left out; the others'
results are kept and a warning lists what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from dsprobe.analysis.compare import CompareReport, compare
from dsprobe.analysis.dask_run import run_partitions, shared, worker_count
from dsprobe.analysis.evaluate import EvalResult, GroundTruth, load_ground_truth
from dsprobe.analysis.match_tables import merge_matches, score_partitions
from dsprobe.analysis.objectives import Objective, objective, score_all
from dsprobe.analysis.search import MASKED_PARAMS, SearchResult, setting_combinations
from dsprobe.analysis.set_tasks import (
    GroundTruthFile,
    PartitionFailure,
    replay_partition,
    score_partition,
    with_setting,
)
from dsprobe.postprocess.params import plain
from dsprobe.postprocess.pipeline import Postprocess
from dsprobe.recording.reader import Recording
from dsprobe.recording.recording_set import Partition, RecordingSet


@dataclass
class SetEvalResult(EvalResult):
    """An :class:`~dsprobe.analysis.evaluate.EvalResult` over a recording set, with the partitions
    that failed (their frames are not in the scores)."""

    failures: list[PartitionFailure] = field(default_factory=list)
    objectives: dict[str, float] = field(default_factory=dict)


@dataclass
class SetSearchResult(SearchResult):
    """A :class:`~dsprobe.analysis.search.SearchResult` over a recording set, with the partitions that
    failed (their frames are not in the scores)."""

    failures: list[PartitionFailure] = field(default_factory=list)


# ------------------------------------------------------------------------------------ ground truth
def _given_ground_truth(
    rset: RecordingSet, ground_truth: Mapping[str, GroundTruth | str | Path] | None
) -> dict[str, GroundTruth | str | Path]:
    given = dict(ground_truth or rset.ground_truth_paths)
    missing = [n for n in rset.names if n not in given]
    if missing:
        raise ValueError(
            f"no ground truth for recordings {missing}: pass ground_truth={{name: path}} or put "
            f"<name>_gt.json beside each recording"
        )
    return given


def _frame_size(rset: RecordingSet, k: int) -> tuple[int, int]:
    f = rset.frames[rset.frames["recording_index"] == k]
    return (int(f["frame_width"].iloc[0]), int(f["frame_height"].iloc[0]))


def load_set_ground_truth(
    rset: RecordingSet,
    ground_truth: Mapping[str, GroundTruth | str | Path] | None = None,
    muxer_keep_aspect: bool = False,
) -> dict[str, GroundTruth]:
    """Ground truth per recording: ``ground_truth[name]`` (a GroundTruth or a COCO JSON path), or by
    default the ``<name>_gt.json`` found beside each recording. Paths are scaled to that recording's
    frame (nvstreammux) size. Every recording needs one, and all must name the same categories.
    (The set's scoring functions do not call this: their workers read the files.)"""
    given = _given_ground_truth(rset, ground_truth)
    out = {}
    for k, name in enumerate(rset.names):
        g = given[name]
        if not isinstance(g, GroundTruth):
            g = load_ground_truth(
                g, frame_size=_frame_size(rset, k), muxer_keep_aspect=muxer_keep_aspect
            )
        out[name] = g
    cats = {n: sorted((c["id"], c["name"]) for c in g.coco["categories"]) for n, g in out.items()}
    first = rset.names[0]
    for n in rset.names[1:]:
        if cats[n] != cats[first]:
            raise ValueError(
                f"ground truth of {n!r} names other categories than that of {first!r}: "
                f"{cats[n]} vs {cats[first]}"
            )
    return out


def _ground_truth_args(
    rset: RecordingSet, ground_truth: Mapping[str, GroundTruth | str | Path] | None
) -> dict[str, Any]:
    """What a partition task gets as its recording's ground truth: the file (read by the worker,
    scaled to the recording's frame size), or a GroundTruth given in memory, in the graph once per
    recording (:func:`~dsprobe.analysis.dask_run.shared`)."""
    given = _given_ground_truth(rset, ground_truth)
    return {
        name: shared(given[name], f"ground-truth-{name}")
        if isinstance(given[name], GroundTruth)
        else GroundTruthFile(str(given[name]), _frame_size(rset, k))
        for k, name in enumerate(rset.names)
    }


# ------------------------------------------------------------------------------------ replay
def _concat(_: int, frames: list[Any]) -> pd.DataFrame:
    parts = [f for f in frames if not isinstance(f, PartitionFailure)]
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if len(df):
        df = df.sort_values(["recording_index", "row"], kind="stable").reset_index(drop=True)
    return df


def replay_set(
    rset: RecordingSet,
    postprocess: Postprocess,
    *,
    client: Any = None,
    workers: int | None = None,
    block_frames: int = 1000,
    progress: bool = True,
) -> pd.DataFrame:
    """``postprocess.run_recording`` over every recording of the set, as Dask tasks: one DataFrame,
    one row per detection, with ``recording`` and ``recording_index`` in front (frame pixels; same
    rows as running each recording in this process, in (recording, row) order). Failed partitions:
    ``df.attrs["failures"]``."""
    parts = rset.partitions(block_frames)
    (df,), failures = run_partitions(
        parts,
        replay_partition,
        lambda p: (postprocess,),
        [(_concat, ())],
        client=client,
        workers=workers,
        progress=progress,
        name="replay",
    )
    df.attrs["failures"] = failures
    return df


# ------------------------------------------------------------------------------------ scoring
def _merge_scores(
    _: int,
    parts: list[Any],
    recording_of: Sequence[int],
    objectives: Sequence[Objective] | None,
) -> dict[int, tuple[EvalResult, dict[str, float]]]:
    """Per setting of this chunk: the COCO result of the partitions' rows, and (with objectives)
    every objective of their merged Matches."""
    ok = [(k, t) for k, t in zip(recording_of, parts) if not isinstance(t, PartitionFailure)]
    out = {}
    for s, coco in score_partitions([t for _, t in ok]).items():
        extra = {}
        if objectives is not None:
            extra = score_all(
                merge_matches([(k, t.settings[s].matches) for k, t in ok]), list(objectives)
            )
        out[s] = (coco, extra)
    return out


def _chunk_settings(settings: Sequence[Mapping[str, Any]], chunks: int) -> list[list[int]]:
    """Setting indices in at most ``chunks`` merge chunks, settings that share a clustering (the
    same params but the masked ones: thresholds, top-k) in the same chunk."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(settings):
        key = repr([(k, v) for k, v in sorted(s.items()) if k not in MASKED_PARAMS])
        groups.setdefault(key, []).append(i)
    lists = list(groups.values())
    cuts = np.array_split(np.arange(len(lists)), min(max(chunks, 1), len(lists)))
    return [[i for g in c for i in lists[g]] for c in cuts]


def _score_settings(
    rset: RecordingSet,
    base: Postprocess,
    settings: list[dict[str, Any]],
    ground_truth: Any,
    objectives: Sequence[Objective] | None,
    opts: dict[str, Any],
) -> tuple[dict[int, tuple[EvalResult, dict[str, float]]], list[PartitionFailure]]:
    gts = _ground_truth_args(rset, ground_truth)
    parts = rset.partitions(opts.pop("block_frames"))
    chunks = opts.pop("chunks") or 2 * worker_count(opts["client"], opts["workers"])
    chunk_lists = _chunk_settings(settings, chunks)
    merged, failures = run_partitions(
        parts,
        score_partition,
        lambda p: (base, settings, gts[p.recording], chunk_lists, objectives is not None),
        [(_merge_scores, ([p.recording_index for p in parts], objectives)) for _ in chunk_lists],
        split=True,
        **opts,
    )
    return {k: v for m in merged for k, v in m.items()}, failures


def evaluate_set(
    rset: RecordingSet,
    postprocess: Postprocess,
    ground_truth: Mapping[str, GroundTruth | str | Path] | None = None,
    *,
    client: Any = None,
    workers: int | None = None,
    block_frames: int = 1000,
    objectives: Sequence[str | Objective] | None = None,
    progress: bool = True,
) -> SetEvalResult:
    """COCO mAP of ``postprocess`` over every frame of the set against each recording's ground truth
    (:func:`load_set_ground_truth`), as Dask tasks; equal to evaluating all frames at once. With
    ``objectives`` (names of :data:`~dsprobe.analysis.objectives.OBJECTIVES`, e.g. ``["f1"]``) they
    are scored too, into ``result.objectives`` (with precision, recall, F1, FP per frame)."""
    opts = dict(client=client, workers=workers, progress=progress)
    objs = None if objectives is None else [objective(o) for o in objectives]
    scores, failures = _score_settings(
        rset,
        postprocess,
        [{}],
        ground_truth,
        objs,
        {**opts, "block_frames": block_frames, "chunks": 1, "name": "evaluate"},
    )
    r, extra = scores[0]
    fields = {f: getattr(r, f) for f in r.__dataclass_fields__}
    return SetEvalResult(**fields, failures=failures, objectives=extra)


def search_set(
    rset: RecordingSet,
    postprocess: Postprocess,
    grid: Mapping[str, Sequence[Any]],
    ground_truth: Mapping[str, GroundTruth | str | Path] | None = None,
    *,
    metric: str = "map50",
    method: str = "grid",
    n_random: int = 20,
    seed: int = 0,
    client: Any = None,
    workers: int | None = None,
    block_frames: int = 1000,
    chunks: int | None = None,
    objectives: Sequence[str | Objective] | None = None,
    progress: bool = True,
) -> SetSearchResult:
    """:func:`~dsprobe.analysis.search.search` over a recording set, as Dask tasks: each partition
    decodes once and scores every setting; up to ``chunks`` merge tasks (default two per worker;
    settings that share a clustering merge together) turn what the partitions send into one score
    per setting. Same table, scores and best setting as
    scoring all frames in one process. ``objectives`` (see :func:`evaluate_set`) add a column each
    (plus precision, recall, f1, tp, fp, fn, fp_per_frame); ``metric`` may name any of them.
    ``map50`` / ``map50_95`` are always pycocotools' numbers."""
    objs = None if objectives is None else [objective(o) for o in objectives]
    extra = [o.label for o in objs] + ["precision", "recall", "f1"] if objs else []
    allowed = ["map50", "map50_95", *extra]
    if metric not in allowed:
        raise ValueError(f"search_set: metric must be one of {allowed}, got {metric!r}")
    names = list(grid)
    settings = [
        dict(zip(names, (plain(v) for v in c)))
        for c in setting_combinations(grid, method, n_random, seed)
    ]
    with_setting(postprocess, settings[0])  # a param no step takes fails here, not on a worker
    opts = dict(client=client, workers=workers, progress=progress)
    scores, failures = _score_settings(
        rset,
        postprocess,
        settings,
        ground_truth,
        objs,
        {**opts, "block_frames": block_frames, "chunks": chunks, "name": "search"},
    )
    rows = []
    for i, setting in enumerate(settings):
        coco, extra = scores[i]
        extra = {k: v for k, v in extra.items() if k not in ("map50", "map50_95")}
        rows.append(
            {
                **setting,
                "map50": coco.map50,
                "map50_95": coco.map50_95,
                **extra,
                "detections": coco.num_detections,
            }
        )
    table = (
        pd.DataFrame(rows)
        .sort_values(metric, ascending=False, kind="stable")
        .reset_index(drop=True)
    )
    best_params = {n: plain(table.iloc[0][n]) for n in names}
    return SetSearchResult(
        table, best_params, with_setting(postprocess, best_params), metric, failures
    )


# ------------------------------------------------------------------------------------ compare
def _compare_partition(
    part: Partition, other: Sequence[str], pp: Postprocess | None, by: str, iou: float
) -> CompareReport:
    with part.open() as a, Recording([Path(p) for p in other]) as b:
        return compare(a, b, pp, by=by, iou_threshold=iou)


def _collect(_: int, reports: list[Any]) -> list[Any]:
    return reports


def compare_sets(
    a: RecordingSet,
    b: RecordingSet,
    postprocess: Postprocess | None = None,
    *,
    by: str = "frame",
    iou_threshold: float = 0.5,
    client: Any = None,
    workers: int | None = None,
    progress: bool = True,
) -> dict[str, CompareReport | PartitionFailure]:
    """:func:`~dsprobe.analysis.compare.compare` of each recording of ``a`` with the recording of the
    same name in ``b`` (e.g. Jetson recordings against their ONNX references), one Dask task per
    pair: ``{name: CompareReport}`` (a PartitionFailure for a pair that raised)."""
    missing = [n for n in a.names if n not in b.names]
    if missing:
        raise ValueError(
            f"compare_sets: {missing} have no recording of the same name in the other set"
        )
    whole = [p for p in a.partitions(block_frames=len(a.frames) + 1)]
    (reports,), _ = run_partitions(
        whole,
        _compare_partition,
        lambda p: (b.paths[p.recording], postprocess, by, iou_threshold),
        [(_collect, ())],
        client=client,
        workers=workers,
        progress=progress,
        name="compare",
    )
    return {p.recording: r for p, r in zip(whole, reports)}
