"""``dsprobe compare A.h5 B.h5``: drift between two recordings of the same streams (e.g. the TensorRT
engine on a Jetson vs the ONNX model through the reference recorder, or FP16 vs FP32), layer by layer
and box by box.

* Frames are aligned by (source_id, unique_id, frame_num), or by PTS (``by="pts"``).
* Per frame-level layer: max and mean |A - B|, relative error ``||A - B|| / ||B||`` over all aligned
  frames, and the cosine similarity of each frame's flattened tensors (worst and mean).
* Per-object (SGIE) layers: the objects of aligned frames are paired by rect (same class, IoU >= 0.5,
  :func:`dsprobe.analysis.evaluate.match`) and their tensors compared the same way.
* Detections: both recordings go through the *same* postprocess (``--postprocess`` spec, default:
  A's nvinfer config) and the boxes are matched one to one: matched / missing in A / extra in A and
  the IoU of the matches. B is the reference throughout.
* Preprocessing settings that differ between the two stored nvinfer configs are listed: a mismatch
  there (padding, scaling filter, offsets...) is the usual cause of drift.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import numpy as np
import pandas as pd

from dsprobe.analysis.evaluate import match
from dsprobe.postprocess.pipeline import Postprocess, PostprocessError
from dsprobe.recording.reader import Recording, open_recording


@dataclass
class LayerDrift:
    """Drift of one layer over all aligned frames (or paired objects); B is the reference."""

    name: str
    max_abs: float
    mean_abs: float
    rel_error: float  # ||A - B|| / ||B|| over everything compared
    cosine_min: float  # worst per-frame (per-object) cosine similarity
    cosine_mean: float
    compared: int = 0  # frames (objects) compared
    dtype_a: str = ""
    dtype_b: str = ""
    per_object: bool = False
    unique_id: int = 0


@dataclass
class ObjectPairing:
    """How the SGIE objects of aligned frames were paired (by rect) before comparing their tensors."""

    unique_id: int
    paired: int = 0
    only_in_a: int = 0
    only_in_b: int = 0


@dataclass
class DetectionDrift:
    """Boxes of A vs B (the reference) after the same postprocess, matched one to one."""

    matched: int = 0
    missing: int = 0  # in B, not in A
    extra: int = 0  # in A, not in B
    mean_iou: float = 0.0
    min_iou: float = 0.0
    postprocess: str = ""


@dataclass
class CompareReport:
    a: str
    b: str
    aligned_frames: int
    only_in_a: int
    only_in_b: int
    align_by: str
    layers: list[LayerDrift] = field(default_factory=list)
    layers_only_in_a: list[str] = field(default_factory=list)
    layers_only_in_b: list[str] = field(default_factory=list)
    objects: list[ObjectPairing] = field(default_factory=list)
    detections: DetectionDrift | None = None
    config_differences: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    worst_frames: list[dict[str, Any]] = field(default_factory=list)
    per_frame: pd.DataFrame | None = None
    per_object: pd.DataFrame | None = None  # SGIE objects paired by rect: cosine / max|d| per layer

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (everything but the per-frame table)."""
        d = asdict(self)
        d.pop("per_frame")
        d.pop("per_object")
        d["config_differences"] = {k: list(v) for k, v in self.config_differences.items()}
        return d

    def text(self) -> str:
        lines = [
            f"A {self.a}",
            f"B {self.b} (reference)",
            f"aligned {self.aligned_frames} frames by {self.align_by} ({self.only_in_a} only in A, "
            f"{self.only_in_b} only in B)",
        ]
        if self.config_differences:
            lines.append(
                "preprocessing differs: "
                + ", ".join(f"{k} A={a!r} B={b!r}" for k, (a, b) in self.config_differences.items())
            )
        if self.layers:
            lines.append("layer drift:")
        for ld in self.layers:
            where = f"GIE {ld.unique_id}{' per object' if ld.per_object else ''}"
            dt = f" {ld.dtype_a} vs {ld.dtype_b}" if ld.dtype_a != ld.dtype_b else ""
            lines.append(
                f"  {ld.name:<20} max|d| {ld.max_abs:.4g}  mean|d| {ld.mean_abs:.4g}  rel {ld.rel_error:.3g}  "
                f"cos min {ld.cosine_min:.6f} mean {ld.cosine_mean:.6f}  ({ld.compared} {where}{dt})"
            )
        for name in self.layers_only_in_a:
            lines.append(f"  {name:<20} only in A")
        for name in self.layers_only_in_b:
            lines.append(f"  {name:<20} only in B")
        for o in self.objects:
            lines.append(
                f"SGIE {o.unique_id} objects paired by rect: {o.paired} ({o.only_in_a} only in A, "
                f"{o.only_in_b} only in B)"
            )
        if self.worst_frames:
            w = self.worst_frames[0]
            lines.append(
                f"worst frame: source {w['source_id']} frame {w['frame_num']} ({w['layer']} max|d| "
                f"{w['max_abs']:.4g})"
            )
        lines += self.notes
        if self.detections is not None:
            d = self.detections
            lines.append(
                f"detections after the same postprocess ({d.postprocess}): {d.matched} matched (IoU mean "
                f"{d.mean_iou:.4f}, min {d.min_iou:.4f}), {d.missing} missing in A, {d.extra} extra in A"
            )
        return "\n".join(lines)


def align(a: Recording, b: Recording, by: str = "frame") -> tuple[np.ndarray, np.ndarray]:
    """Frame rows present in both, as two aligned arrays: matched on (source_id, unique_id, frame_num)
    or (source_id, unique_id, pts_ns); a key seen twice in one recording pairs its first row only."""
    if by not in ("frame", "pts"):
        raise ValueError(f"align by 'frame' or 'pts', got {by!r}")
    key = ["source_id", "unique_id", "frame_num" if by == "frame" else "pts_ns"]
    fa = a.frames[key].reset_index().drop_duplicates(key)
    fb = b.frames[key].reset_index().drop_duplicates(key)
    m = fa.merge(fb, on=key, suffixes=("_a", "_b")).sort_values("row_a")
    return m["row_a"].to_numpy(np.int64), m["row_b"].to_numpy(np.int64)


class _DriftAccumulator:
    """Running max/mean |A - B|, ||A - B||, ||B|| and per-row cosine over blocks of rows."""

    def __init__(self) -> None:
        self.max = 0.0
        self.sum_abs = 0.0
        self.count = 0
        self.sq_diff = 0.0
        self.sq_b = 0.0
        self.cos: list[np.ndarray] = []
        self.row_max: list[np.ndarray] = []

    def add(self, xa: np.ndarray, xb: np.ndarray) -> None:
        xa = xa.reshape(len(xa), -1).astype(np.float64)
        xb = xb.reshape(len(xb), -1).astype(np.float64)
        d = np.abs(xa - xb)
        if d.size:
            self.max = max(self.max, float(d.max()))
        self.sum_abs += float(d.sum())
        self.count += d.size
        self.sq_diff += float((d * d).sum())
        self.sq_b += float((xb * xb).sum())
        na, nb = np.linalg.norm(xa, axis=1), np.linalg.norm(xb, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            cos = np.where(
                (na > 0) & (nb > 0), (xa * xb).sum(1) / (na * nb), np.where(na == nb, 1.0, 0.0)
            )
        self.cos.append(cos)
        self.row_max.append(d.max(1) if d.shape[1] else np.zeros(len(d)))

    def result(self, name: str, **kw: Any) -> LayerDrift:
        cos = np.concatenate(self.cos) if self.cos else np.ones(0)
        return LayerDrift(
            name,
            self.max,
            self.sum_abs / self.count if self.count else 0.0,
            float(np.sqrt(self.sq_diff) / max(np.sqrt(self.sq_b), 1e-30)),
            float(cos.min()) if cos.size else 1.0,
            float(cos.mean()) if cos.size else 1.0,
            compared=len(cos),
            **kw,
        )


def _blocks(n: int, size: int = 256) -> Iterator[slice]:
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


def _pgie_uid(rec: Recording) -> int | None:
    f = rec.frames
    uids = sorted(set(int(u) for u in f["unique_id"][f["layer_row"] >= 0]))
    return uids[0] if uids else None


def _config_for(rec: Recording, uid: int | None) -> Any:
    try:
        return rec.config(uid)
    except ValueError:
        return None


def _preprocessing_differences(a: Recording, b: Recording) -> dict[str, tuple[Any, Any]]:
    ca, cb = _config_for(a, _pgie_uid(a)), _config_for(b, _pgie_uid(b))
    if ca is None or cb is None:
        return {}
    pa, pb = asdict(ca.preprocessing), asdict(cb.preprocessing)
    return {k: (pa[k], pb[k]) for k in pa if pa[k] != pb.get(k)}


def compare(
    path_a: Any,
    path_b: Any,
    postprocess: Postprocess | None = None,
    by: str = "frame",
    iou_threshold: float = 0.5,
) -> CompareReport:
    """Drift report of recording A against recording B (paths or open Recordings)."""
    a = path_a if isinstance(path_a, Recording) else open_recording(path_a)
    b = path_b if isinstance(path_b, Recording) else open_recording(path_b)
    try:
        return _compare(a, b, postprocess, by, iou_threshold)
    finally:
        if a is not path_a:
            a.close()
        if b is not path_b:
            b.close()


def _compare(
    a: Recording, b: Recording, postprocess: Postprocess | None, by: str, iou_threshold: float
) -> CompareReport:
    ra, rb = align(a, b, by)
    rep = CompareReport(
        str(a.paths[0]), str(b.paths[0]), len(ra), len(a) - len(ra), len(b) - len(rb), by
    )
    rep.config_differences = _preprocessing_differences(a, b)
    fa = a.frames
    per_frame = pd.DataFrame(
        {
            "row_a": ra,
            "row_b": rb,
            "source_id": fa["source_id"].to_numpy()[ra],
            "unique_id": fa["unique_id"].to_numpy()[ra],
            "frame_num": fa["frame_num"].to_numpy()[ra],
        }
    )
    keys_b = {(i.unique_id, i.name, i.per_object): i for i in b.layers.values()}
    keys_a = {(i.unique_id, i.name, i.per_object): i for i in a.layers.values()}
    rep.layers_only_in_a = [
        i.key for k, i in keys_a.items() if k not in keys_b or keys_b[k].shape != i.shape
    ]
    rep.layers_only_in_b = [
        i.key for k, i in keys_b.items() if k not in keys_a or keys_a[k].shape != i.shape
    ]
    uid_a = fa["unique_id"].to_numpy()[ra]
    has_a = fa["layer_row"].to_numpy()[ra] >= 0
    has_b = b.frames["layer_row"].to_numpy()[rb] >= 0
    worst = []
    for k, info in keys_a.items():
        other = keys_b.get(k)
        if other is None or other.shape != info.shape or info.per_object:
            continue
        sel = np.flatnonzero((uid_a == info.unique_id) & has_a & has_b)
        acc = _DriftAccumulator()
        for s in _blocks(len(sel)):
            acc.add(
                a.read_layer(info.name, ra[sel[s]], unique_id=info.unique_id),
                b.read_layer(other.name, rb[sel[s]], unique_id=other.unique_id),
            )
        rep.layers.append(
            acc.result(
                info.key,
                dtype_a=str(info.dtype),
                dtype_b=str(other.dtype),
                unique_id=info.unique_id,
            )
        )
        col = np.full(len(ra), np.nan)
        if acc.row_max:
            col[sel] = np.concatenate(acc.row_max)
            j = int(np.nanargmax(col))
            worst.append(
                {
                    "layer": info.key,
                    "source_id": int(per_frame["source_id"][j]),
                    "frame_num": int(per_frame["frame_num"][j]),
                    "max_abs": float(col[j]),
                }
            )
        per_frame[f"max_abs:{info.key}"] = col
    rep.worst_frames = sorted(worst, key=lambda w: -w["max_abs"])
    _compare_objects(a, b, ra, rb, keys_a, keys_b, rep)
    _compare_detections(a, b, ra, rb, postprocess, iou_threshold, rep, per_frame)
    rep.per_frame = per_frame
    return rep


def _compare_objects(
    a: Recording,
    b: Recording,
    ra: np.ndarray,
    rb: np.ndarray,
    keys_a: dict,
    keys_b: dict,
    rep: CompareReport,
) -> None:
    """Per-object (SGIE) layers: pair the objects of aligned frames by rect, compare their tensors."""
    from dsprobe.detections import Detections

    layers = [
        (i, keys_b[k])
        for k, i in keys_a.items()
        if i.per_object and k in keys_b and keys_b[k].shape == i.shape
    ]
    if not layers:
        return
    oa, ob = a.object_table("objects"), b.object_table("objects")
    ga, gb = dict(list(oa.groupby("row"))), dict(list(ob.groupby("row")))
    cols = ["left", "top", "width", "height"]

    def dets(g: pd.DataFrame) -> Detections:
        r = g[cols].to_numpy(np.float64)
        return Detections(
            np.c_[r[:, :2], r[:, :2] + r[:, 2:]],
            g["confidence"].to_numpy(),
            g["class_id"].to_numpy(),
            "frame",
        )

    uid_a = a.frames["unique_id"].to_numpy()
    for uid in sorted({i.unique_id for i, _ in layers}):
        pairing = ObjectPairing(uid)
        pa, pb = [], []
        for i, j in zip(ra, rb):
            if uid_a[i] != uid:
                continue
            da, db = ga.get(int(i)), gb.get(int(j))
            if da is None or db is None:
                pairing.only_in_a += 0 if da is None else len(da)
                pairing.only_in_b += 0 if db is None else len(db)
                continue
            da, db = da[da["layer_row"] >= 0], db[db["layer_row"] >= 0]
            m = match(dets(da), dets(db), 0.5)
            pa.extend(da.index.to_numpy()[m.pairs[:, 0]])
            pb.extend(db.index.to_numpy()[m.pairs[:, 1]])
            pairing.only_in_a += len(m.unmatched_a)
            pairing.only_in_b += len(m.unmatched_b)
        pairing.paired = len(pa)
        rep.objects.append(pairing)
        pa_arr, pb_arr = np.asarray(pa, np.int64), np.asarray(pb, np.int64)
        table = pd.DataFrame(
            {
                "unique_id": uid,
                "object_row_a": pa_arr,
                "object_row_b": pb_arr,
                "row_a": oa["row"].to_numpy()[pa_arr] if len(pa_arr) else pa_arr,
            }
        )
        for ia, ib in layers:
            if ia.unique_id != uid:
                continue
            acc = _DriftAccumulator()
            for s in _blocks(len(pa_arr)):
                acc.add(
                    a.read_layer(ia.name, pa_arr[s], unique_id=uid),
                    b.read_layer(ib.name, pb_arr[s], unique_id=uid),
                )
            rep.layers.append(
                acc.result(
                    ia.key,
                    dtype_a=str(ia.dtype),
                    dtype_b=str(ib.dtype),
                    per_object=True,
                    unique_id=uid,
                )
            )
            table[f"cosine:{ia.key}"] = np.concatenate(acc.cos) if acc.cos else []
            table[f"max_abs:{ia.key}"] = np.concatenate(acc.row_max) if acc.row_max else []
        rep.per_object = pd.concat([rep.per_object, table], ignore_index=True)


def _compare_detections(
    a: Recording,
    b: Recording,
    ra: np.ndarray,
    rb: np.ndarray,
    postprocess: Postprocess | None,
    iou_threshold: float,
    rep: CompareReport,
    per_frame: pd.DataFrame,
) -> None:
    uid = _pgie_uid(a)
    if uid is None:
        return
    explicit = postprocess is not None
    if postprocess is None:
        cfg = _config_for(a, uid) or _config_for(b, _pgie_uid(b))
        if cfg is None:
            rep.notes.append(
                "detections not compared: no nvinfer config stored and no postprocess given"
            )
            return
        postprocess = Postprocess.from_nvinfer_config(cfg)
    sel = np.flatnonzero(
        (a.frames["unique_id"].to_numpy()[ra] == uid)
        & (a.frames["layer_row"].to_numpy()[ra] >= 0)
        & (b.frames["layer_row"].to_numpy()[rb] >= 0)
    )
    if not len(sel):
        return
    try:
        det_a = postprocess.detections_by_row(a, ra[sel], unique_id=uid)
        det_b = postprocess.detections_by_row(
            b, rb[sel], unique_id=int(b.frames["unique_id"].iloc[rb[sel[0]]])
        )
    except PostprocessError as exc:
        if explicit:
            raise
        rep.notes.append(
            f"detections not compared: the config's default postprocess does not fit these layers "
            f"({exc}); pass --postprocess spec.json"
        )
        return
    dd = DetectionDrift(postprocess=repr(postprocess))
    ious = []
    matched = np.full(len(ra), np.nan)
    frame_iou = np.full(len(ra), np.nan)
    for k in sel:
        da, db = det_a[int(ra[k])], det_b[int(rb[k])]
        m = match(da, db, iou_threshold)
        dd.matched += len(m.pairs)
        dd.missing += len(m.unmatched_b)
        dd.extra += len(m.unmatched_a)
        ious.extend(m.ious.tolist())
        matched[k] = len(m.pairs) / len(db) if len(db) else (1.0 if not len(da) else 0.0)
        frame_iou[k] = float(m.ious.mean()) if len(m.ious) else np.nan
    dd.mean_iou = float(np.mean(ious)) if ious else 0.0
    dd.min_iou = float(np.min(ious)) if ious else 0.0
    rep.detections = dd
    per_frame["matched_fraction"] = matched
    per_frame["mean_iou"] = frame_iou
