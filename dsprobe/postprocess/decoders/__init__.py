"""Decoders: output layers -> candidate Detections in **network-input pixels** (x1, y1, x2, y2).

Each decoder is a registered ``decode`` step, called as ``fn(layers, ctx, **params)`` with the frame's
(or object's) output layers keyed by name; a leading batch axis of 1 is accepted everywhere. Params
are JSON values with defaults; a wrong param or a layer of the wrong shape raises ValueError naming
the decoder, the param or layer and what was expected, and a missing layer raises
:class:`~dsprobe.postprocess.layers.LayerNotFoundError` listing the recorded layers and shapes.

============================  ======================================================================
name                          layout (``docs/nvinfer-semantics.md`` §2, §5, §6)
============================  ======================================================================
``yolov8``                    Ultralytics YOLOv8/v5u/v9/YOLO11 raw ``(4 + nc, anchors)`` or transposed
``yolov8_pose``               + keypoints -> ``Detections.keypoints`` ``(N, K, 3)``
``yolov8_seg``                + mask coefficients -> ``vectors``; masks: :func:`seg_masks`, :func:`attach_masks`
``yolov5``, ``yolox``         ``(anchors, 5 + nc)``, objectness x class score
``xyxy_score_class``          ``(N, 6)``: DeepStream-Yolo, YOLOv10 / end-to-end exports
``boxes_scores``              separate boxes ``(N, 4)`` + scores ``(N, nc)`` (YOLO-NAS, older DeepStream-Yolo)
``nms_outputs``               count + boxes + scores + classes (EfficientNMS, BatchedNMS, TAO)
``ssd``                       TF-OD API SSD as ``NvDsInferParseCustomTfSSD``
``nms_plugin``                TensorRT NMS plugin records of 7 (Caffe/UFF SSD, TAO SSD/RetinaNet/FRCNN)
``detectnet_v2``              nvinfer's built-in "cov"/"bbox" grid parser (resnet10, PeopleNet...)
``detr``                      DETR-style normalised cx,cy,w,h + logits (TAO DINO / D-DETR option)
``classifier``                nvinfer classifier rule, one row per attribute (:func:`classify`)
``embedding``                 a vector head, one row with ``vectors`` ``(1, D)``
============================  ======================================================================

Thresholds: ``score_threshold`` is only a cheap candidate cut (``score >= threshold``) so clustering
sees few boxes; nvinfer's pre-cluster threshold (``conf >= thr[class]``, classes >= num-detected-classes
dropped) is the ``filter:threshold`` step's job. Keep ``score_threshold`` at or below the smallest
pre-cluster threshold (the YOLO decoders' default, 0.001, drops only near-zero scores). The
exception is ``detectnet_v2``, whose nvinfer parser thresholds per class inside.

Segmentation masks are computed after clustering, for the kept boxes only::

    dets = pp.with_step("scale", "none").run(layers, ctx)          # network px, coefficients in vectors
    dets = attach_masks(dets, layers["output1"], ctx.network_size)  # box-relative Detections.masks
    dets = scale_nvinfer(dets, ctx)                                 # masks ride along unchanged
"""

from __future__ import annotations

from dsprobe.postprocess.decoders.base import Layers, cxcywh_to_xyxy
from dsprobe.postprocess.decoders.heads import (
    Attribute,
    classify,
    decode_classifier,
    decode_embedding,
)
from dsprobe.postprocess.decoders.tao import (
    decode_detectnet_v2,
    decode_detr,
    decode_nms_outputs,
    decode_nms_plugin,
    decode_ssd,
)
from dsprobe.postprocess.decoders.yolo import (
    attach_masks,
    decode_boxes_scores,
    decode_xyxy_score_class,
    decode_yolov5,
    decode_yolov8,
    decode_yolov8_pose,
    decode_yolov8_seg,
    decode_yolox,
    seg_masks,
)

__all__ = [
    "Attribute",
    "Layers",
    "attach_masks",
    "classify",
    "cxcywh_to_xyxy",
    "decode_boxes_scores",
    "decode_classifier",
    "decode_detectnet_v2",
    "decode_detr",
    "decode_embedding",
    "decode_nms_outputs",
    "decode_nms_plugin",
    "decode_ssd",
    "decode_xyxy_score_class",
    "decode_yolov5",
    "decode_yolov8",
    "decode_yolov8_pose",
    "decode_yolov8_seg",
    "decode_yolox",
    "seg_masks",
]
