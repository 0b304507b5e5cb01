"""``dsprobe compare A.h5 B.h5``: drift between two recordings of the same streams (e.g. the TensorRT
engine on a Jetson vs the ONNX model through the reference recorder), layer by layer and box by box."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dsprobe.evaluate import match
from dsprobe.postprocess.pipeline import Postprocess
from dsprobe.recording.reader import Recording, RecordingError, open_recording


@dataclass
class LayerDrift:
    """Per-layer drift over all aligned frames (B is the reference)."""

    name: str
    max_abs: float
    mean_abs: float
    rel_error: float       # ||A - B|| / ||B|| over all frames
    cosine_min: float      # worst per-frame cosine similarity
    cosine_mean: float


@dataclass
class DetectionDrift:
    matched: int = 0
    missing: int = 0       # in B, not in A
    extra: int = 0         # in A, not in B
    mean_iou: float = 0.0
    min_iou: float = 1.0


@dataclass
class CompareReport:
    a: str
    b: str
    aligned_frames: int
    only_in_a: int
    only_in_b: int
    align_by: str
    layers: list[LayerDrift] = field(default_factory=list)
    detections: DetectionDrift | None = None
    per_frame: pd.DataFrame | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("per_frame")
        return d

    def text(self) -> str:
        lines = [f"A {self.a}", f"B {self.b}",
                 f"aligned {self.aligned_frames} frames by {self.align_by} ({self.only_in_a} only in A, "
                 f"{self.only_in_b} only in B)", "layer drift (B is the reference):"]
        for l in self.layers:
            lines.append(f"  {l.name:<20} max|d| {l.max_abs:.4g}  mean|d| {l.mean_abs:.4g}  rel {l.rel_error:.3g}  "
                         f"cos min {l.cosine_min:.6f} mean {l.cosine_mean:.6f}")
        if self.detections is not None:
            d = self.detections
            lines.append(f"detections after the same postprocess: {d.matched} matched (IoU mean {d.mean_iou:.4f}, "
                         f"min {d.min_iou:.4f}), {d.missing} missing in A, {d.extra} extra in A")
        return "\n".join(lines)


def align(a: Recording, b: Recording, by: str = "frame") -> tuple[np.ndarray, np.ndarray]:
    """Row pairs of frames present in both: by (source_id, unique_id, frame_num) or by PTS."""
    key = ["source_id", "unique_id", "frame_num" if by == "frame" else "pts_ns"]
    fa = a.frames[key].reset_index()
    fb = b.frames[key].reset_index()
    m = fa.merge(fb, on=key, suffixes=("_a", "_b"))
    return m["row_a"].to_numpy(), m["row_b"].to_numpy()


def compare(path_a: str, path_b: str, postprocess: Postprocess | None = None, by: str = "frame",
            iou_threshold: float = 0.5) -> CompareReport:
    a, b = open_recording(path_a), open_recording(path_b)
    try:
        ra, rb = align(a, b, by)
        rep = CompareReport(str(path_a), str(path_b), len(ra), len(a) - len(ra), len(b) - len(rb), by)
        per_frame = pd.DataFrame({"row_a": ra, "row_b": rb,
                                  "source_id": a.frames["source_id"].to_numpy()[ra],
                                  "frame_num": a.frames["frame_num"].to_numpy()[ra]})
        shared = [(k, i) for k, i in a.layers.items() if not i.per_object and k in b.layers
                  and b.layers[k].shape == i.shape]
        for key, info in shared:
            rows_a = ra[a.frames["layer_row"].to_numpy()[ra] >= 0]
            sel = np.isin(ra, rows_a)
            xa = a.read_layer(info.name, ra[sel], unique_id=info.unique_id).astype(np.float64).reshape(sel.sum(), -1)
            xb = b.read_layer(info.name, rb[sel], unique_id=b.layers[key].unique_id).astype(np.float64)
            xb = xb.reshape(sel.sum(), -1)
            d = np.abs(xa - xb)
            na, nb = np.linalg.norm(xa, axis=1), np.linalg.norm(xb, axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                cos = np.where((na > 0) & (nb > 0), (xa * xb).sum(1) / (na * nb), 1.0)
            rep.layers.append(LayerDrift(key, float(d.max()) if d.size else 0.0, float(d.mean()) if d.size else 0.0,
                                         float(np.linalg.norm(xa - xb) / max(np.linalg.norm(xb), 1e-30)),
                                         float(cos.min()) if cos.size else 1.0, float(cos.mean()) if cos.size else 1.0))
            col = np.full(len(ra), np.nan)
            col[sel] = d.max(1)
            per_frame[f"max_abs:{key}"] = col
        if postprocess is None:
            cfg = a.config() or b.config()
            postprocess = Postprocess.from_nvinfer_config(cfg) if cfg is not None else None
        if postprocess is not None:
            dd = DetectionDrift()
            ious, matched = [], []
            for i, j in zip(ra, rb):
                da, db = postprocess(a[int(i)]), postprocess(b[int(j)])
                m = match(da, db, iou_threshold)
                dd.matched += len(m.pairs)
                dd.missing += len(m.unmatched_b)
                dd.extra += len(m.unmatched_a)
                ious.extend(m.ious.tolist())
                matched.append(len(m.pairs) / max(1, len(db)))
            dd.mean_iou = float(np.mean(ious)) if ious else 0.0
            dd.min_iou = float(np.min(ious)) if ious else 0.0
            rep.detections = dd
            per_frame["matched_fraction"] = matched
        rep.per_frame = per_frame
        return rep
    finally:
        a.close()
        b.close()


def plot(rep: CompareReport, path: str) -> None:
    """PNG of the per-frame drift: max |A-B| per layer and the matched fraction of B's boxes."""
    from dsprobe.viz import _plt
    plt = _plt()
    pf = rep.per_frame
    cols = [c for c in pf.columns if c.startswith("max_abs:")]
    fig, axes = plt.subplots(2 if "matched_fraction" in pf else 1, 1, figsize=(9, 5), squeeze=False)
    for c in cols:
        for src, g in pf.groupby("source_id"):
            axes[0, 0].plot(g["frame_num"], g[c], label=f"{c[8:]} source {src}", linewidth=1)
    axes[0, 0].set_ylabel("max |A - B|")
    axes[0, 0].legend(fontsize=7)
    if "matched_fraction" in pf:
        for src, g in pf.groupby("source_id"):
            axes[1, 0].plot(g["frame_num"], g["matched_fraction"], label=f"source {src}", linewidth=1)
        axes[1, 0].set_ylabel("B boxes matched in A")
        axes[1, 0].set_ylim(0, 1.05)
        axes[1, 0].set_xlabel("frame")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="recording A (e.g. from the device)")
    p.add_argument("b", help="recording B, the reference (e.g. the reference recorder's)")
    p.add_argument("--postprocess", help="postprocess spec for the detection-level comparison "
                                         "(default: from A's nvinfer config)")
    p.add_argument("--by", choices=("frame", "pts"), default="frame", help="align frames by frame number or PTS")
    p.add_argument("--iou", type=float, default=0.5, help="IoU for matching boxes")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--plot", help="write a PNG of the per-frame drift here")


def run(args: argparse.Namespace) -> int:
    try:
        pp = Postprocess.load(args.postprocess) if args.postprocess else None
        rep = compare(args.a, args.b, pp, args.by, args.iou)
    except (RecordingError, ValueError) as exc:
        print(f"dsprobe compare: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(rep.to_dict(), indent=2) if args.json else rep.text())
    if args.plot:
        plot(rep, args.plot)
    return 0
