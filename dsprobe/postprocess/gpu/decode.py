"""GPU decoders: a batch of frames' output layers (CuPy arrays ``(B, *layer dims)``) -> one flat set of
candidates in network pixels, frame by frame in the CPU decoder's order.

Layer lookup, layout detection and every param check are the CPU decoder's own functions, run on
zero-size stand-ins of one frame's layers, so a wrong layer or param raises the same error as on the
CPU. Then one kernel (:mod:`dsprobe.postprocess.gpu.kernels`) scores every slot (anchor, row or grid
cell) of the batch and an order-keeping compaction keeps the candidates.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import numpy as np

from dsprobe.postprocess.decoders.base import (
    check_bool,
    check_choice,
    check_int,
    check_layer_name,
    check_number,
    layer_2d,
    orient,
    per_class_values,
)
from dsprobe.postprocess.decoders.tao import DETECTNET_BBOX_NORM
from dsprobe.postprocess.gpu.kernels import launch
from dsprobe.postprocess.layers import expect, find_layer
from dsprobe.postprocess.registry import StepContext


class Candidates(NamedTuple):
    """Flat detections of a batch on the GPU: ``boxes`` (N, 4) float32 x1y1x2y2, ``scores`` (N,)
    float32, ``class_ids`` (N,) int32, ``frame`` (N,) int32 (index of the frame in the batch);
    ``index``: optional (N,) int64 tag that follows each box through the steps (e.g. its position in
    a cache)."""

    boxes: Any
    scores: Any
    class_ids: Any
    frame: Any
    index: Any = None

    def take(self, idx: Any) -> "Candidates":
        tag = None if self.index is None else self.index[idx]
        return Candidates(
            self.boxes[idx], self.scores[idx], self.class_ids[idx], self.frame[idx], tag
        )

    @property
    def n(self) -> int:
        """Number of candidates (a NamedTuple's ``len`` is its field count)."""
        return int(self.scores.shape[0])


def stand_ins(layers: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Zero-byte float32 arrays shaped like one frame's layers (what the CPU lookups read)."""
    return {n: np.broadcast_to(np.float32(0), tuple(a.shape[1:])) for n, a in layers.items()}


def _input(layers: Mapping[str, Any], name: str, shape: tuple[int, ...]) -> tuple[Any, bool]:
    """The named layer as a C-contiguous ``(B, *shape)`` float32/float16 CuPy array, and if half."""
    import cupy

    a = layers[name]
    if a.dtype not in (np.float32, np.float16):
        a = a.astype(np.float32)
    a = cupy.ascontiguousarray(a).reshape((a.shape[0], *shape))
    return a, a.dtype == np.float16


def _slots(n: int) -> tuple[Any, Any, Any, Any]:
    import cupy

    return (
        cupy.empty((n, 4), np.float32),
        cupy.empty(n, np.float32),
        cupy.empty(n, np.int32),
        cupy.empty(n, np.uint8),
    )


def _compact(out: tuple, per_frame: int) -> Candidates:
    """Keep flagged slots in slot order; a slot's frame is ``slot // per_frame``."""
    import cupy

    boxes, scores, classes, keep = out
    idx = cupy.flatnonzero(keep)
    return Candidates(boxes[idx], scores[idx], classes[idx], (idx // per_frame).astype(np.int32))


def decode_batch(
    name: str, params: Mapping[str, Any], layers: Mapping[str, Any], ctx: StepContext
) -> Candidates:
    """Candidates of every frame of the batch (all frames share ``ctx.network_size``)."""
    fn = {
        "yolov8": _yolov8,
        "yolov5": _yolov5,
        "yolox": _yolov5,
        "xyxy_score_class": _xyxy,
        "detectnet_v2": _detectnet,
    }[name]
    return fn(dict(params), layers, ctx)


def _yolo(layers, step, layer, what, layout, min_channels, native, mode, box_fmt, thr, extra=4):
    name, a = layer_2d(stand_ins(layers), layer, step, "layer", what)
    v = orient(a, layout, step, name, what, min_channels=min_channels, native=native)
    first = v is not a
    x, half = _input(layers, name, a.shape)
    bsz = x.shape[0]
    anchors, channels = v.shape
    fs = anchors * channels
    a_stride, c_stride = (1, anchors) if first else (channels, 1)
    out = _slots(bsz * anchors)
    args = (x, np.int64(bsz * anchors), np.int32(anchors), np.int64(fs), np.int64(a_stride))
    args += (np.int64(c_stride), np.int32(channels - extra), np.int32(mode), np.int32(box_fmt))
    launch("decode_yolo", bsz * anchors, (*args, np.float32(thr), *out), half)
    return _compact(out, anchors)


def _yolov8(p: dict, layers, ctx) -> Candidates:
    step = "decode yolov8"
    thr = check_number(step, "score_threshold", p.get("score_threshold", 0.001))
    check_bool(step, "multi_label", p.get("multi_label", False))
    fmt = check_choice(step, "box_format", p.get("box_format", "cxcywh"), ("cxcywh", "xyxy"))
    what = "(4 + classes, anchors) or its transpose"
    layout = p.get("layout", "auto")
    return _yolo(
        layers, step, p.get("layer"), what, layout, 5, "channels_first", 0, fmt == "xyxy", thr
    )


def _yolov5(p: dict, layers, ctx) -> Candidates:
    step = "decode yolov5"
    thr = check_number(step, "score_threshold", p.get("score_threshold", 0.001))
    check_bool(step, "multi_label", p.get("multi_label", False))
    score = check_choice(
        step, "score", p.get("score", "objectness_x_class"), ("objectness_x_class", "objectness")
    )
    fmt = check_choice(step, "box_format", p.get("box_format", "cxcywh"), ("cxcywh", "xyxy"))
    what = "(anchors, 5 + classes) or its transpose"
    mode = 1 if score == "objectness_x_class" else 2
    layout = p.get("layout", "auto")
    return _yolo(
        layers, step, p.get("layer"), what, layout, 6, "channels_last", mode, fmt == "xyxy", thr, 5
    )


def _xyxy(p: dict, layers, ctx) -> Candidates:
    step = "decode xyxy_score_class"
    thr = check_number(step, "score_threshold", p.get("score_threshold", 0.0))
    parser = check_choice(step, "parser", p.get("parser", "none"), ("none", "deepstream_yolo"))
    name, a = layer_2d(stand_ins(layers), p.get("layer"), step, "layer", "(N, 6) or (6, N)")
    v = orient(a, p.get("layout", "auto"), step, name, "(N, 6) or (6, N)", channels=6)
    first = v is not a
    x, half = _input(layers, name, a.shape)
    bsz, rows = x.shape[0], v.shape[0]
    r_stride, c_stride = (1, rows) if first else (6, 1)
    w, h = (np.float32(s) for s in ctx.network_size)
    out = _slots(bsz * rows)
    args = (x, np.int64(bsz * rows), np.int32(rows), np.int64(6 * rows), np.int64(r_stride))
    args += (np.int64(c_stride), np.float32(thr), np.int32(parser == "deepstream_yolo"), w, h)
    launch("decode_xyxy", bsz * rows, (*args, *out), half)
    return _compact(out, rows)


def _detectnet(p: dict, layers, ctx) -> Candidates:
    import cupy

    step = "decode detectnet_v2"
    parser = check_choice(step, "parser", p.get("parser", "builtin"), ("builtin", "custom_resnet"))
    n_req = check_int(step, "num_classes", p.get("num_classes", 0), low=0)
    norm = np.float32(
        check_number(step, "bbox_norm", p.get("bbox_norm", DETECTNET_BBOX_NORM), low=1e-6)
    )
    cov_layer, bbox_layer = p.get("cov_layer"), p.get("bbox_layer")
    check_layer_name(step, "cov_layer", cov_layer)
    check_layer_name(step, "bbox_layer", bbox_layer)
    stub = stand_ins(layers)
    cov_name, cov = find_layer(stub, cov_layer, contains=None if cov_layer else "cov", step=step)
    bbox_name, bbox = find_layer(
        stub, bbox_layer, contains=None if bbox_layer else "bbox", step=step
    )
    cov = expect(cov, 3, step, cov_name, "(classes, grid_h, grid_w)")
    bbox = expect(bbox, 3, step, bbox_name, "(4 * classes, grid_h, grid_w)")
    c_n, gh, gw = cov.shape
    if bbox.shape != (4 * c_n, gh, gw):
        raise ValueError(
            f"{step}: layer {bbox_name!r} has shape {list(bbox.shape)}, expected "
            f"{[4 * c_n, gh, gw]} (4 planes per class of {cov_name!r} {list(cov.shape)})"
        )
    n_cls = min(c_n, n_req or ctx.num_classes or c_n)
    pre = p.get("pre_cluster_threshold")
    thr = (
        np.full(n_cls, -np.inf, np.float32)
        if pre is None
        else per_class_values(step, "pre_cluster_threshold", pre, n_cls)
    )
    w, h = ctx.network_size
    sx, sy = -(-w // gw), -(-h // gh)
    gx = (np.arange(gw, dtype=np.float64) * sx + 0.5).astype(np.float32) / norm
    gy = (np.arange(gh, dtype=np.float64) * sy + 0.5).astype(np.float32) / norm
    xc, half = _input(layers, cov_name, cov.shape)
    xb, half_b = _input(layers, bbox_name, bbox.shape)
    if half != half_b:  # one kernel reads both: give them one dtype
        xc, xb, half = xc.astype(np.float32), xb.astype(np.float32), False
    n = xc.shape[0] * n_cls * gh * gw
    out = _slots(n)
    dev = [cupy.asarray(a) for a in (thr, gx, gy)]
    args = (xc, xb, np.int64(n), np.int32(n_cls), np.int32(c_n), np.int32(gh), np.int32(gw), *dev)
    args += (norm, np.int32(parser == "custom_resnet"), np.float32(w), np.float32(h))
    launch("decode_detectnet", n, (*args, *out), half)
    return _compact(out, n_cls * gh * gw)
