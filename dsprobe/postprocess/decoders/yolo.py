"""YOLO-family decoders: Ultralytics raw heads (detect / pose / seg), YOLOv5/v7/YOLOX, NMS-free
``(N, 6)`` outputs (DeepStream-Yolo, YOLOv10 / end-to-end exports) and separate boxes + scores
layers (YOLO-NAS, older DeepStream-Yolo). Layouts: ``docs/nvinfer-semantics.md`` §5.

All return candidates in network-input pixels (letterbox included), boxes ``x1, y1, x2, y2``.
``score_threshold`` is a cheap ``score >= threshold`` cut so clustering sees few boxes; keep it at or
below the pre-cluster threshold of the ``filter`` step, which applies nvinfer's rule.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Literal

import numpy as np

from dsprobe.detections import Detections
from dsprobe.postprocess.decoders.base import (
    Layers,
    best_class,
    candidate_channels,
    check_bool,
    check_choice,
    check_int,
    check_layer_name,
    check_number,
    cxcywh_to_xyxy,
    layer_2d,
    orient,
    to_xyxy,
)
from dsprobe.postprocess.layers import expect, find_layer
from dsprobe.postprocess.registry import StepContext, register

Layout = Literal["auto", "channels_first", "channels_last"]
BoxFormat = Literal["cxcywh", "xyxy"]


def warn_class_count(
    step: str, layer: str, channels: int, layout: str, classes: int, configured: int
) -> None:
    """Warn (as nvinfer parsers do, e.g. DeepStream-Yolo's "Num classes mismatch") when a head's
    channels give another class count than the config's ``num-detected-classes`` (0: unknown): the
    usual sign of the wrong decoder for the head (a YOLOv8 head read as YOLOv5 gives no boxes)."""
    if configured > 0 and classes != configured:
        warnings.warn(
            f"{step}: layer {layer!r} has {channels} channels, {layout} = {classes} classes, but the "
            f"config says num-detected-classes={configured}: is this the decoder for this head?",
            stacklevel=4,
        )


def _ultralytics_head(
    layers: Layers,
    step: str,
    layer: str | None,
    extra: int,
    extra_what: str,
    score_threshold: float,
    multi_label: bool,
    layout: str,
    box_format: str,
    num_classes: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Boxes, scores, class ids and the ``extra`` trailing channels (None when ``extra`` is 0) of the
    candidates of an Ultralytics head ``(4 + nc + extra, anchors)`` (or transposed)."""
    check_number(step, "score_threshold", score_threshold)
    check_bool(step, "multi_label", multi_label)
    check_choice(step, "box_format", box_format, ("cxcywh", "xyxy"))
    what = f"(4 + classes{extra_what}, anchors) or its transpose"
    name, a = layer_2d(layers, layer, step, "layer", what)
    v = orient(
        a, layout, step, name, what, min_channels=5 + extra, native="channels_first"
    )  # (anchors, channels)
    nc = v.shape[1] - 4 - extra
    warn_class_count(step, name, v.shape[1], f"4 + classes{extra_what}", nc, num_classes)
    rows, cls, conf = best_class(v[:, 4 : 4 + nc], score_threshold, multi_label)
    raw = candidate_channels(v, rows, 0, 4)
    boxes = cxcywh_to_xyxy(raw) if box_format == "cxcywh" else to_xyxy(raw, box_format, step)
    return boxes, conf, cls, candidate_channels(v, rows, 4 + nc) if extra else None


@register("decode", "yolov8")
def decode_yolov8(
    layers: Layers,
    ctx: StepContext,
    *,
    layer: str | None = None,
    score_threshold: float = 0.001,
    multi_label: bool = False,
    layout: Layout = "auto",
    box_format: BoxFormat = "cxcywh",
) -> Detections:
    """Ultralytics YOLOv8 / v5u / v9 / YOLO11 raw detect head: ``(4 + nc, anchors)`` channels-first
    (``(1, 84, 8400)`` at 640), or ``(anchors, 4 + nc)`` when the export transposed it.

    Channels 0-3: cx, cy, w, h in network pixels (``box_format="xyxy"`` for exports patched to corners);
    then nc class scores, sigmoid already applied, no objectness. Score = the best class score,
    class = its index (``multi_label``: one candidate per class above the threshold).
    ``layer``: output layer name (default: the only 2-D layer). ``layout``: "auto" takes the shorter
    axis as the channels."""
    step = "decode yolov8"
    boxes, conf, cls, _ = _ultralytics_head(
        layers,
        step,
        layer,
        0,
        "",
        score_threshold,
        multi_label,
        layout,
        box_format,
        ctx.num_classes,
    )
    return Detections(boxes, conf, cls, "network")


@register("decode", "yolov8_pose")
def decode_yolov8_pose(
    layers: Layers,
    ctx: StepContext,
    *,
    layer: str | None = None,
    num_keypoints: int = 17,
    keypoint_dims: int = 3,
    score_threshold: float = 0.001,
    layout: Layout = "auto",
    box_format: BoxFormat = "cxcywh",
) -> Detections:
    """YOLOv8 / YOLO11 pose head ``(4 + nc + K * keypoint_dims, anchors)`` (``(1, 56, 8400)`` for 17
    COCO keypoints): boxes and class scores as :func:`decode_yolov8`, then per keypoint x, y (network
    pixels) and, with ``keypoint_dims=3``, the visibility (sigmoid applied in the export).

    ``Detections.keypoints`` is ``(N, K, 3)`` x, y, confidence in network pixels (confidence 1 when the
    head has no visibility channel). Scaling steps map keypoints to the frame with the boxes."""
    step = "decode yolov8_pose"
    k = check_int(step, "num_keypoints", num_keypoints, low=1)
    dims = check_choice(step, "keypoint_dims", keypoint_dims, (2, 3))
    boxes, conf, cls, kp = _ultralytics_head(
        layers,
        step,
        layer,
        k * dims,
        f" + {k}*{dims} keypoint values",
        score_threshold,
        False,
        layout,
        box_format,
        ctx.num_classes,
    )
    kp = kp.reshape(-1, k, dims)
    if dims == 2:
        kp = np.concatenate([kp, np.ones((len(kp), k, 1), np.float32)], axis=2)
    return Detections(boxes, conf, cls, "network", keypoints=kp)


@register("decode", "yolov8_seg")
def decode_yolov8_seg(
    layers: Layers,
    ctx: StepContext,
    *,
    layer: str | None = None,
    protos_layer: str | None = None,
    num_masks: int = 0,
    score_threshold: float = 0.001,
    multi_label: bool = False,
    layout: Layout = "auto",
    box_format: BoxFormat = "cxcywh",
) -> Detections:
    """YOLOv8 / YOLO11 segmentation: ``output0`` ``(4 + nc + M, anchors)`` plus prototypes ``(M, mh, mw)``
    (``(1, 116, 8400)`` and ``(1, 32, 160, 160)`` at 640). Boxes and scores as :func:`decode_yolov8`;
    the M raw mask coefficients of each candidate go to ``Detections.vectors`` ``(N, M)``.

    ``num_masks``: M (0 = the first dim of the prototypes layer, ``protos_layer`` or the only 3-D layer).
    Masks are not computed here: cluster first, then call :func:`seg_masks` (full-image masks) or
    :func:`attach_masks` (box-relative ``Detections.masks``) with the prototypes, for the kept boxes only."""
    step = "decode yolov8_seg"
    m = check_int(step, "num_masks", num_masks, low=0)
    check_layer_name(step, "protos_layer", protos_layer)
    if m == 0:
        pname, protos = find_layer(
            layers, protos_layer, ndim=None if protos_layer else 3, step=step
        )
        m = expect(protos, 3, step, pname, "(masks, mask_h, mask_w)").shape[0]
    boxes, conf, cls, coef = _ultralytics_head(
        layers,
        step,
        layer,
        m,
        f" + {m} mask coefficients",
        score_threshold,
        multi_label,
        layout,
        box_format,
        ctx.num_classes,
    )
    return Detections(boxes, conf, cls, "network", vectors=coef)


@register("decode", "yolov5")
def decode_yolov5(
    layers: Layers,
    ctx: StepContext,
    *,
    layer: str | None = None,
    score_threshold: float = 0.001,
    multi_label: bool = False,
    score: Literal["objectness_x_class", "objectness"] = "objectness_x_class",
    layout: Layout = "auto",
    box_format: BoxFormat = "cxcywh",
) -> Detections:
    """YOLOv5 / YOLOv7 / YOLOX raw output ``(anchors, 5 + nc)`` (``(1, 25200, 85)`` at 640; the transpose
    is accepted): cx, cy, w, h in network pixels, objectness, nc class scores (all sigmoid applied).

    ``score="objectness_x_class"``: score = objectness x class score (Ultralytics' YOLOv5 NMS,
    DeepStream-Yolo, the CUDA parser of NVIDIA's yolo_deepstream); ``"objectness"``: score =
    objectness alone with the best class (yolo_deepstream's CPU parser). Anchors with objectness
    below ``score_threshold`` are dropped first (the product can only be lower)."""
    step = "decode yolov5"
    check_number(step, "score_threshold", score_threshold)
    check_bool(step, "multi_label", multi_label)
    check_choice(step, "score", score, ("objectness_x_class", "objectness"))
    what = "(anchors, 5 + classes) or its transpose"
    name, a = layer_2d(layers, layer, step, "layer", what)
    v = orient(a, layout, step, name, what, min_channels=6)
    warn_class_count(step, name, v.shape[1], "5 + classes", v.shape[1] - 5, ctx.num_classes)
    keep = np.flatnonzero(v[:, 4] >= np.float32(score_threshold))
    c = v[keep]
    if score == "objectness":
        cls = c[:, 5:].argmax(axis=1).astype(np.int32)
        rows, conf = np.arange(len(c)), c[:, 4]
    else:
        rows, cls, conf = best_class(c[:, 5:] * c[:, 4:5], score_threshold, multi_label)
    return Detections(to_xyxy(c[rows, :4], box_format, step), conf, cls, "network")


@register("decode", "yolox")
def decode_yolox(
    layers: Layers,
    ctx: StepContext,
    *,
    layer: str | None = None,
    score_threshold: float = 0.001,
    multi_label: bool = False,
    layout: Layout = "auto",
) -> Detections:
    """YOLOX with ``decode_in_inference=True``: ``(anchors, 5 + nc)`` like YOLOv5 (objectness x class).
    Mind YOLOX's top-left letterbox and BGR 0-255 input (``docs/nvinfer-semantics.md`` §5)."""
    return decode_yolov5(
        layers,
        ctx,
        layer=layer,
        score_threshold=score_threshold,
        multi_label=multi_label,
        layout=layout,
    )


@register("decode", "xyxy_score_class")
def decode_xyxy_score_class(
    layers: Layers,
    ctx: StepContext,
    *,
    layer: str | None = None,
    score_threshold: float = 0.0,
    parser: Literal["none", "deepstream_yolo"] = "none",
    layout: Layout = "auto",
) -> Detections:
    """One ``(N, 6)`` layer of x1, y1, x2, y2 (network pixels), score, class id (a float): the
    DeepStream-Yolo export (since 2024-11) and NMS-free heads (YOLOv10, YOLO26 / end-to-end exports,
    Ultralytics RT-DETR via DeepStream-Yolo; ``(1, 300, 6)``). ``(6, N)`` is accepted.

    The class id is truncated to an integer as C does. ``parser="deepstream_yolo"`` reproduces
    ``nvdsparsebbox_Yolo.cpp``: corners clamped to ``[0, W] x [0, H]``, width/height ``x2 - x1`` clamped
    to ``[0, W]`` / ``[0, H]``, boxes narrower or shorter than 1 pixel dropped."""
    step = "decode xyxy_score_class"
    check_number(step, "score_threshold", score_threshold)
    check_choice(step, "parser", parser, ("none", "deepstream_yolo"))
    name, a = layer_2d(layers, layer, step, "layer", "(N, 6) or (6, N)")
    v = orient(a, layout, step, name, "(N, 6) or (6, N)", channels=6)
    v = v[v[:, 4] >= np.float32(score_threshold)]
    boxes = np.ascontiguousarray(v[:, :4])
    if parser == "deepstream_yolo":
        # corners clamped; width = x2 - x1 clamped to [0, W] only matters below 0, where the box is dropped
        w, h = (np.float32(s) for s in ctx.network_size)
        boxes = np.clip(boxes, np.float32(0), np.array([w, h, w, h], np.float32))
        keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        boxes, v = boxes[keep], v[keep]
    return Detections(boxes, v[:, 4], v[:, 5].astype(np.int32), "network")


@register("decode", "boxes_scores")
def decode_boxes_scores(
    layers: Layers,
    ctx: StepContext,
    *,
    boxes_layer: str | None = None,
    scores_layer: str | None = None,
    classes_layer: str | None = None,
    box_format: Literal["xyxy", "cxcywh"] = "xyxy",
    score_threshold: float = 0.001,
    multi_label: bool = False,
) -> Detections:
    """Separate layers: boxes ``(N, 4)`` in network pixels and scores ``(N, nc)`` (YOLO-NAS export, the
    2023 DeepStream-Yolo export ``boxes``/``scores``/``classes``, many ONNX exports).

    With ``classes_layer`` the scores layer holds one score per box (``(N,)`` or ``(N, 1)``) and the
    class ids come from that layer (floats truncated); otherwise score = best class score.
    Default layers: the only ``(N, 4)`` layer for boxes and the only other 2-D or 1-D layer for scores."""
    step = "decode boxes_scores"
    check_number(step, "score_threshold", score_threshold)
    check_bool(step, "multi_label", multi_label)
    for p, v in (
        ("boxes_layer", boxes_layer),
        ("scores_layer", scores_layer),
        ("classes_layer", classes_layer),
    ):
        check_layer_name(step, p, v)
    bname, braw = find_layer(
        layers, boxes_layer, shape=None if boxes_layer else (None, 4), step=step
    )
    boxes = np.asarray(expect(braw, (None, 4), step, bname, "(N, 4)"), np.float32)
    n = boxes.shape[0]
    used = [bname]
    if classes_layer is not None:
        cname, craw = find_layer(layers, classes_layer, step=step)
        used.append(cname)
        classes = np.asarray(craw).reshape(-1)
        if classes.shape[0] != n:
            raise ValueError(
                f"{step}: layer {cname!r} has shape {list(np.shape(craw))}, expected {n} class ids"
            )
    sname, sraw = find_layer(layers, scores_layer, exclude=used, step=step)
    scores = np.asarray(sraw, np.float32)
    scores = scores.reshape(n, -1) if scores.size and scores.size % max(n, 1) == 0 else scores
    if scores.ndim != 2 or scores.shape[0] != n:
        raise ValueError(
            f"{step}: layer {sname!r} has shape {list(np.shape(sraw))}, expected ({n}, classes) "
            f"to go with {n} boxes in {bname!r}"
        )
    if classes_layer is not None:
        if scores.shape[1] != 1:
            raise ValueError(
                f"{step}: with classes_layer, layer {sname!r} must hold one score per box, "
                f"got shape {list(np.shape(sraw))}"
            )
        rows = np.flatnonzero(scores[:, 0] >= np.float32(score_threshold))
        cls, conf = classes[rows].astype(np.int32), scores[rows, 0]
    else:
        rows, cls, conf = best_class(scores, score_threshold, multi_label)
    return Detections(to_xyxy(boxes[rows], box_format, step), conf, cls, "network")


# ---------------------------------------------------------------------------------------------- masks
def _mask_logits(dets: Detections, protos: np.ndarray, step: str) -> np.ndarray:
    """``(N, mh, mw)`` = coefficients (``dets.vectors``) @ prototypes ``(M, mh, mw)``."""
    p = np.asarray(expect(protos, 3, step, "protos", "(masks, mask_h, mask_w)"), np.float32)
    m, mh, mw = p.shape
    if dets.space != "network":
        raise ValueError(
            f"{step}: detections must be in network pixels (before the scale step), got "
            f"space={dets.space!r}"
        )
    if dets.vectors is None or dets.vectors.shape[1] != m:
        got = None if dets.vectors is None else dets.vectors.shape[1]
        raise ValueError(
            f"{step}: detections need {m} mask coefficients in .vectors (decode yolov8_seg), got {got}"
        )
    return (dets.vectors @ p.reshape(m, -1)).reshape(-1, mh, mw)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def _bilinear_weights(src: np.ndarray, size: int) -> np.ndarray:
    """``(len(src), size)`` linear-interpolation weights of sample positions ``src`` (grid-cell
    coordinates, cell centres at integers), clamped to the grid."""
    s = np.clip(src, 0, size - 1)
    i0 = np.floor(s)
    frac = (s - i0)[..., None]
    grid = np.arange(size)
    lo, hi = grid == i0[..., None], grid == np.minimum(i0 + 1, size - 1)[..., None]
    return (lo * (1 - frac) + hi * frac).astype(np.float32)


def seg_masks(
    dets: Detections,
    protos: np.ndarray,
    network_size: tuple[int, int],
    *,
    threshold: float | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Full-image instance masks ``(N, h, w)`` float32 for YOLOv8-seg detections in network pixels.

    ``logits = coefficients @ prototypes`` on the prototype grid ``(mh, mw)``; with ``size=(w, h)``
    resized bilinearly (half-pixel centres, torch's ``interpolate(..., align_corners=False)``); then
    ``sigmoid``, zero outside each box scaled to the mask grid (cell ``(i, j)`` is inside when
    ``x1' <= i < x2'`` and ``y1' <= j < y2'``: Ultralytics' ``crop_mask``), and with ``threshold``
    binarised (``mask > threshold`` as 0/1). Ultralytics' predicted masks (``process_mask(...,
    upsample=True)``) are ``seg_masks(dets, protos, net, size=net, threshold=0.5)``.

    Run it after clustering on the kept boxes only (cost is N x M x mh x mw): e.g.
    ``dets = pp.with_step("scale", "none").run(layers, ctx)`` then
    ``seg_masks(dets, layers["output1"], ctx.network_size)``."""
    step = "seg_masks"
    logits = _mask_logits(dets, protos, step)
    n, mh, mw = logits.shape
    oh, ow = (mh, mw) if size is None else (size[1], size[0])
    if size is not None:
        ry = _bilinear_weights((np.arange(oh) + 0.5) * (mh / oh) - 0.5, mh)
        rx = _bilinear_weights((np.arange(ow) + 0.5) * (mw / ow) - 0.5, mw)
        logits = ry @ logits @ rx.T
    masks = _sigmoid(logits)
    w, h = network_size
    b = dets.boxes * np.array([ow / w, oh / h, ow / w, oh / h], np.float32)
    cols, rows = np.arange(ow, dtype=np.float32), np.arange(oh, dtype=np.float32)
    inside_x = (cols[None] >= b[:, 0:1]) & (cols[None] < b[:, 2:3])
    inside_y = (rows[None] >= b[:, 1:2]) & (rows[None] < b[:, 3:4])
    masks *= inside_y[:, :, None] & inside_x[:, None, :]
    return masks if threshold is None else (masks > np.float32(threshold)).astype(np.float32)


def attach_masks(
    dets: Detections,
    protos: np.ndarray,
    network_size: tuple[int, int],
    *,
    mask_size: tuple[int, int] | None = None,
    threshold: float | None = None,
) -> Detections:
    """``dets`` with ``masks`` set: box-relative masks ``(N, mask_h, mask_w)``, DeepStream's
    ``NvOSD_MaskParams`` convention (what DeepStream-Yolo-Seg attaches): each box resampled to
    ``mask_size=(w, h)`` (default: the prototype grid size) by bilinear sampling of
    ``coefficients @ prototypes`` at the cell centres of the box (RoIAlign with one sample per cell,
    edges clamped), then ``sigmoid`` (and ``> threshold`` when given).

    Box-relative masks do not change when boxes are scaled to the frame, so the result can go through
    the ``scale`` step. Call it on the kept boxes, in network pixels, after clustering."""
    step = "attach_masks"
    logits = _mask_logits(dets, protos, step)
    n, mh, mw = logits.shape
    ow, oh = mask_size if mask_size is not None else (mw, mh)
    w, h = network_size
    u, v = (np.arange(ow) + 0.5) / ow, (np.arange(oh) + 0.5) / oh
    b = dets.boxes.astype(np.float64)
    xs = (b[:, 0:1] + u[None] * (b[:, 2:3] - b[:, 0:1])) * (
        mw / w
    ) - 0.5  # (N, ow) grid-cell coords
    ys = (b[:, 1:2] + v[None] * (b[:, 3:4] - b[:, 1:2])) * (mh / h) - 0.5
    wy, wx = _bilinear_weights(ys, mh), _bilinear_weights(xs, mw)  # (N, oh, mh), (N, ow, mw)
    masks = _sigmoid(wy @ logits @ wx.transpose(0, 2, 1))
    if threshold is not None:
        masks = (masks > np.float32(threshold)).astype(np.float32)
    return replace(dets, masks=masks)
