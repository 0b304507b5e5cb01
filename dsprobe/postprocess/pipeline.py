"""Postprocess: an ordered, named, JSON-serialisable composition of registered steps.

``decode -> filter(s) -> cluster -> scale -> filter(s)``; each step is ``(kind, name, params)``.
The same object runs in a notebook, in the reference recorder and in the live DeepStream probe:
``pp(frame) -> Detections`` is a pure function of (tensors, frame context, spec).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from dsprobe.detections import Detections
from dsprobe.nvinfer_config import (CLUSTER_DBSCAN, CLUSTER_DBSCAN_NMS, CLUSTER_GROUP_RECTANGLES, CLUSTER_NMS,
                                    CLUSTER_NONE, NvinferConfig, Preprocessing)
from dsprobe.postprocess.registry import STEP_KINDS, StepContext, get_step

SPEC_FORMAT = "dsprobe-postprocess"
SPEC_VERSION = 1


class PostprocessError(ValueError):
    """A bad spec or a step that failed; the message names the step and what was expected."""


@dataclass
class Step:
    """One step: ``kind`` in decode/filter/cluster/scale, registered ``name`` (or "module:function")."""

    kind: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "params": dict(self.params)}


def _scalar_or_list(values: Sequence) -> Any:
    vals = list(values)
    return vals[0] if vals and all(v == vals[0] for v in vals) else vals


class Postprocess:
    """A postprocess spec plus the resolved step functions.

    * ``steps``: list of :class:`Step` (or dicts), exactly one ``decode`` first.
    * ``labels``: class labels; ``num_classes``: num-detected-classes (0 = unknown).
    * ``geometry``: preprocessing geometry used when the context gives none (embedded from the
      nvinfer config so the spec stands alone in the live probe).
    * ``allow_import``: permit ``"module:function"`` steps (user code) to be imported.
    """

    def __init__(self, steps: Sequence[Step | Mapping[str, Any]], *, labels: Sequence[str] = (), num_classes: int = 0,
                 geometry: Preprocessing | None = None, allow_import: bool = False,
                 functions: Mapping[str, Callable] | None = None) -> None:
        self.steps = [s if isinstance(s, Step) else Step(s["kind"], s["name"], dict(s.get("params", {})))
                      for s in steps]
        self.labels = list(labels)
        self.num_classes = num_classes
        self.geometry = geometry
        self.allow_import = allow_import
        self._functions = dict(functions or {})
        if not self.steps or self.steps[0].kind != "decode":
            raise PostprocessError("a Postprocess starts with exactly one 'decode' step")
        if sum(s.kind == "decode" for s in self.steps) != 1:
            raise PostprocessError("a Postprocess has exactly one 'decode' step")
        self._fns = [self._resolve(i, s) for i, s in enumerate(self.steps)]

    # ------------------------------------------------------------------ construction
    def _resolve(self, i: int, step: Step) -> Callable:
        if step.kind not in STEP_KINDS:
            raise PostprocessError(f"step {i} ({step.name!r}): unknown kind {step.kind!r}; expected one of {STEP_KINDS}")
        fn = self._functions.get(step.name)
        if fn is None:
            try:
                fn = get_step(step.kind, step.name, allow_import=self.allow_import)  # type: ignore[arg-type]
            except (KeyError, PermissionError, ImportError, AttributeError, TypeError, ValueError) as exc:
                raise PostprocessError(f"step {i} ({step.kind} {step.name!r}): {exc}") from None
        _check_params(i, step, fn)
        return fn

    @classmethod
    def from_nvinfer_config(cls, cfg: NvinferConfig, decoder: str = "yolov8", decoder_params: Mapping | None = None,
                            *, deepstream_version: float = 7.1, opencv_build: bool = False,
                            labels: Sequence[str] | None = None, **kwargs: Any) -> "Postprocess":
        """The spec equivalent to an nvinfer config: its [class-attrs-*] thresholds, cluster-mode,
        filters and geometry, with ``decoder`` in place of nvinfer's parser."""
        n = cfg.num_detected_classes or 1
        pc = lambda name: _scalar_or_list(cfg.per_class(name, n))  # noqa: E731
        steps = [Step("decode", decoder, dict(decoder_params or {})),
                 Step("filter", "threshold", {"pre_cluster_threshold": pc("pre_cluster_threshold"),
                                              "num_classes": cfg.num_detected_classes})]
        mode = cfg.cluster_mode
        if mode == CLUSTER_NMS:
            steps.append(Step("cluster", "nms", {"iou_threshold": pc("nms_iou_threshold"),
                                                 "post_cluster_threshold": pc("post_cluster_threshold"),
                                                 "topk": pc("topk")}))
        elif mode == CLUSTER_GROUP_RECTANGLES:
            steps.append(Step("cluster", "group_rectangles", {"group_threshold": pc("group_threshold"),
                                                              "eps": pc("eps"),
                                                              "post_cluster_threshold": pc("post_cluster_threshold"),
                                                              "opencv_build": opencv_build}))
        elif mode == CLUSTER_NONE:
            steps.append(Step("cluster", "none", {"topk": pc("topk")}))
        elif mode in (CLUSTER_DBSCAN, CLUSTER_DBSCAN_NMS):
            steps.append(Step("cluster", "dbscan", {"eps": pc("eps"), "min_boxes": pc("min_boxes"),
                                                    "min_score": pc("dbscan_min_score"),
                                                    "post_cluster_threshold": pc("post_cluster_threshold"),
                                                    "topk": pc("topk"), "then_nms": mode == CLUSTER_DBSCAN_NMS,
                                                    "iou_threshold": pc("nms_iou_threshold")}))
        else:
            raise PostprocessError(f"{cfg.path or 'config'}: unknown cluster-mode {mode}")
        pre = cfg.preprocessing
        steps.append(Step("scale", "nvinfer", {"maintain_aspect_ratio": pre.maintain_aspect_ratio,
                                               "symmetric_padding": pre.symmetric_padding,
                                               "deepstream_version": deepstream_version}))
        obj = {"filter_out_class_ids": list(cfg.filter_out_class_ids)}
        for name in ("detected_min_w", "detected_min_h", "detected_max_w", "detected_max_h", "roi_top_offset",
                     "roi_bottom_offset"):
            obj[name] = pc(name)
        if cfg.crop_objects_to_roi_boundary or any(np.any(np.asarray(v) != 0) for k, v in obj.items()
                                                   if k != "filter_out_class_ids") or obj["filter_out_class_ids"]:
            obj["crop_objects_to_roi_boundary"] = cfg.crop_objects_to_roi_boundary
            steps.append(Step("filter", "objects", obj))
        return cls(steps, labels=labels if labels is not None else cfg.labels(), num_classes=cfg.num_detected_classes,
                   geometry=pre, **kwargs)

    # ------------------------------------------------------------------ spec
    def to_dict(self) -> dict[str, Any]:
        return {"format": SPEC_FORMAT, "version": SPEC_VERSION, "labels": self.labels,
                "num_classes": self.num_classes,
                "geometry": None if self.geometry is None else {
                    "network_width": self.geometry.network_width, "network_height": self.geometry.network_height,
                    "network_channels": self.geometry.network_channels,
                    "maintain_aspect_ratio": self.geometry.maintain_aspect_ratio,
                    "symmetric_padding": self.geometry.symmetric_padding},
                "steps": [s.to_dict() for s in self.steps]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, allow_import: bool = False,
                  functions: Mapping[str, Callable] | None = None) -> "Postprocess":
        if d.get("format") != SPEC_FORMAT:
            raise PostprocessError(f"not a dsprobe postprocess spec (format={d.get('format')!r})")
        if int(d.get("version", 0)) > SPEC_VERSION:
            raise PostprocessError(f"postprocess spec version {d['version']} is newer than this dsprobe "
                                   f"({SPEC_VERSION}); upgrade dsprobe")
        g = d.get("geometry")
        return cls(d["steps"], labels=d.get("labels", ()), num_classes=int(d.get("num_classes", 0)),
                   geometry=Preprocessing(**g) if g else None, allow_import=allow_import, functions=functions)

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return p

    @classmethod
    def load(cls, path: str | Path, *, allow_import: bool = False,
             functions: Mapping[str, Callable] | None = None) -> "Postprocess":
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise PostprocessError(f"{p}: cannot read postprocess spec: {exc}") from None
        try:
            return cls.from_dict(d, allow_import=allow_import, functions=functions)
        except PostprocessError as exc:
            raise PostprocessError(f"{p}: {exc}") from None

    def with_params(self, kind_or_index: str | int, **params: Any) -> "Postprocess":
        """A copy with ``params`` updated in the first step of ``kind`` (or step number ``index``)."""
        idx = kind_or_index if isinstance(kind_or_index, int) else \
            next((i for i, s in enumerate(self.steps) if s.kind == kind_or_index), None)
        if idx is None:
            raise PostprocessError(f"no {kind_or_index!r} step in this postprocess")
        steps = [Step(s.kind, s.name, dict(s.params)) for s in self.steps]
        steps[idx].params.update(params)
        return Postprocess(steps, labels=self.labels, num_classes=self.num_classes, geometry=self.geometry,
                           allow_import=self.allow_import, functions=self._functions)

    def with_step(self, kind: str, name: str, **params: Any) -> "Postprocess":
        """A copy whose first ``kind`` step is replaced by ``name`` with ``params``."""
        steps = [Step(s.kind, s.name, dict(s.params)) for s in self.steps]
        idx = next((i for i, s in enumerate(steps) if s.kind == kind), None)
        if idx is None:
            raise PostprocessError(f"no {kind!r} step in this postprocess")
        steps[idx] = Step(kind, name, dict(params))
        return Postprocess(steps, labels=self.labels, num_classes=self.num_classes, geometry=self.geometry,
                           allow_import=self.allow_import, functions=self._functions)

    def step(self, kind: str) -> Step:
        for s in self.steps:
            if s.kind == kind:
                return s
        raise PostprocessError(f"no {kind!r} step in this postprocess")

    # ------------------------------------------------------------------ running
    def context(self, frame: Any, crop_rect: tuple[float, float, float, float] | None = None) -> StepContext:
        """StepContext for a FrameRecord / recording FrameView (network size from the frame)."""
        nw, nh = frame.network_size[:2]
        if (not nw or not nh) and self.geometry is not None:
            nw, nh = self.geometry.network_size
        fw, fh = frame.frame_size
        return StepContext(network_size=(int(nw), int(nh)), frame_size=(int(fw), int(fh)),
                           crop_rect=crop_rect or (0.0, 0.0, float(fw), float(fh)), num_classes=self.num_classes,
                           labels=tuple(self.labels), geometry=self.geometry)

    def run(self, layers: Mapping[str, np.ndarray], ctx: StepContext, *, start: int = 0,
            stop: int | None = None, dets: Detections | None = None) -> Detections:
        """Run steps ``start:stop`` (default all) on ``layers`` (or on ``dets`` when start > 0)."""
        for i in range(start, len(self.steps) if stop is None else stop):
            s, fn = self.steps[i], self._fns[i]
            try:
                dets = fn(layers, ctx, **s.params) if s.kind == "decode" else fn(dets, ctx, **s.params)
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise PostprocessError(f"step {i} ({s.kind} {s.name!r}): {exc}") from exc
            if not isinstance(dets, Detections):
                raise PostprocessError(f"step {i} ({s.kind} {s.name!r}) returned {type(dets).__name__}, "
                                       "expected Detections")
        assert dets is not None
        return dets

    def __call__(self, frame: Any) -> Detections:
        """Detections in frame pixels for a recorded frame or FrameRecord.

        PGIE frames (frame-level layers) run once on the whole frame. SGIE frames run once per object
        with that object's rect as the crop; ``object_ids`` of the result holds the index of the
        parent object in ``frame.objects`` (the probe attaches results under that parent).
        """
        layers = frame.layers if hasattr(frame, "layers") else frame.tensors
        if layers:
            return self.run(layers, self.context(frame))
        parts = []
        for k, obj in enumerate(frame.objects):
            if not obj.layers:
                continue
            d = self.run(obj.layers, self.context(frame, tuple(obj.rect)))
            parts.append(Detections(d.boxes, d.scores, d.class_ids, d.space, keypoints=d.keypoints,
                                    vectors=d.vectors, masks=d.masks, object_ids=np.full(len(d), k, np.uint64)))
        return Detections.concatenate(parts) if parts else Detections.empty("frame")

    def run_recording(self, rec: Any, rows: Iterable[int] | None = None, *, unique_id: int | None = None,
                      progress: bool = False, batch: int = 32) -> "Any":
        """Detections for many frames of a Recording as one DataFrame (one row per detection, with the
        frame ``row``, ``source_id``, ``frame_num``). PGIE layers are read in blocks (fast path)."""
        import pandas as pd

        per_frame = self.detections_by_row(rec, rows, unique_id=unique_id, progress=progress, batch=batch)
        return detections_frame(rec, per_frame, self.labels)

    def detections_by_row(self, rec: Any, rows: Iterable[int] | None = None, *, unique_id: int | None = None,
                          progress: bool = False, batch: int = 32, stop: int | None = None) -> dict[int, Detections]:
        """``{frame row: Detections}`` for a Recording; ``stop`` runs only steps ``[0, stop)``."""
        rows = _frame_rows(rec, rows, unique_id)
        out: dict[int, Detections] = {}
        f = rec.frames
        layered = f["layer_row"].to_numpy()[rows] >= 0 if len(rows) else np.zeros(0, bool)
        frame_rows, object_rows = rows[layered], rows[~layered]
        it = _progress(range(0, len(frame_rows), batch), progress, total=-(-len(frame_rows) // batch))
        names = None
        for b0 in it:
            block = frame_rows[b0:b0 + batch]
            uid = int(f["unique_id"].iloc[block[0]])
            if names is None or len({int(u) for u in f["unique_id"].iloc[block]}) > 1:
                names = [i.name for i in rec.layers.values() if i.unique_id == uid and not i.per_object]
            arrays = {n: rec.read_layer(n, block, unique_id=uid) for n in names}
            for k, r in enumerate(block):
                view = _RowContext(f, int(r))
                out[int(r)] = self.run({n: a[k] for n, a in arrays.items()}, self.context(view), stop=stop)
        for r in object_rows:
            frame = rec[int(r)]
            if stop is None:
                out[int(r)] = self(frame)
            else:
                parts = [self.run(o.layers, self.context(frame, tuple(o.rect)), stop=stop)
                         for o in frame.objects if o.layers]
                out[int(r)] = Detections.concatenate(parts) if parts else Detections.empty()
        return out

    def decode_recording(self, rec: Any, rows: Iterable[int] | None = None, **kw: Any) -> "DecodedRecording":
        """Decode once for many frames, so threshold / clustering / scaling settings can be swept
        cheaply with :meth:`DecodedRecording.run` (PGIE frames)."""
        rows = _frame_rows(rec, rows, kw.pop("unique_id", None))
        cands = self.detections_by_row(rec, rows, stop=1, **kw)
        ctxs = {r: self.context(_RowContext(rec.frames, r)) for r in cands}
        return DecodedRecording(self, cands, ctxs, rec)

    def __repr__(self) -> str:
        return "Postprocess(" + " -> ".join(f"{s.kind}:{s.name}" for s in self.steps) + ")"


@dataclass
class DecodedRecording:
    """Decoder output (candidates in network pixels) per frame row, ready for re-running the rest."""

    postprocess: Postprocess
    candidates: dict[int, Detections]
    contexts: dict[int, StepContext]
    recording: Any = None

    def run(self, postprocess: Postprocess | None = None) -> dict[int, Detections]:
        """Apply every step after the decoder of ``postprocess`` (default: the decoding one) to the
        cached candidates; its decode step must equal the cached one."""
        pp = postprocess or self.postprocess
        if pp.steps[0].to_dict() != self.postprocess.steps[0].to_dict():
            raise PostprocessError("the cached candidates come from another decode step; decode again")
        return {r: pp.run({}, self.contexts[r], start=1, dets=d) for r, d in self.candidates.items()}

class _RowContext:
    """Frame context of one row of ``Recording.frames`` (what Postprocess.context needs)."""

    def __init__(self, frames: Any, row: int) -> None:
        r = frames.iloc[row]
        self.network_size = (int(r["network_width"]), int(r["network_height"]))
        self.frame_size = (int(r["frame_width"]), int(r["frame_height"]))


def _frame_rows(rec: Any, rows: Iterable[int] | None, unique_id: int | None) -> np.ndarray:
    f = rec.frames
    if rows is None:
        mask = (f["layer_row"] >= 0) | (f["object_count"] > 0)
        if unique_id is not None:
            mask &= f["unique_id"] == unique_id
        return np.flatnonzero(mask.to_numpy())
    return np.asarray(list(rows), dtype=np.int64)


def detections_frame(rec: Any, per_frame: Mapping[int, Detections], labels: Sequence[str] = ()) -> Any:
    """One DataFrame row per detection with the frame ``row``, ``source_id``, ``frame_num``."""
    import pandas as pd

    parts = []
    f = rec.frames
    for r, d in per_frame.items():
        df = d.to_dataframe(labels or None)
        df.insert(0, "row", r)
        df.insert(1, "source_id", int(f["source_id"].iloc[r]))
        df.insert(2, "frame_num", int(f["frame_num"].iloc[r]))
        parts.append(df)
    if not parts:
        return pd.DataFrame(columns=["row", "source_id", "frame_num", "x1", "y1", "x2", "y2", "width", "height",
                                     "score", "class_id"])
    return pd.concat(parts, ignore_index=True)


def _progress(it: Iterable, enabled: bool, total: int | None = None) -> Iterable:
    if not enabled:
        return it
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return it
    return tqdm(it, total=total, desc="postprocess", unit="batch")


def _check_params(i: int, step: Step, fn: Callable) -> None:
    """Unknown params and params whose type doesn't fit the function's default raise PostprocessError."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    accepts_kwargs = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    kw = {n: p for n, p in sig.parameters.items() if p.kind == p.KEYWORD_ONLY}
    for name, value in step.params.items():
        if name not in kw:
            if accepts_kwargs:
                continue
            raise PostprocessError(f"step {i} ({step.kind} {step.name!r}): unknown param {name!r}; "
                                   f"expected one of {sorted(kw)}")
        default = kw[name].default
        if default is inspect.Parameter.empty or default is None or value is None:
            continue
        if isinstance(default, bool):
            ok = isinstance(value, (bool, np.bool_))
        elif isinstance(default, (int, float)):
            ok = (isinstance(value, (int, float, np.number)) and not isinstance(value, bool)) or (
                isinstance(value, (list, tuple)) and all(isinstance(v, (int, float, np.number)) for v in value))
        elif isinstance(default, str):
            ok = isinstance(value, str)
        elif isinstance(default, (list, tuple)):
            ok = isinstance(value, (list, tuple))
        else:
            ok = True
        if not ok:
            raise PostprocessError(f"step {i} ({step.kind} {step.name!r}): param {name!r} = {value!r} "
                                   f"({type(value).__name__}) does not fit; expected a {type(default).__name__} "
                                   f"like the default {default!r}")
