"""Secondary GIEs (process-mode=2): classifier accuracy and ``classifier-threshold``, embedding quality.

Pure numpy / pandas on arrays, plus :func:`sgie_outputs` that reads them from a recording:

* the objects an SGIE inferred on (``Recording.object_table("objects")`` of its ``unique_id``), one
  row each, with ``source_id``, ``frame_num``, rect in frame pixels (``x1 .. y2``);
* their per-object layers (``(N, *shape)`` arrays, one read per layer).

:func:`match_ground_truth` pairs each object with a ground-truth box of its frame (IoU, greedy) and
carries the annotation's attribute and identity (COCO ``attributes`` / ``track_id``, as the bundled
sample writes them). Classifier functions follow nvinfer's rule (``classify`` in
:mod:`dsprobe.postprocess.decoders.heads`): the best class is attached when its probability is
``> classifier_threshold`` and ``> 0`` (first index on ties); an object with no attached label counts
as "no label". Embedding functions use cosine similarity of L2-normalised rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from dsprobe.analysis.evaluate import GroundTruth, box_iou

NO_LABEL = -1


@dataclass
class SgieOutputs:
    """What one SGIE produced: ``objects`` (one row per inferred object: ``object_row`` = row of
    ``object_table("objects")``, frame ``row``, ``source_id``, ``frame_num``, ``x1, y1, x2, y2`` frame
    pixels, the object's ``class_id`` / ``confidence`` / ``label`` (from the PGIE), ``index_in_frame`` =
    its position in ``rec[row].objects``) and ``layers`` (name -> ``(N, ...)`` array, row k = object k)."""

    unique_id: int
    objects: pd.DataFrame
    layers: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.objects)


def sgie_outputs(rec: Any, unique_id: int | None = None) -> SgieOutputs:
    """The objects and per-object layers of SGIE ``unique_id`` (default: the only GIE with per-object
    layers) in recording ``rec``."""
    uids = sorted({i.unique_id for i in rec.layers.values() if i.per_object})
    if unique_id is None:
        if len(uids) != 1:
            raise ValueError(
                f"{rec.paths[0]}: per-object layers come from GIEs {uids or 'none'}; pass unique_id="
            )
        unique_id = uids[0]
    if unique_id not in uids:
        raise ValueError(f"{rec.paths[0]}: GIE {unique_id} recorded no per-object layers ({uids})")
    table = rec.object_table("objects")
    frames = rec.frames
    uid = frames["unique_id"].to_numpy()[table["row"].to_numpy()] if len(table) else []
    table["index_in_frame"] = table.groupby("row").cumcount().to_numpy() if len(table) else []
    sel = table[(np.asarray(uid) == unique_id) & (table["layer_row"].to_numpy() >= 0)]
    rows = sel["row"].to_numpy()
    objects = pd.DataFrame(
        {
            "object_row": sel.index.to_numpy(),
            "row": rows,
            "source_id": frames["source_id"].to_numpy()[rows].astype(int),
            "frame_num": frames["frame_num"].to_numpy()[rows].astype(int),
            "x1": sel["left"].to_numpy(),
            "y1": sel["top"].to_numpy(),
            "x2": (sel["left"] + sel["width"]).to_numpy(),
            "y2": (sel["top"] + sel["height"]).to_numpy(),
            "class_id": sel["class_id"].to_numpy(),
            "confidence": sel["confidence"].to_numpy(),
            "label": sel["label"].to_numpy(),
            "index_in_frame": sel["index_in_frame"].to_numpy(),
        }
    )
    names = [i.name for i in rec.layers.values() if i.per_object and i.unique_id == unique_id]
    layers = {n: rec.read_layer(n, objects["object_row"].to_numpy(), unique_id) for n in names}
    return SgieOutputs(unique_id, objects, layers)


def match_ground_truth(
    objects: pd.DataFrame,
    gt: GroundTruth,
    attribute: str = "color",
    attribute_labels: Sequence[str] = (),
    iou_threshold: float = 0.5,
) -> pd.DataFrame:
    """``objects`` (columns source_id, frame_num, x1..y2 frame pixels) with ground truth per row:
    ``gt_index`` (row of ``gt.boxes``, -1 = no box with IoU >= ``iou_threshold``), ``iou``,
    ``gt_class``, ``gt_attribute`` (index of the annotation's ``attributes[attribute]`` in
    ``attribute_labels``, -1 unknown) and ``gt_identity`` (``source_id * 100_000 + track_id``, -1
    unknown). Greedy one-to-one per frame by descending IoU, class ignored."""
    anns = gt.coco["annotations"]
    lookup = {name: k for k, name in enumerate(attribute_labels)}
    attr = np.array(
        [lookup.get((a.get("attributes") or {}).get(attribute), -1) for a in anns], np.int64
    )
    track = np.array([a.get("track_id", -1) for a in anns], np.int64)
    gtb = gt.boxes
    out = objects.copy()
    n = len(out)
    gi, ious = np.full(n, -1, np.int64), np.zeros(n)
    gt_groups = {k: g.index.to_numpy() for k, g in gtb.groupby(["source_id", "frame_num"])}
    obj_boxes = out[["x1", "y1", "x2", "y2"]].to_numpy(np.float64)
    gt_boxes = gtb[["x1", "y1", "x2", "y2"]].to_numpy(np.float64)
    for key, idx in out.groupby(["source_id", "frame_num"]).indices.items():
        cand = gt_groups.get(key)
        if cand is None:
            continue
        iou = box_iou(obj_boxes[idx], gt_boxes[cand])
        for flat in np.argsort(-iou, axis=None, kind="stable"):
            i, j = divmod(int(flat), len(cand))
            if iou[i, j] < iou_threshold:
                break
            if gi[idx[i]] < 0 and not np.isin(cand[j], gi[idx]):
                gi[idx[i]], ious[idx[i]] = cand[j], iou[i, j]
    ok = gi >= 0
    src = out["source_id"].to_numpy()
    out["gt_index"] = gi
    out["iou"] = ious
    out["gt_class"] = np.where(ok, gtb["class_id"].to_numpy()[np.maximum(gi, 0)], -1)
    out["gt_attribute"] = np.where(ok, attr[np.maximum(gi, 0)], -1)
    tr = track[np.maximum(gi, 0)]
    out["gt_identity"] = np.where(ok & (tr >= 0), src * 100_000 + tr, -1)
    return out


# ---------------------------------------------------------------- classifier


def classifier_predictions(
    probs: np.ndarray, threshold: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """nvinfer's classifier rule per row of ``probs`` (N, C): (attached class id, ``NO_LABEL`` when
    the best probability is not ``> threshold`` or not ``> 0``; the best probability)."""
    p = np.asarray(probs, np.float32).reshape(len(probs), -1)
    if not p.shape[1]:
        return np.full(len(p), NO_LABEL, np.int64), np.zeros(len(p), np.float32)
    best = p.argmax(1)
    conf = p[np.arange(len(p)), best]
    keep = (conf > np.float32(threshold)) & (conf > 0)
    return np.where(keep, best, NO_LABEL).astype(np.int64), conf


def classifier_scores(
    probs: np.ndarray, truth: np.ndarray, threshold: float = 0.0
) -> dict[str, float]:
    """At ``threshold``, over objects with a known truth (``truth >= 0``): ``accuracy`` (attached and
    right / all), ``coverage`` (attached / all), ``precision`` (right / attached), ``f1`` of precision
    and accuracy (= recall), ``objects``."""
    truth = np.asarray(truth)
    known = truth >= 0
    pred, _ = classifier_predictions(np.asarray(probs)[known], threshold)
    t = truth[known]
    n, attached = len(t), int((pred != NO_LABEL).sum())
    right = int((pred == t).sum())
    acc = right / n if n else 0.0
    prec = right / attached if attached else 0.0
    f1 = 2 * prec * acc / (prec + acc) if prec + acc else 0.0
    return {
        "objects": n,
        "accuracy": acc,
        "coverage": attached / n if n else 0.0,
        "precision": prec,
        "f1": f1,
    }


def threshold_sweep(
    probs: np.ndarray, truth: np.ndarray, thresholds: Sequence[float] | None = None
) -> pd.DataFrame:
    """:func:`classifier_scores` per ``classifier-threshold`` (default 0, 0.05 .. 0.95, 0.99)."""
    if thresholds is None:
        thresholds = [0.0, *np.round(np.arange(0.05, 0.951, 0.05), 2), 0.99]
    return pd.DataFrame(
        [{"threshold": float(t), **classifier_scores(probs, truth, t)} for t in thresholds]
    )


def best_threshold(sweep: pd.DataFrame, metric: str = "f1") -> float:
    """The threshold of :func:`threshold_sweep` with the highest ``metric`` (the highest threshold
    among equals: the same score with fewer wrong labels attached)."""
    if sweep.empty:
        raise ValueError("empty threshold sweep")
    if metric not in sweep.columns:
        raise ValueError(f"no metric {metric!r} in the sweep; columns: {list(sweep.columns)}")
    best = sweep[metric].max()
    return float(sweep.loc[sweep[metric] >= best - 1e-12, "threshold"].max())


def attribute_confusion(truth: np.ndarray, pred: np.ndarray, labels: Sequence[str]) -> pd.DataFrame:
    """Counts, rows = true class, columns = attached class plus ``"(no label)"`` for ``NO_LABEL``;
    objects with an unknown truth (< 0) are left out."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    n = len(labels)
    keep = (truth >= 0) & (truth < n)
    col = np.where(pred[keep] == NO_LABEL, n, pred[keep])
    m = np.zeros((n, n + 1), np.int64)
    np.add.at(m, (truth[keep], np.clip(col, 0, n)), 1)
    return pd.DataFrame(m, index=list(labels), columns=[*labels, "(no label)"])


# ---------------------------------------------------------------- embeddings


def embedding_health(emb: np.ndarray, unit_tolerance: float = 1e-3) -> dict[str, Any]:
    """Checks users ask for first: ``rows``, ``dim``, rows with NaN / inf / all zeros, L2 norm min /
    median / max, ``unit_norm`` (fraction with ``|norm - 1| <= unit_tolerance``), ``mean_cosine`` of
    distinct pairs (near 1: collapsed, near-identical vectors), ``duplicates`` (rows equal to an
    earlier row)."""
    e = np.asarray(emb, np.float64).reshape(len(emb), -1)
    finite = np.isfinite(e).all(1)
    norms = np.linalg.norm(np.where(np.isfinite(e), e, 0.0), axis=1)
    good = e[finite & (norms > 0)]
    mean_cos = float("nan")
    if len(good) > 1:
        u = good / np.linalg.norm(good, axis=1, keepdims=True)
        s = u.sum(0)
        mean_cos = float((s @ s - len(u)) / (len(u) * (len(u) - 1)))
    return {
        "rows": len(e),
        "dim": e.shape[1],
        "nan_rows": int(np.isnan(e).any(1).sum()),
        "inf_rows": int(np.isinf(e).any(1).sum()),
        "zero_rows": int((np.abs(e) == 0).all(1).sum()),
        "norm_min": float(norms.min()) if len(e) else float("nan"),
        "norm_median": float(np.median(norms)) if len(e) else float("nan"),
        "norm_max": float(norms.max()) if len(e) else float("nan"),
        "unit_norm": float((np.abs(norms - 1) <= unit_tolerance).mean()) if len(e) else 0.0,
        "mean_cosine": mean_cos,
        "duplicates": int(len(e) - len(np.unique(e, axis=0))) if len(e) else 0,
    }


def normalize_rows(emb: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm (float32; zero or non-finite rows become zeros)."""
    e = np.asarray(emb, np.float32).reshape(len(emb), -1)
    n = np.linalg.norm(e, axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where((n > 0) & np.isfinite(n), e / n, 0.0)
    return np.nan_to_num(u.astype(np.float32))


def cosine_similarity(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """(N, M) cosine similarity of the rows of ``a`` and ``b`` (default ``a``)."""
    ua = normalize_rows(a)
    return ua @ (ua if b is None else normalize_rows(b)).T


def pair_similarities(
    emb: np.ndarray,
    identity: np.ndarray,
    frame: np.ndarray,
    group: np.ndarray | None = None,
    max_rows: int = 3000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of (same identity on another frame, different identity) pairs within each
    ``group`` (e.g. source_id; default one group). Rows with an unknown identity (< 0) are left out;
    over ``max_rows`` rows a seeded random subset is used. ``frame`` is any per-row frame key."""
    ident, frame = np.asarray(identity), np.asarray(frame)
    group = np.zeros(len(ident), np.int64) if group is None else np.asarray(group)
    idx = np.flatnonzero(ident >= 0)
    if len(idx) > max_rows:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_rows, replace=False))
    sim = cosine_similarity(np.asarray(emb)[idx])
    iu = np.triu_indices(len(idx), 1)
    s, i, f, g = sim[iu], ident[idx], frame[idx], group[idx]
    same_group = g[iu[0]] == g[iu[1]]
    same_id = i[iu[0]] == i[iu[1]]
    other_frame = f[iu[0]] != f[iu[1]]
    return s[same_group & same_id & other_frame], s[same_group & ~same_id]


def separation(same: np.ndarray, different: np.ndarray) -> dict[str, float]:
    """How well a cosine threshold tells same from different identities: ``auc`` (probability that a
    same-identity pair scores above a different-identity pair, ties half), the best ``threshold`` and
    its ``verification_accuracy`` (balanced: mean of both pair kinds' hit rates), medians."""
    same, different = np.asarray(same, np.float64), np.asarray(different, np.float64)
    if not len(same) or not len(different):
        nan = float("nan")
        return {"auc": nan, "threshold": nan, "verification_accuracy": nan}
    allv = np.concatenate([same, different])
    ranks = pd.Series(allv).rank(method="average").to_numpy()  # Mann-Whitney U, ties averaged
    auc = (ranks[: len(same)].sum() - len(same) * (len(same) + 1) / 2) / (
        len(same) * len(different)
    )
    cand = np.unique(allv)  # every distinct value as threshold ``same >= t``
    s_sorted, d_sorted = np.sort(same), np.sort(different)
    hit_same = 1 - np.searchsorted(s_sorted, cand, "left") / len(same)
    hit_diff = np.searchsorted(d_sorted, cand, "left") / len(different)
    bal = (hit_same + hit_diff) / 2
    k = int(np.argmax(bal))
    return {
        "auc": float(auc),
        "threshold": float(cand[k]),
        "verification_accuracy": float(bal[k]),
        "same_median": float(np.median(same)),
        "different_median": float(np.median(different)),
    }


def nearest_neighbours(
    emb: np.ndarray,
    frame: np.ndarray,
    group: np.ndarray | None = None,
    k: int = 1,
    queries: np.ndarray | None = None,
) -> np.ndarray:
    """Indices (Q, k) of each query row's ``k`` most similar rows (cosine) in the same ``group`` on
    another ``frame`` (-1 where fewer exist). ``queries``: row indices (default all)."""
    e = normalize_rows(emb)
    frame = np.asarray(frame)
    group = np.zeros(len(e), np.int64) if group is None else np.asarray(group)
    q = np.arange(len(e)) if queries is None else np.asarray(queries, np.int64)
    out = np.full((len(q), k), -1, np.int64)
    for start in range(0, len(q), 1024):
        qs = q[start : start + 1024]
        sim = e[qs] @ e.T
        sim[(frame[None, :] == frame[qs, None]) | (group[None, :] != group[qs, None])] = -np.inf
        top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        ok = np.take_along_axis(sim, top, 1) > -np.inf
        out[start : start + len(qs)] = np.where(ok, top, -1)
    return out


def reid_top1(
    emb: np.ndarray, identity: np.ndarray, frame: np.ndarray, group: np.ndarray | None = None
) -> dict[str, float]:
    """Re-identification across frames: each object with a known identity that also appears on
    another frame of its group is a query; the gallery is every object of the group on other frames.
    ``top1`` = fraction of queries whose nearest gallery object (cosine) has the same identity."""
    ident, frame = np.asarray(identity), np.asarray(frame)
    group = np.zeros(len(ident), np.int64) if group is None else np.asarray(group)
    key = pd.DataFrame({"i": ident, "g": group, "f": frame})
    frames_per_id = key[ident >= 0].groupby(["g", "i"])["f"].nunique()
    has_other = np.array(
        [i >= 0 and frames_per_id.get((g, i), 0) > 1 for i, g in zip(ident, group)], bool
    )
    q = np.flatnonzero(has_other)
    if not len(q):
        return {"queries": 0, "top1": float("nan")}
    nn = nearest_neighbours(emb, frame, group, 1, q)[:, 0]
    hit = (nn >= 0) & (ident[np.maximum(nn, 0)] == ident[q])
    return {"queries": int(len(q)), "top1": float(hit.mean())}


def pca_2d(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2-D PCA projection of the rows (numpy SVD of the centred, finite rows): (points (N, 2), the
    two components' share of the variance)."""
    e = np.nan_to_num(np.asarray(emb, np.float64).reshape(len(emb), -1))
    c = e - e.mean(0)
    if len(c) < 2:
        return np.zeros((len(c), 2)), np.zeros(2)
    _, s, vt = np.linalg.svd(c, full_matrices=False)
    var = s**2 / max((s**2).sum(), 1e-30)
    comps = vt[:2]
    pts = c @ comps.T
    if pts.shape[1] < 2:
        pts = np.c_[pts, np.zeros(len(pts))]
    return pts, np.resize(var[:2], 2)
