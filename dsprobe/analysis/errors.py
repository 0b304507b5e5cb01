"""What kind of error each false positive and each miss is (TIDE's error types), the confusion matrix,
and errors grouped into runs of frames (one entry per object track rather than per frame).

TIDE (Bolya et al., "TIDE: A General Toolbox for Identifying Object Detection Errors", ECCV 2020;
the reference implementation is ``tide/quantify.py``) types every detection that is not a true
positive at the foreground IoU ``t_f`` (0.5) by its best IoU with the frame's ground truth, with a
background IoU ``t_b`` (0.1), checked in this order:

* ``localisation``: the right class, ``t_b <= IoU < t_f`` (found, but the box is off);
* ``classification``: ``IoU >= t_f`` with ground truth of another class (the box is right, the class wrong);
* ``duplicate``: ``IoU >= t_f`` with ground truth of its class that a higher-scoring detection took;
* ``background``: ``IoU < t_b`` with every ground-truth box (nothing there);
* ``both``: ``t_b <= IoU < t_f`` with ground truth of another class only (wrong class and box).

A ground-truth box no detection matched is ``missed`` unless a classification or localisation error
sits on it: TIDE charges that one to the error, and dsprobe types it ``covered`` (still a false
negative at IoU 0.5, but not a miss of its own). True positives are matched the COCO way
(:func:`frame_matches`). Every box is in frame pixels (x1, y1, x2, y2).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from dsprobe.analysis.evaluate import GroundTruth, box_iou
from dsprobe.detections import Detections

#: TIDE error types of a false positive, in the order they are checked
FP_TYPES = ("localisation", "classification", "duplicate", "background", "both")
#: every error type, false-positive types first, then the miss
ERROR_TYPES = FP_TYPES + ("missed",)
FG_IOU, BG_IOU = 0.5, 0.1


def frame_matches(
    dets: Detections, gt: Detections, iou_thresholds: Sequence[float] = (0.5,)
) -> np.ndarray:
    """COCO matching on one frame: ``(D, T)`` index of the ground-truth box each detection matched at
    each IoU threshold (-1: none). Detections are visited by descending score (stable); each takes the
    unmatched ground truth of its class with the highest IoU >= the threshold (the last such box on
    ties, as pycocotools does)."""
    thr = np.asarray(iou_thresholds, np.float64)
    out = np.full((len(dets), len(thr)), -1, np.int64)
    if not len(dets) or not len(gt):
        return out
    iou = box_iou(dets.boxes, gt.boxes)
    iou = np.where(dets.class_ids[:, None] == gt.class_ids[None], iou, -1.0)
    order = np.argsort(-dets.scores, kind="mergesort")
    for t, th in enumerate(thr):
        used = np.zeros(len(gt), bool)
        floor = min(th, 1 - 1e-10)
        for d in order:
            cand = np.where(used, -1.0, iou[d])
            g = len(cand) - 1 - int(np.argmax(cand[::-1]))  # last of the best
            if cand[g] >= floor:
                out[d, t] = g
                used[g] = True
    return out


def type_frame(
    dets: Detections, gt: Detections, t_f: float = FG_IOU, t_b: float = BG_IOU
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TIDE types on one frame: ``(det_type, det_gt, gt_type)``: per detection "tp" or an error type
    of :data:`FP_TYPES`; per detection the ground-truth box it matched or lies nearest to (-1: none);
    per ground-truth box "tp" (matched), "covered" (unmatched, charged to a classification or
    localisation error on it) or "missed"."""
    n, m = len(dets), len(gt)
    matched = frame_matches(dets, gt, (t_f,))[:, 0]
    types = np.where(matched >= 0, "tp", "background").astype(object)
    nearest = matched.copy()
    gt_type = np.full(m, "missed", object)
    covered = np.zeros(m, bool)
    if n and m:
        iou = box_iou(dets.boxes, gt.boxes)
        same = dets.class_ids[:, None] == gt.class_ids[None]
        iou_same, iou_other = np.where(same, iou, 0.0), np.where(same, 0.0, iou)
        for d in np.flatnonzero(matched < 0):
            gs, go = int(np.argmax(iou_same[d])), int(np.argmax(iou_other[d]))
            s, o = iou_same[d, gs], iou_other[d, go]
            if t_b <= s < t_f:
                types[d], nearest[d] = "localisation", gs
                covered[gs] = True
            elif o >= t_f:
                types[d], nearest[d] = "classification", go
                covered[go] = True
            elif s >= t_f:
                types[d], nearest[d] = "duplicate", gs
            elif max(s, o) < t_b:
                types[d] = "background"
                nearest[d] = int(np.argmax(iou[d])) if iou[d].max() > 0 else -1
            else:
                types[d], nearest[d] = "both", go
    gt_type[covered] = "covered"
    gt_type[matched[matched >= 0]] = "tp"
    return types.astype(str), nearest, gt_type.astype(str)


def _frame_sets(
    detections: pd.DataFrame, gt: GroundTruth, frames: Sequence[tuple[int, int]] | None
) -> tuple[list[tuple[int, int]], dict, dict]:
    if frames is None:
        frames = sorted(
            {(int(s), int(f)) for s, f in zip(detections["source_id"], detections["frame_num"])}
            | {(int(s), int(f)) for s, f in zip(gt.boxes["source_id"], gt.boxes["frame_num"])}
        )
    det_groups = dict(list(detections.groupby(["source_id", "frame_num"])))
    gt_groups = dict(list(gt.boxes.groupby(["source_id", "frame_num"])))
    return [(int(s), int(f)) for s, f in frames], det_groups, gt_groups


def _as_dets(df: pd.DataFrame | None, score: bool = True) -> Detections:
    if df is None:
        return Detections.empty("frame")
    s = df["score"].to_numpy() if score else np.ones(len(df))
    return Detections(
        df[["x1", "y1", "x2", "y2"]].to_numpy(), s, df["class_id"].to_numpy(), "frame"
    )


def error_table(
    detections: pd.DataFrame,
    gt: GroundTruth,
    frames: Sequence[tuple[int, int]] | None = None,
    min_score: float = 0.0,
    t_f: float = FG_IOU,
    t_b: float = BG_IOU,
) -> pd.DataFrame:
    """Every false positive and miss at an operating point, typed (TIDE, see the module doc): detections
    with ``score >= min_score`` of ``frames`` ((source_id, frame_num); default every frame with a
    detection or a ground-truth box). One row per error: ``kind`` ("false_positive" or "missed"),
    ``type`` (:data:`ERROR_TYPES`, or "covered" for a false negative TIDE charges to the
    classification / localisation error on it), source_id, frame_num, x1, y1, x2, y2 (frame px), class_id, score
    (NaN for a miss), best_iou (with any box of the other set), and the nearby ground truth
    ``gt_x1..gt_y2``, ``gt_class_id`` (NaN / -1 when there is none)."""
    d = detections[detections["score"] >= min_score]
    frames, det_groups, gt_groups = _frame_sets(d, gt, frames)
    rows = []
    for key in frames:
        a, b = _as_dets(det_groups.get(key)), _as_dets(gt_groups.get(key), score=False)
        types, nearest, gt_types = type_frame(a, b, t_f, t_b)
        iou = box_iou(a.boxes, b.boxes)
        for i in np.flatnonzero(types != "tp"):
            g = int(nearest[i])
            near = b.boxes[g].tolist() if g >= 0 else [np.nan] * 4
            best = float(iou[i].max()) if iou.shape[1] else 0.0
            rows.append(
                (
                    "false_positive",
                    types[i],
                    *key,
                    *a.boxes[i].tolist(),
                    int(a.class_ids[i]),
                    float(a.scores[i]),
                    best,
                    *near,
                    int(b.class_ids[g]) if g >= 0 else -1,
                )
            )
        for j in np.flatnonzero(gt_types != "tp"):
            best = float(iou[:, j].max()) if iou.shape[0] else 0.0
            box = b.boxes[j].tolist()
            rows.append(
                (
                    "missed",
                    gt_types[j],
                    *key,
                    *box,
                    int(b.class_ids[j]),
                    np.nan,
                    best,
                    *box,
                    int(b.class_ids[j]),
                )
            )
    cols = ["x1", "y1", "x2", "y2"]
    return pd.DataFrame(
        rows,
        columns=[
            "kind",
            "type",
            "source_id",
            "frame_num",
            *cols,
            "class_id",
            "score",
            "best_iou",
            *(f"gt_{c}" for c in cols),
            "gt_class_id",
        ],
    )


def error_breakdown(errors: pd.DataFrame) -> pd.Series:
    """Errors per TIDE type (every type listed, zeros included; "covered" misses are not counted:
    their error is) of an :func:`error_table`."""
    return errors["type"].value_counts().reindex(list(ERROR_TYPES), fill_value=0).rename("errors")


def confusion_matrix(
    detections: pd.DataFrame,
    gt: GroundTruth,
    labels: Sequence[str],
    frames: Sequence[tuple[int, int]] | None = None,
    min_score: float = 0.0,
    iou_threshold: float = FG_IOU,
) -> pd.DataFrame:
    """Ground-truth class (rows, plus "background" for detections on no object) x detected class
    (columns, plus "missed" for objects nothing detected): detections matched to ground truth of any
    class, COCO-style (descending score, IoU >= ``iou_threshold``), counted per pair."""
    n = len(labels)
    cm = np.zeros((n + 1, n + 1), np.int64)
    d = detections[detections["score"] >= min_score]
    frames, det_groups, gt_groups = _frame_sets(d, gt, frames)
    for key in frames:
        a, b = _as_dets(det_groups.get(key)), _as_dets(gt_groups.get(key), score=False)
        agnostic_a = Detections(a.boxes, a.scores, np.zeros(len(a), np.int32), "frame")
        agnostic_b = Detections(b.boxes, b.scores, np.zeros(len(b), np.int32), "frame")
        m = frame_matches(agnostic_a, agnostic_b, (iou_threshold,))[:, 0]
        hit = m >= 0
        np.add.at(
            cm, (np.clip(b.class_ids[m[hit]], 0, n - 1), np.clip(a.class_ids[hit], 0, n - 1)), 1
        )
        np.add.at(cm, (n, np.clip(a.class_ids[~hit], 0, n - 1)), 1)
        found = np.zeros(len(b), bool)
        found[m[hit]] = True
        np.add.at(cm, (np.clip(b.class_ids[~found], 0, n - 1), n), 1)
    names = list(labels)
    return pd.DataFrame(
        cm,
        index=pd.Index(names + ["background"], name="ground truth"),
        columns=pd.Index(names + ["missed"], name="detected"),
    )


def error_runs(errors: pd.DataFrame, max_gap: int = 2, min_iou: float = 0.3) -> pd.DataFrame:
    """Errors grouped into runs: one row per object track / run of frames instead of one per frame.

    Errors of the same stream, type and class on frames at most ``max_gap`` apart whose boxes overlap
    (IoU >= ``min_iou`` with the run's last box) form one run. Columns: run, type, kind, source_id,
    class_id, first_frame, last_frame, frames (how many errors), and the representative error's
    frame_num, x1..y2, score, gt_x1..gt_y2, gt_class_id (the highest score, or the middle frame of a
    run of misses). Runs are sorted by type (:data:`ERROR_TYPES` order), then longest first."""
    out = []
    for (_, _, _), g in errors.groupby(["type", "source_id", "class_id"], sort=False):
        g = g.sort_values("frame_num")
        runs: list[list[int]] = []
        last: list[tuple[int, np.ndarray]] = []
        boxes = g[["x1", "y1", "x2", "y2"]].to_numpy(float)
        for i, fn in enumerate(g["frame_num"].to_numpy(int)):
            best, best_iou = -1, min_iou
            for k, (lf, lb) in enumerate(last):
                if 0 < fn - lf <= max_gap:
                    v = float(box_iou(boxes[i], lb)[0, 0])
                    if v >= best_iou:
                        best, best_iou = k, v
            if best < 0:
                runs.append([i])
                last.append((fn, boxes[i]))
            else:
                runs[best].append(i)
                last[best] = (fn, boxes[i])
        for idx in runs:
            r = g.iloc[idx]
            rep = r.iloc[len(r) // 2] if r["score"].isna().all() else r.loc[r["score"].idxmax()]
            out.append(
                {
                    **rep.to_dict(),
                    "first_frame": int(r["frame_num"].min()),
                    "last_frame": int(r["frame_num"].max()),
                    "frames": len(r),
                }
            )
    cols = [
        "type",
        "kind",
        "source_id",
        "class_id",
        "first_frame",
        "last_frame",
        "frames",
        "frame_num",
        "x1",
        "y1",
        "x2",
        "y2",
        "score",
        "gt_x1",
        "gt_y1",
        "gt_x2",
        "gt_y2",
        "gt_class_id",
    ]
    df = pd.DataFrame(
        out,
        columns=[
            c for c in cols if c in errors.columns or c in ("first_frame", "last_frame", "frames")
        ],
    )
    if not len(df):
        return df.assign(run=pd.Series(dtype=int))
    df["_t"] = df["type"].map({t: i for i, t in enumerate(ERROR_TYPES)})
    df = df.sort_values(["_t", "frames", "score"], ascending=[True, False, False]).drop(
        columns="_t"
    )
    return df.reset_index(drop=True).rename_axis("run").reset_index()
