"""Decoders: output layers -> candidate Detections in **network-input pixels** (x1, y1, x2, y2).

Each is registered by name (``@register("decode", name)``) and called as
``fn(layers, ctx, **params)``. ``score_threshold`` is a cheap candidate cut (so clustering sees few
boxes); nvinfer's pre-cluster threshold semantics (``>=`` per class) live in the ``filter`` steps.
Layers may carry a leading batch axis of 1. Layouts are those of ``nvinfer_semantics.md`` §2, §5, §6.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from dsprobe.detections import Detections
from dsprobe.postprocess.layers import expect, find_layer
from dsprobe.postprocess.registry import StepContext, register

Layers = Mapping[str, np.ndarray]


def cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    """(N, 4) centre x, centre y, width, height -> x1, y1, x2, y2."""
    b = np.asarray(b, np.float32)
    half = b[:, 2:4] * 0.5
    return np.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1)


def _best_class(scores_cf: np.ndarray, score_threshold: float, multi_label: bool
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(anchor indices, class ids, scores) of candidates from a channels-first (C, N) score matrix.

    The max over classes is a contiguous reduction; argmax runs only on the surviving anchors."""
    if multi_label:
        cls, rows = np.nonzero(scores_cf >= score_threshold)
        order = np.lexsort((cls, rows))
        rows, cls = rows[order], cls[order]
        return rows, cls.astype(np.int32), scores_cf[cls, rows]
    best = scores_cf.max(axis=0)
    rows = np.flatnonzero(best >= score_threshold)
    cls = scores_cf[:, rows].argmax(axis=0)
    return rows, cls.astype(np.int32), best[rows]


@register("decode", "yolov8")
def decode_yolov8(layers: Layers, ctx: StepContext, *, layer: str | None = None, score_threshold: float = 0.001,
                  multi_label: bool = False, num_keypoints: int = 0) -> Detections:
    """YOLOv8/v9/v11 raw head ``(4 + nc [+ 3K], N)`` channels-first, or ``(N, 4 + nc)`` transposed.

    Rows 0-3 are cx, cy, w, h in network pixels; class scores already sigmoid; no objectness.
    ``num_keypoints`` > 0 reads pose heads (``4 + nc + 3K`` rows: x, y, visibility per keypoint).
    """
    name, raw = find_layer(layers, layer, ndim=2, step="decode yolov8")
    a = expect(raw, 2, "decode yolov8", name, "(4+nc, anchors) or (anchors, 4+nc)").astype(np.float32, copy=False)
    extra = 3 * num_keypoints
    if a.shape[0] > a.shape[1]:  # (N, 4+nc) export
        a = a.T
    nc = a.shape[0] - 4 - extra
    if nc < 1:
        raise ValueError(f"decode yolov8: layer {name!r} has {a.shape[0]} rows; with num_keypoints={num_keypoints} "
                         f"that leaves {nc} classes (expected 4 + nc + 3*K rows)")
    rows, cls, conf = _best_class(a[4:4 + nc], score_threshold, multi_label)
    boxes = cxcywh_to_xyxy(a[:4, rows].T)
    kpts = a[4 + nc:, rows].T.reshape(-1, num_keypoints, 3) if num_keypoints else None
    return Detections(boxes, conf, cls, "network", keypoints=kpts)


@register("decode", "yolov8_pose")
def decode_yolov8_pose(layers: Layers, ctx: StepContext, *, layer: str | None = None, num_keypoints: int = 17,
                       score_threshold: float = 0.001) -> Detections:
    """YOLOv8-pose raw ``(4 + nc + 3K, N)``: boxes, person score(s), keypoints x, y, visibility (network px)."""
    return decode_yolov8(layers, ctx, layer=layer, score_threshold=score_threshold, num_keypoints=num_keypoints)


@register("decode", "yolov8_seg")
def decode_yolov8_seg(layers: Layers, ctx: StepContext, *, layer: str | None = None, protos_layer: str | None = None,
                      num_masks: int = 32, score_threshold: float = 0.001) -> Detections:
    """YOLOv8-seg: ``(4 + nc + M, N)`` plus prototypes ``(M, mh, mw)``; mask coefficients go to
    ``Detections.vectors``. Compute masks for the kept boxes with :func:`seg_masks` after clustering."""
    name, raw = find_layer(layers, layer, ndim=2, step="decode yolov8_seg")
    a = expect(raw, 2, "decode yolov8_seg", name, "(4+nc+M, anchors)").astype(np.float32, copy=False)
    if a.shape[0] > a.shape[1]:
        a = a.T
    nc = a.shape[0] - 4 - num_masks
    if nc < 1:
        raise ValueError(f"decode yolov8_seg: layer {name!r} has {a.shape[0]} rows, expected 4 + nc + {num_masks}")
    rows, cls, conf = _best_class(a[4:4 + nc], score_threshold, False)
    return Detections(cxcywh_to_xyxy(a[:4, rows].T), conf, cls, "network", vectors=a[4 + nc:, rows].T)


def seg_masks(dets: Detections, protos: np.ndarray, network_size: tuple[int, int], threshold: float | None = None
              ) -> np.ndarray:
    """Masks ``(N, mh, mw)`` = sigmoid(coefficients @ prototypes), zeroed outside each (network-px) box.

    ``protos`` is ``(M, mh, mw)`` (batch axis allowed); ``dets`` must be in network pixels with
    coefficients in ``vectors``. With ``threshold`` the masks are binarised.
    """
    p = expect(protos, 3, "seg_masks", "protos", "(M, mh, mw)").astype(np.float32)
    m, mh, mw = p.shape
    if dets.vectors is None or dets.vectors.shape[1] != m:
        raise ValueError(f"seg_masks: detections need {m} mask coefficients in .vectors")
    masks = 1.0 / (1.0 + np.exp(-(dets.vectors @ p.reshape(m, -1)))).reshape(-1, mh, mw)
    sx, sy = mw / network_size[0], mh / network_size[1]
    xs, ys = np.arange(mw) + 0.5, np.arange(mh) + 0.5
    for i, (x1, y1, x2, y2) in enumerate(dets.boxes):
        inside = ((ys[:, None] >= y1 * sy) & (ys[:, None] < y2 * sy)) & ((xs[None] >= x1 * sx) & (xs[None] < x2 * sx))
        masks[i] *= inside
    return masks if threshold is None else (masks > threshold).astype(np.float32)


@register("decode", "yolov5")
def decode_yolov5(layers: Layers, ctx: StepContext, *, layer: str | None = None, score_threshold: float = 0.001,
                  objectness_threshold: float = 0.0, multi_label: bool = False) -> Detections:
    """YOLOv5 / v7 / YOLOX raw ``(N, 5 + nc)``: cx, cy, w, h px, objectness, class scores (all sigmoid);
    confidence = objectness x class score."""
    name, raw = find_layer(layers, layer, ndim=2, step="decode yolov5")
    a = expect(raw, 2, "decode yolov5", name, "(anchors, 5+nc)").astype(np.float32, copy=False)
    if a.shape[1] < 6:
        raise ValueError(f"decode yolov5: layer {name!r} has shape {list(a.shape)}, expected (anchors, 5+nc)")
    obj = a[:, 4]
    keep = np.flatnonzero(obj >= max(objectness_threshold, score_threshold))
    a = a[keep]
    rows, cls, conf = _best_class((a[:, 5:] * a[:, 4:5]).T, score_threshold, multi_label)
    return Detections(cxcywh_to_xyxy(a[rows, :4]), conf, cls, "network")


@register("decode", "yolox")
def decode_yolox(layers: Layers, ctx: StepContext, **params) -> Detections:
    """YOLOX with ``decode_in_inference=True``: same layout as YOLOv5 (``(N, 5 + nc)``)."""
    return decode_yolov5(layers, ctx, **params)


@register("decode", "xyxy_score_class")
def decode_xyxy_score_class(layers: Layers, ctx: StepContext, *, layer: str | None = None,
                            score_threshold: float = 0.0) -> Detections:
    """DeepStream-Yolo unified output and end-to-end heads (YOLOv10 / YOLO26 / RT-DETR exports):
    ``(N, 6)`` = x1, y1, x2, y2 (network px), score, class id (as float)."""
    name, raw = find_layer(layers, layer, ndim=2, step="decode xyxy_score_class")
    a = expect(raw, 2, "decode xyxy_score_class", name, "(N, 6)").astype(np.float32, copy=False)
    if a.shape[1] != 6:
        raise ValueError(f"decode xyxy_score_class: layer {name!r} has shape {list(a.shape)}, expected (N, 6)")
    a = a[a[:, 4] >= score_threshold]
    return Detections(a[:, :4], a[:, 4], a[:, 5].astype(np.int32), "network")


def _scale_boxes(b: np.ndarray, ctx: StepContext, normalized: bool, order: str) -> np.ndarray:
    b = np.asarray(b, np.float32).reshape(-1, 4)
    if order == "yxyx":
        b = b[:, [1, 0, 3, 2]]
    elif order != "xyxy":
        raise ValueError(f"box order must be 'xyxy' or 'yxyx', got {order!r}")
    if normalized:
        w, h = ctx.network_size
        b = b * np.array([w, h, w, h], np.float32)
    return b


@register("decode", "nms_outputs")
def decode_nms_outputs(layers: Layers, ctx: StepContext, *, num_layer: str = "num_detections",
                       boxes_layer: str = "detection_boxes", scores_layer: str = "detection_scores",
                       classes_layer: str = "detection_classes", normalized: bool = False, box_order: str = "xyxy",
                       score_threshold: float = 0.0) -> Detections:
    """4-output NMS-in-graph (TensorRT EfficientNMS / BatchedNMS, TF-OD API): a detection count,
    boxes ``(K, 4)``, scores ``(K,)``, classes ``(K,)``. ``box_order="yxyx"`` for TF/EfficientDet,
    ``normalized=True`` for [0, 1] coordinates (TAO YOLOv3/v4, TF SSD)."""
    step = "decode nms_outputs"
    _, num = find_layer(layers, num_layer, step=step)
    _, boxes = find_layer(layers, boxes_layer, step=step)
    _, scores = find_layer(layers, scores_layer, step=step)
    _, classes = find_layer(layers, classes_layer, step=step)
    k = int(np.asarray(num).reshape(-1)[0])
    b = expect(boxes, 2, step, boxes_layer, "(K, 4)")[:k]
    s = np.asarray(scores, np.float32).reshape(-1)[:k]
    c = np.asarray(classes).reshape(-1)[:k].astype(np.int32)
    keep = s >= score_threshold
    return Detections(_scale_boxes(b, ctx, normalized, box_order)[keep], s[keep], c[keep], "network")


@register("decode", "nms_plugin")
def decode_nms_plugin(layers: Layers, ctx: StepContext, *, layer: str = "NMS", count_layer: str | None = "NMS_1",
                      score_threshold: float = 0.0, tao_clip: bool = False) -> Detections:
    """TensorRT NMS plugin (Caffe/UFF SSD, TAO SSD/DSSD/RetinaNet/FasterRCNN): records of 7 floats
    ``[image_id, label, confidence, xmin, ymin, xmax, ymax]`` normalised, plus a keep count.

    ``tao_clip=True`` reproduces TAO's parser: ``left = clip(x1*W, 0, W-1)``, ``width = clip((x2-x1)*W, 0, W-1)``.
    """
    step = "decode nms_plugin"
    name, raw = find_layer(layers, layer, step=step)
    rec = np.asarray(raw, np.float32).reshape(-1, 7)
    if count_layer is not None and count_layer in layers:
        rec = rec[:int(np.asarray(layers[count_layer]).reshape(-1)[0])]
    rec = rec[rec[:, 2] >= score_threshold]
    w, h = ctx.network_size
    if tao_clip:
        left = np.clip(rec[:, 3] * w, 0, w - 1)
        top = np.clip(rec[:, 4] * h, 0, h - 1)
        bw = np.clip((rec[:, 5] - rec[:, 3]) * w, 0, w - 1)
        bh = np.clip((rec[:, 6] - rec[:, 4]) * h, 0, h - 1)
        boxes = np.stack([left, top, left + bw, top + bh], 1)
    else:
        boxes = rec[:, 3:7] * np.array([w, h, w, h], np.float32)
    return Detections(boxes, rec[:, 2], rec[:, 1].astype(np.int32), "network")


@register("decode", "ssd")
def decode_ssd(layers: Layers, ctx: StepContext, *, boxes_layer: str = "detection_boxes",
               scores_layer: str = "detection_scores", classes_layer: str = "detection_classes",
               num_layer: str = "num_detections", score_threshold: float = 0.0) -> Detections:
    """TF / TAO SSD with NMS in the graph: normalised ymin, xmin, ymax, xmax (NvDsInferParseCustomTfSSD:
    scaled to the network size and clipped to [0, W-1] / [0, H-1]; boxes with x2 <= x1 dropped)."""
    d = decode_nms_outputs(layers, ctx, num_layer=num_layer, boxes_layer=boxes_layer, scores_layer=scores_layer,
                           classes_layer=classes_layer, normalized=True, box_order="yxyx",
                           score_threshold=score_threshold)
    w, h = ctx.network_size
    b = np.clip(d.boxes, 0, np.array([w - 1, h - 1, w - 1, h - 1], np.float32))
    keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return Detections(b[keep], d.scores[keep], d.class_ids[keep], "network")


@register("decode", "detectnet_v2")
def decode_detectnet_v2(layers: Layers, ctx: StepContext, *, cov_layer: str | None = None,
                        bbox_layer: str | None = None, pre_cluster_threshold: float | Sequence[float] = 0.2,
                        num_classes: int = 0) -> Detections:
    """nvinfer's built-in DetectNet_v2 / resnet10 parser (the one that says "Could not find output
    coverage layer"): ``cov`` ``(C, gh, gw)`` sigmoid, ``bbox`` ``(4C, gh, gw)``; stride = ceil(W / gw),
    norm 35, each coordinate clamped to [0, W-1] / [0, H-1], zero-size boxes kept, per-class
    ``conf >= pre-cluster-threshold`` applied inside as nvinfer does."""
    step = "decode detectnet_v2"
    cov_name, cov = find_layer(layers, cov_layer, contains=None if cov_layer else "cov", step=step)
    bbox_name, bbox = find_layer(layers, bbox_layer, contains=None if bbox_layer else "bbox", step=step)
    cov = expect(cov, 3, step, cov_name, "(classes, grid_h, grid_w)").astype(np.float32)
    bbox = expect(bbox, 3, step, bbox_name, "(4*classes, grid_h, grid_w)").astype(np.float32)
    c_n, gh, gw = cov.shape
    if bbox.shape != (4 * c_n, gh, gw):
        raise ValueError(f"{step}: layer {bbox_name!r} has shape {list(bbox.shape)}, expected {[4 * c_n, gh, gw]}")
    w, h = ctx.network_size
    sx, sy = -(-w // gw), -(-h // gh)
    norm = np.float32(35.0)
    n_cls = min(c_n, num_classes or ctx.num_classes or c_n)
    thr = np.broadcast_to(np.asarray(pre_cluster_threshold, np.float32), (max(n_cls, 1),)) \
        if np.ndim(pre_cluster_threshold) == 0 else np.asarray(pre_cluster_threshold, np.float32)
    gx = (np.arange(gw, dtype=np.float32) * sx + np.float32(0.5)) / norm
    gy = (np.arange(gh, dtype=np.float32) * sy + np.float32(0.5)) / norm
    out_b, out_s, out_c = [], [], []
    for c in range(n_cls):
        j, i = np.nonzero(cov[c] >= thr[c])
        o = bbox[4 * c:4 * c + 4, j, i]
        x1 = (o[0] - gx[i]) * -norm
        y1 = (o[1] - gy[j]) * -norm
        x2 = (o[2] + gx[i]) * norm
        y2 = (o[3] + gy[j]) * norm
        b = np.stack([x1, y1, x2, y2], 1)
        b = np.where(b >= np.array([w, h, w, h], np.float32), np.array([w - 1, h - 1, w - 1, h - 1], np.float32), b)
        b = np.maximum(b, 0)
        keep = (b[:, 2] - b[:, 0] >= 0) & (b[:, 3] - b[:, 1] >= 0)
        out_b.append(b[keep])
        out_s.append(cov[c, j, i][keep])
        out_c.append(np.full(int(keep.sum()), c, np.int32))
    if not out_b:
        return Detections.empty("network")
    return Detections(np.concatenate(out_b), np.concatenate(out_s), np.concatenate(out_c), "network")


@register("decode", "detr")
def decode_detr(layers: Layers, ctx: StepContext, *, boxes_layer: str = "pred_boxes", logits_layer: str = "pred_logits",
                activation: str = "sigmoid", top_k: int = 100, score_threshold: float = 0.0,
                skip_class: int | None = None) -> Detections:
    """DETR-style heads: ``pred_boxes`` ``(Q, 4)`` normalised cx, cy, w, h and ``pred_logits`` ``(Q, C)``.

    ``activation``: "sigmoid" (Deformable-DETR, RT-DETR, TAO DINO) or "softmax" (DETR, last class =
    no-object, dropped). Keeps the ``top_k`` best queries; ``skip_class`` drops one class id (TAO skips 0).
    """
    step = "decode detr"
    bn, boxes = find_layer(layers, boxes_layer, step=step)
    ln, logits = find_layer(layers, logits_layer, step=step)
    b = expect(boxes, 2, step, bn, "(queries, 4)").astype(np.float32)
    lg = expect(logits, 2, step, ln, "(queries, classes)").astype(np.float32)
    if activation == "sigmoid":
        p = 1.0 / (1.0 + np.exp(-lg))
    elif activation == "softmax":
        e = np.exp(lg - lg.max(1, keepdims=True))
        p = (e / e.sum(1, keepdims=True))[:, :-1]
    else:
        raise ValueError(f"{step}: activation must be 'sigmoid' or 'softmax', got {activation!r}")
    if skip_class is not None:
        p[:, skip_class] = 0
    cls = p.argmax(1)
    conf = p[np.arange(len(p)), cls]
    order = np.argsort(-conf, kind="stable")[:top_k]
    order = order[conf[order] >= score_threshold]
    w, h = ctx.network_size
    xyxy = cxcywh_to_xyxy(b[order]) * np.array([w, h, w, h], np.float32)
    return Detections(xyxy, conf[order], cls[order].astype(np.int32), "network")


@register("decode", "classifier")
def decode_classifier(layers: Layers, ctx: StepContext, *, layers_order: Sequence[str] | None = None,
                      classifier_threshold: float = 0.0, softmax: bool = False) -> Detections:
    """nvinfer's classifier rule per output layer (= attribute): best class with ``p > threshold``
    (strict), no softmax unless ``softmax=True`` (TAO NonSoftmax: ``exp(x) / sum exp``, no max shift).

    Returns one row per attribute that passed, box = the whole network input, ``class_id`` = best
    class, ``score`` = its probability; ``vectors`` holds the attribute (layer) index in column 0.
    """
    names = list(layers_order) if layers_order else list(layers)
    w, h = ctx.network_size
    rows = []
    for idx, name in enumerate(names):
        _, arr = find_layer(layers, name, step="decode classifier")
        p = np.asarray(arr, np.float32).reshape(-1)
        if softmax:
            e = np.exp(p)
            p = e / e.sum()
        best, best_p = -1, 0.0
        for c, v in enumerate(p):  # nvinfer's loop: strict '>' on both threshold and running max
            if v > classifier_threshold and v > best_p:
                best, best_p = c, float(v)
        if best >= 0:
            rows.append((best, best_p, idx))
    if not rows:
        return Detections.empty("network")
    cls, conf, attr = zip(*rows)
    boxes = np.tile(np.array([0, 0, w, h], np.float32), (len(rows), 1))
    return Detections(boxes, conf, cls, "network", vectors=np.array(attr, np.float32)[:, None])


@register("decode", "embedding")
def decode_embedding(layers: Layers, ctx: StepContext, *, layer: str | None = None, l2_normalize: bool = True
                     ) -> Detections:
    """A vector head (e.g. a 128-d face embedding): one row, box = the whole input, ``vectors`` (1, D)."""
    name, arr = find_layer(layers, layer, step="decode embedding")
    v = np.asarray(arr, np.float32).reshape(1, -1)
    if l2_normalize:
        n = np.linalg.norm(v)
        v = v / n if n > 0 else v
    w, h = ctx.network_size
    return Detections(np.array([[0, 0, w, h]], np.float32), [1.0], [0], "network", vectors=v)
