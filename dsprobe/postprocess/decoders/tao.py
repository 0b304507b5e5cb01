"""Decoders for NVIDIA / TensorFlow / TAO layouts: NMS-in-graph outputs (EfficientNMS, BatchedNMS,
TF-OD API), the TensorRT NMS plugin records (Caffe/UFF SSD, TAO SSD/DSSD/RetinaNet/FasterRCNN),
nvinfer's built-in DetectNet_v2 grid parser, and DETR-style query heads (``docs/nvinfer-semantics.md``
§2 and §5).

All return candidates in network-input pixels, boxes ``x1, y1, x2, y2``. Where an nvinfer sample or
TAO parser has quirks (clipping to ``W - 1``, ``+ 1`` widths, truncation, caps), a ``parser`` param
reproduces them; ``parser="none"`` decodes the plain layout. A C++ parser emits ``left, top, width,
height``; a box here stands for ``left = x1, width = x2 - x1`` (float32), so quirks that compute the
width separately (``+ 1``, clipped widths) are reproduced to within float32 rounding of ``x2``.

nvinfer's pre-cluster threshold (``conf >= pre-cluster-threshold[class]``, classes >= num-detected-classes
dropped) is applied by the ``filter:threshold`` step, except in :func:`decode_detectnet_v2`, whose
nvinfer parser thresholds inside. TAO parsers that threshold every class at
``pre-cluster-threshold[0]`` are reproduced by passing that value as ``score_threshold``.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

from dsprobe.detections import Detections
from dsprobe.postprocess.decoders.base import (
    Layers,
    PerClassParam,
    check_bool,
    check_choice,
    check_int,
    check_layer_name,
    check_number,
    cxcywh_to_xyxy,
    layer_2d,
    per_class_values,
    to_xyxy,
)
from dsprobe.postprocess.layers import LayerNotFoundError, describe, expect, find_layer
from dsprobe.postprocess.registry import StepContext, register

#: most boxes NvDsInferParseCustomBatchedNMSTLT emits: its loop runs while ``objectList.size() <= 200``
TAO_BATCHED_NMS_MAX = 201
#: queries NvDsInferParseCustomDDETRTAO keeps (``keep_top_k``)
TAO_DDETR_TOP_K = 200
#: nvinfer's DetectNet_v2 box normalisation (hard-coded in parseBoundingBox)
DETECTNET_BBOX_NORM = 35.0


def _net(ctx: StepContext) -> tuple[np.float32, np.float32]:
    w, h = ctx.network_size
    return np.float32(w), np.float32(h)


def _clip_net(v: np.ndarray, ctx: StepContext, axis: str) -> np.ndarray:
    """``CLIP(v, 0, W - 1)`` (``H - 1`` for ``axis="y"``) in float32, as the C++ parsers do."""
    w, h = _net(ctx)
    return np.clip(v, np.float32(0), (w if axis == "x" else h) - np.float32(1))


# ---------------------------------------------------------------------------------------------- NMS in graph
_NMS_ROLES = (
    ("num_layer", "num_detections", "num"),
    ("boxes_layer", "detection_boxes", "box"),
    ("scores_layer", "detection_scores", "score"),
    ("classes_layer", "detection_classes", "class"),
)
#: per parser: (box order, normalised) it reads
_NMS_PARSERS = {
    "none": ("xyxy", False),
    "tf_ssd": ("yxyx", True),
    "tao_batched_nms": ("xyxy", True),
    "tao_efficientdet": ("yxyx", False),
}


def _nms_layers(
    layers: Layers, given: Sequence[str | None], step: str
) -> list[tuple[str, np.ndarray]]:
    """Count, boxes, scores and classes layers: the names given; else the TF-OD / EfficientNMS names
    (``num_detections``, ``detection_boxes``, ...; ``:0`` suffixes allowed); else the only layer whose
    name contains num / box / score / class; else, with exactly four layers, their order (count,
    boxes, scores, classes: how the TAO BatchedNMS / EfficientDet parsers take them)."""
    out: list[tuple[str, np.ndarray] | None] = []
    for (param, standard, key), name in zip(_NMS_ROLES, given):
        check_layer_name(step, param, name)
        if name is not None:
            out.append(find_layer(layers, name, step=step))
            continue
        found = None
        for kw in ({"name": standard}, {"contains": key}):
            try:
                found = find_layer(layers, step=step, **kw)  # type: ignore[arg-type]
                break
            except LayerNotFoundError:
                pass
        out.append(found)
    if any(o is None for o in out):
        if len(layers) != 4:
            missing = [r[0] for r, o in zip(_NMS_ROLES, out) if o is None]
            raise LayerNotFoundError(
                f"{step}: could not tell which layer is which ({', '.join(missing)} not "
                f"found by name, and there are not exactly 4 layers to take in order); "
                f"the recorded layers are {describe(layers)}"
            )
        out = [o if o is not None else (k, layers[k]) for o, k in zip(out, layers)]
    return out  # type: ignore[return-value]


@register("decode", "nms_outputs")
def decode_nms_outputs(
    layers: Layers,
    ctx: StepContext,
    *,
    num_layer: str | None = None,
    boxes_layer: str | None = None,
    scores_layer: str | None = None,
    classes_layer: str | None = None,
    normalized: bool | None = None,
    box_order: Literal["xyxy", "yxyx"] | None = None,
    score_threshold: float = 0.0,
    parser: Literal["none", "tf_ssd", "tao_batched_nms", "tao_efficientdet"] = "none",
) -> Detections:
    """NMS in the graph (TensorRT EfficientNMS / BatchedNMS, TF-OD API, TAO): a detection count, boxes
    ``(K, 4)``, scores ``(K,)`` and classes ``(K,)`` (float or int; truncated). The first ``count``
    records are read (count capped to ``[0, K]``).

    * ``box_order``: "xyxy" or "yxyx" (TF, EfficientDet); ``normalized``: coordinates in [0, 1],
      multiplied by the network size. ``None`` = the parser's layout (plain: xyxy pixels).
    * ``parser``: "none" (no clipping); "tf_ssd" = ``NvDsInferParseCustomTfSSD`` (normalised yxyx,
      corners clipped to ``[0, W-1]``, boxes with ``x2 <= x1`` or ``y2 <= y1`` dropped);
      "tao_batched_nms" = TAO ``NvDsInferParseCustomBatchedNMSTLT`` (normalised xyxy; boxes with raw
      ``x2 < x1`` / ``y2 < y1`` and classes >= num-detected-classes dropped; corners clipped to
      ``[0, W-1]``; at most 201 boxes); "tao_efficientdet" = ``NvDsInferParseCustomEfficientDetTAO``
      (yxyx pixels; inverted boxes dropped; left, top, width and height each clipped to
      ``[0, W-1]`` / ``[0, H-1]``).
    * ``score_threshold``: ``score >= threshold`` cut (TAO parsers: their ``pre-cluster-threshold[0]``).
    * Layers: see :func:`_nms_layers` (names, then substrings, then order)."""
    step = "decode nms_outputs"
    check_choice(step, "parser", parser, tuple(_NMS_PARSERS))
    check_number(step, "score_threshold", score_threshold)
    order, norm = _NMS_PARSERS[parser]
    if box_order is not None:
        check_choice(step, "box_order", box_order, ("xyxy", "yxyx"))
        if parser != "none" and box_order != order:
            raise ValueError(
                f"{step}: parser {parser!r} reads {order} boxes; param 'box_order' = {box_order!r} "
                "contradicts it (leave it out)"
            )
        order = box_order
    if normalized is not None:
        check_bool(step, "normalized", normalized)
        if parser != "none" and normalized != norm:
            raise ValueError(
                f"{step}: parser {parser!r} reads {'normalised' if norm else 'pixel'} boxes; param "
                f"'normalized' = {normalized!r} contradicts it (leave it out)"
            )
        norm = normalized
    (nn, num), (bn, braw), (sn, sraw), (cn, craw) = _nms_layers(
        layers, (num_layer, boxes_layer, scores_layer, classes_layer), step
    )
    b = np.asarray(expect(braw, (None, 4), step, bn, "(K, 4) boxes"), np.float32)
    k_max = b.shape[0]
    num_flat = np.asarray(num).reshape(-1)
    if num_flat.size < 1:
        raise ValueError(f"{step}: count layer {nn!r} is empty")
    k = int(min(max(float(num_flat[0]), 0), k_max))
    s = np.asarray(sraw, np.float32).reshape(-1)
    c = np.asarray(craw).reshape(-1)
    for lname, arr in ((sn, s), (cn, c)):
        if arr.shape[0] != k_max:
            raise ValueError(
                f"{step}: layer {lname!r} has {arr.shape[0]} values, expected {k_max} (one per box "
                f"of {bn!r})"
            )
    b, s, c = b[:k], s[:k], c[:k].astype(np.int32)
    keep = s >= np.float32(score_threshold)
    raw, s, c = b[keep], s[keep], c[keep]
    boxes = to_xyxy(raw, order, step)
    if norm:
        w, h = _net(ctx)
        boxes = boxes * np.array([w, h, w, h], np.float32)
    if parser == "tf_ssd":
        boxes = np.stack(
            [
                _clip_net(boxes[:, 0], ctx, "x"),
                _clip_net(boxes[:, 1], ctx, "y"),
                _clip_net(boxes[:, 2], ctx, "x"),
                _clip_net(boxes[:, 3], ctx, "y"),
            ],
            axis=1,
        )
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    elif parser == "tao_batched_nms":
        r = to_xyxy(raw, order, step)
        keep = (r[:, 2] >= r[:, 0]) & (r[:, 3] >= r[:, 1]) & (c >= 0)
        if ctx.num_classes:
            keep &= c < ctx.num_classes
        boxes = np.stack(
            [
                _clip_net(boxes[:, 0], ctx, "x"),
                _clip_net(boxes[:, 1], ctx, "y"),
                _clip_net(boxes[:, 2], ctx, "x"),
                _clip_net(boxes[:, 3], ctx, "y"),
            ],
            axis=1,
        )
        keep &= (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])
        keep[np.flatnonzero(keep)[TAO_BATCHED_NMS_MAX:]] = False
    elif parser == "tao_efficientdet":
        keep = (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])
        left, top = _clip_net(boxes[:, 0], ctx, "x"), _clip_net(boxes[:, 1], ctx, "y")
        bw = _clip_net(boxes[:, 2] - boxes[:, 0], ctx, "x")
        bh = _clip_net(boxes[:, 3] - boxes[:, 1], ctx, "y")
        boxes = np.stack([left, top, left + bw, top + bh], axis=1)
    else:
        keep = np.ones(len(boxes), bool)
    return Detections(boxes[keep], s[keep], c[keep], "network")


@register("decode", "ssd")
def decode_ssd(
    layers: Layers,
    ctx: StepContext,
    *,
    num_layer: str | None = None,
    boxes_layer: str | None = None,
    scores_layer: str | None = None,
    classes_layer: str | None = None,
    score_threshold: float = 0.0,
) -> Detections:
    """TensorFlow Object Detection API SSD (NMS in the graph) as DeepStream's
    ``NvDsInferParseCustomTfSSD`` reads it: ``num_detections``, ``detection_boxes`` (normalised
    ymin, xmin, ymax, xmax), ``detection_scores``, ``detection_classes``. Same as
    ``nms_outputs(parser="tf_ssd")``."""
    return decode_nms_outputs(
        layers,
        ctx,
        num_layer=num_layer,
        boxes_layer=boxes_layer,
        scores_layer=scores_layer,
        classes_layer=classes_layer,
        score_threshold=score_threshold,
        parser="tf_ssd",
    )


# ---------------------------------------------------------------------------------------------- NMS plugin
@register("decode", "nms_plugin")
def decode_nms_plugin(
    layers: Layers,
    ctx: StepContext,
    *,
    layer: str | None = None,
    count_layer: str | None = None,
    score_threshold: float = 0.0,
    parser: Literal["none", "tao", "ssd_sample"] = "none",
) -> Detections:
    """TensorRT NMS plugin output (Caffe/UFF SSD, TAO SSD / DSSD / RetinaNet / FasterRCNN / YOLOv3):
    records of 7 floats ``[image_id, label, confidence, xmin, ymin, xmax, ymax]`` (normalised), plus a
    keep count (``NMS_1``). Without a count layer, records with ``image_id = -1`` (padding) are skipped.

    * ``layer``: default ``NMS``, else the only ``(K, 7)`` layer; ``count_layer``: default ``NMS_1``,
      else the only other one-element layer (none: all records).
    * ``parser``: "none" (``x * W``, no clipping); "tao" = TAO ``NvDsInferParseCustomNMSTLT``:
      ``left = clip(xmin * W, 0, W-1)``, ``width = clip((xmax - xmin) * W, 0, W-1)`` (likewise top,
      height); "ssd_sample" = DeepStream's ``objectDetector_SSD`` parser: ``x * W`` truncated to an
      unsigned int (negative -> 0, as on Jetson; x86 wraps, which is undefined behaviour), clipped to
      ``[0, W-1]``, then ``width = x2 - x1 + 1``.
    * ``score_threshold``: ``confidence >= threshold`` (TAO: its ``pre-cluster-threshold[0]``)."""
    step = "decode nms_plugin"
    check_choice(step, "parser", parser, ("none", "tao", "ssd_sample"))
    check_number(step, "score_threshold", score_threshold)
    check_layer_name(step, "layer", layer)
    check_layer_name(step, "count_layer", count_layer)
    if layer is None and "NMS" in layers:
        layer = "NMS"
    name, raw = find_layer(layers, layer, shape=None if layer else (None, 7), step=step)
    rec = np.asarray(raw, np.float32)
    if rec.size % 7:
        raise ValueError(
            f"{step}: layer {name!r} has shape {list(rec.shape)}, expected records of 7 values "
            "(K, 7)"
        )
    rec = rec.reshape(-1, 7)
    count = None
    if count_layer is not None:
        count = find_layer(layers, count_layer, step=step)[1]
    elif "NMS_1" in layers:
        count = layers["NMS_1"]
    else:
        ones = [k for k, v in layers.items() if k != name and np.size(v) == 1]
        count = layers[ones[0]] if len(ones) == 1 else None
    if count is not None:
        rec = rec[: int(min(max(float(np.asarray(count).reshape(-1)[0]), 0), len(rec)))]
    else:
        rec = rec[rec[:, 0] != -1]
    rec = rec[rec[:, 2] >= np.float32(score_threshold)]
    w, h = _net(ctx)
    if parser == "tao":
        left, top = _clip_net(rec[:, 3] * w, ctx, "x"), _clip_net(rec[:, 4] * h, ctx, "y")
        bw = _clip_net((rec[:, 5] - rec[:, 3]) * w, ctx, "x")
        bh = _clip_net((rec[:, 6] - rec[:, 4]) * h, ctx, "y")
        boxes = np.stack([left, top, left + bw, top + bh], axis=1)
    elif parser == "ssd_sample":
        px = np.trunc(np.maximum(rec[:, 3:7] * np.array([w, h, w, h], np.float32), 0))
        c = np.stack(
            [
                _clip_net(px[:, 0], ctx, "x"),
                _clip_net(px[:, 1], ctx, "y"),
                _clip_net(px[:, 2], ctx, "x"),
                _clip_net(px[:, 3], ctx, "y"),
            ],
            axis=1,
        )
        boxes = c + np.array([0, 0, 1, 1], np.float32)
    else:
        boxes = rec[:, 3:7] * np.array([w, h, w, h], np.float32)
    return Detections(boxes, rec[:, 2], rec[:, 1].astype(np.int32), "network")


# ---------------------------------------------------------------------------------------------- DetectNet_v2
@register("decode", "detectnet_v2")
def decode_detectnet_v2(
    layers: Layers,
    ctx: StepContext,
    *,
    cov_layer: str | None = None,
    bbox_layer: str | None = None,
    pre_cluster_threshold: PerClassParam | None = None,
    num_classes: int = 0,
    parser: Literal["builtin", "custom_resnet"] = "builtin",
    bbox_norm: float = DETECTNET_BBOX_NORM,
) -> Detections:
    """nvinfer's built-in DetectNet_v2 / resnet10 parser (network-type=0 with no parse-bbox-func-name;
    TAO PeopleNet, TrafficCamNet, DashCamNet...), ``docs/nvinfer-semantics.md`` §2.

    * Layers: coverage ``(C, gh, gw)`` (sigmoid applied) = the layer whose name contains ``"cov"``,
      boxes ``(4C, gh, gw)`` = the one containing ``"bbox"`` (or ``cov_layer`` / ``bbox_layer``).
      nvinfer's "Could not find output coverage layer" becomes an error listing the recorded layers.
    * Classes parsed: ``min(C, num_classes)`` (``num_classes`` 0 = the context's
      num-detected-classes, else C). For each class, cell (j, i) with ``cov >= pre_cluster_threshold[c]``
      (a scalar, a per-class list or ``{class: thr, "default": thr}``; ``None`` = every cell, leaving
      the thresholds to the ``filter:threshold`` step, which gives the same boxes in the same order)
      gives, with
      ``stride = ceil(W / gw)`` and ``norm = 35``: ``x1 = i*stride + 0.5 - norm*o_x1``,
      ``x2 = i*stride + 0.5 + norm*o_x2`` (float32, as nvinfer), y likewise.
    * ``parser="builtin"``: each corner set to ``W-1`` when ``>= W`` and to 0 when negative; boxes with
      ``x2 < x1`` or ``y2 < y1`` dropped, zero-size boxes kept. ``"custom_resnet"`` = the sample
      ``NvDsInferParseCustomResnet``: corners clipped to ``[0, W-1]``, ``width = x2 - x1 + 1``, nothing
      dropped.

    Order: class, then row, then column (nvinfer's loops), which ties in NMS depend on."""
    step = "decode detectnet_v2"
    check_choice(step, "parser", parser, ("builtin", "custom_resnet"))
    n_req = check_int(step, "num_classes", num_classes, low=0)
    norm = np.float32(check_number(step, "bbox_norm", bbox_norm, low=1e-6))
    check_layer_name(step, "cov_layer", cov_layer)
    check_layer_name(step, "bbox_layer", bbox_layer)
    cov_name, cov = find_layer(layers, cov_layer, contains=None if cov_layer else "cov", step=step)
    bbox_name, bbox = find_layer(
        layers, bbox_layer, contains=None if bbox_layer else "bbox", step=step
    )
    cov = np.asarray(expect(cov, 3, step, cov_name, "(classes, grid_h, grid_w)"), np.float32)
    bbox = np.asarray(expect(bbox, 3, step, bbox_name, "(4 * classes, grid_h, grid_w)"), np.float32)
    c_n, gh, gw = cov.shape
    if bbox.shape != (4 * c_n, gh, gw):
        raise ValueError(
            f"{step}: layer {bbox_name!r} has shape {list(bbox.shape)}, expected "
            f"{[4 * c_n, gh, gw]} (4 planes per class of {cov_name!r} {list(cov.shape)})"
        )
    n_cls = min(c_n, n_req or ctx.num_classes or c_n)
    thr = (
        np.full(n_cls, -np.inf, np.float32)
        if pre_cluster_threshold is None
        else per_class_values(step, "pre_cluster_threshold", pre_cluster_threshold, n_cls)
    )
    w, h = ctx.network_size
    sx, sy = -(-w // gw), -(-h // gh)
    # grid centres as nvinfer: float(i * stride + 0.5) / norm, in float32
    gx = (np.arange(gw, dtype=np.float64) * sx + 0.5).astype(np.float32) / norm
    gy = (np.arange(gh, dtype=np.float64) * sy + 0.5).astype(np.float32) / norm
    c, j, i = np.nonzero(cov[:n_cls] >= thr[:, None, None])  # class-major, then row, then column
    o = bbox.reshape(c_n, 4, gh, gw)[c, :, j, i]  # (n, 4): x1, y1, x2, y2 offsets
    x1 = (o[:, 0] - gx[i]) * -norm
    y1 = (o[:, 1] - gy[j]) * -norm
    x2 = (o[:, 2] + gx[i]) * norm
    y2 = (o[:, 3] + gy[j]) * norm
    conf = cov[c, j, i]
    if parser == "custom_resnet":
        x1, x2 = _clip_net(x1, ctx, "x"), _clip_net(x2, ctx, "x")
        y1, y2 = _clip_net(y1, ctx, "y"), _clip_net(y2, ctx, "y")
        boxes = np.stack([x1, y1, x2 + np.float32(1), y2 + np.float32(1)], axis=1)
        return Detections(boxes, conf, c.astype(np.int32), "network")
    wf, hf = _net(ctx)
    lim = np.array([wf, hf, wf, hf], np.float32)
    b = np.stack([x1, y1, x2, y2], axis=1)
    b = np.where(b >= lim, lim - np.float32(1), b)
    b = np.where(b < 0, np.float32(0), b)
    keep = (b[:, 2] - b[:, 0] >= 0) & (b[:, 3] - b[:, 1] >= 0)
    return Detections(b[keep], conf[keep], c[keep].astype(np.int32), "network")


# ---------------------------------------------------------------------------------------------- DETR
@register("decode", "detr")
def decode_detr(
    layers: Layers,
    ctx: StepContext,
    *,
    boxes_layer: str = "pred_boxes",
    logits_layer: str = "pred_logits",
    activation: Literal["sigmoid", "softmax", "none"] = "sigmoid",
    top_k: int = 100,
    score_threshold: PerClassParam = 0.0,
    skip_class: int | None = None,
    parser: Literal["none", "tao_ddetr"] = "none",
) -> Detections:
    """DETR-style query heads: ``pred_boxes`` ``(Q, 4)`` normalised cx, cy, w, h and ``pred_logits``
    ``(Q, C)``. One candidate per query: class = argmax, score = its probability.

    * ``activation``: "sigmoid" (Deformable-DETR, DINO, RT-DETR), "softmax" (original DETR: the last
      class is "no object" and is dropped), "none" (already probabilities).
    * ``score_threshold`` (scalar or per class) is applied before ``top_k`` (the best ``top_k`` queries,
      ties in query order; 0 = all); ``skip_class`` drops one class id (TAO models use 0 as background).
    * ``parser="tao_ddetr"`` = TAO ``NvDsInferParseCustomDDETRTAO`` (TAO DINO / Deformable DETR):
      sigmoid of the max logit, class 0 skipped, ``x1 = (cx - w/2) * W``, ``x2 = x1 + w * W``, corners
      clipped to ``[0, W-1]``, queries with equal confidence collapse to the last one (a std::map),
      the best 200 kept (``activation``, ``skip_class`` and ``top_k`` are then fixed). Pass the
      pre-cluster thresholds as ``score_threshold`` to apply them before the cut, as the parser does."""
    step = "decode detr"
    check_choice(step, "activation", activation, ("sigmoid", "softmax", "none"))
    check_choice(step, "parser", parser, ("none", "tao_ddetr"))
    top_k = check_int(step, "top_k", top_k, low=0)
    if skip_class is not None:
        check_int(step, "skip_class", skip_class, low=0)
    bn, b = layer_2d(layers, boxes_layer, step, "boxes_layer", "(queries, 4)")
    ln, lg = layer_2d(layers, logits_layer, step, "logits_layer", "(queries, classes)")
    if b.shape[1] != 4 or lg.shape[0] != b.shape[0]:
        raise ValueError(
            f"{step}: layers {bn!r} {list(b.shape)} and {ln!r} {list(lg.shape)} do not fit: expected "
            "(queries, 4) and (queries, classes)"
        )
    if parser == "tao_ddetr":
        activation, skip_class, top_k = "sigmoid", 0, TAO_DDETR_TOP_K
    cls = lg.argmax(axis=1)
    if activation == "softmax":
        e = np.exp(lg.astype(np.float64) - lg.max(axis=1, keepdims=True))
        p = e[:, :-1] / e.sum(axis=1, keepdims=True)
        cls = p.argmax(axis=1)
        conf = p[np.arange(len(p)), cls].astype(np.float32)
    else:
        best = lg[np.arange(len(lg)), cls].astype(np.float64)
        conf = (
            (1.0 / (1.0 + np.exp(-best))).astype(np.float32)
            if activation == "sigmoid"
            else best.astype(np.float32)
        )
    n_cls = lg.shape[1] - (1 if activation == "softmax" else 0)
    keep = conf >= per_class_values(step, "score_threshold", score_threshold, n_cls)[cls]
    if skip_class is not None:
        keep &= cls != skip_class
    idx = np.flatnonzero(keep)
    w, h = _net(ctx)
    if parser == "tao_ddetr":
        # std::map<float, object>: a later query with the same confidence replaces an earlier one
        _, last = np.unique(conf[idx][::-1], return_index=True)
        idx = idx[::-1][last]
    order = idx[np.argsort(-conf[idx], kind="stable")][: top_k or None]
    q = b[order]
    if parser == "tao_ddetr":
        x1 = (q[:, 0] - q[:, 2] / np.float32(2)) * w
        y1 = (q[:, 1] - q[:, 3] / np.float32(2)) * h
        x2, y2 = x1 + q[:, 2] * w, y1 + q[:, 3] * h
        boxes = np.stack(
            [
                _clip_net(x1, ctx, "x"),
                _clip_net(y1, ctx, "y"),
                _clip_net(x2, ctx, "x"),
                _clip_net(y2, ctx, "y"),
            ],
            axis=1,
        )
    else:
        boxes = cxcywh_to_xyxy(q) * np.array([w, h, w, h], np.float32)
    return Detections(boxes, conf[order], cls[order].astype(np.int32), "network")
