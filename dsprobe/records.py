"""The core records that travel from a probe (or the reference recorder) into a recording.

Coordinate conventions used everywhere in dsprobe:

* **frame pixels**: pixels of the nvstreammux output surface (``FrameRecord.frame_size``); this is
  the space of ``NvDsObjectMeta.rect_params`` and of every box a user sees.
* **network pixels**: pixels of the network input (``FrameRecord.network_size``), letterbox included;
  this is the space a decoder returns boxes in (as nvinfer's custom parsers do).
* Rectangles in records are ``(left, top, width, height)`` floats like ``NvOSD_RectParams``;
  boxes in :class:`dsprobe.detections.Detections` are ``x1, y1, x2, y2``.

All arrays handed to a record must already be owned copies (the probe copies out of DeepStream's
buffers before it builds a record); the recorder stores them as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

#: ``NvDsObjectMeta.object_id`` of an object no tracker has seen (UNTRACKED_OBJECT_ID).
UNTRACKED_OBJECT_ID = 0xFFFFFFFFFFFFFFFF

Rect = tuple[float, float, float, float]
"""(left, top, width, height) in frame pixels, floats, as ``NvOSD_RectParams``."""

ImageEncoding = Literal["raw", "jpeg", "png"]


@dataclass
class ImageRecord:
    """A picture of (part of) a frame.

    ``data`` is an ``(H, W, 3)`` uint8 RGB array when ``encoding == "raw"``, else the encoded bytes.
    A probe may hand the Recorder ``(H, W, 4)`` RGBA (copied straight from the surface); the Recorder
    drops alpha, so what a recording holds and the reader returns is always RGB.
    ``rect`` is the rectangle of the frame it shows, in frame pixels: ``(0, 0, W_mux, H_mux)`` for a
    (possibly downscaled) full frame, the object's rect for a crop. Image pixel (0, 0) is the
    rect's top-left corner; the image may be smaller than the rect (downscaled).
    """

    data: np.ndarray | bytes
    rect: Rect
    encoding: ImageEncoding = "raw"


@dataclass(frozen=True)
class Classification:
    """One classifier result on an object (an ``NvDsLabelInfo`` of an ``NvDsClassifierMeta``).

    ``unique_component_id``: the classifier's gie-unique-id; ``attribute``: the output layer's index
    (``label_id``); ``class_id``: the best class (``result_class_id``); ``confidence``: its
    probability (``result_prob``); ``label``: ``result_label``."""

    unique_component_id: int
    attribute: int
    class_id: int
    confidence: float
    label: str = ""


@dataclass
class ObjectRecord:
    """One ``NvDsObjectMeta`` (an object on a frame), optionally with an SGIE's output for it.

    ``rect`` is in frame pixels. ``layers`` holds the tensors an SGIE produced for this object
    (layer name -> array with its true dtype, per-object dims, no batch axis); empty for objects
    recorded only as detections. ``parent_index`` is the index of the parent object in the same
    list (-1 for none); ``parent_object_id`` is the parent's tracker id when known.
    ``classifications``: what classifiers (nvinfer SGIEs, or a live classifier postprocess) attached
    to the object (``classifier_meta_list``), for comparing with a replay.
    """

    rect: Rect
    class_id: int = 0
    confidence: float = 0.0
    object_id: int = UNTRACKED_OBJECT_ID
    unique_component_id: int = 0
    label: str = ""
    parent_index: int = -1
    parent_object_id: int = UNTRACKED_OBJECT_ID
    layers: dict[str, np.ndarray] = field(default_factory=dict)
    image: ImageRecord | None = None
    classifications: list[Classification] = field(default_factory=list)


@dataclass
class FrameRecord:
    """One frame of one stream as seen by one inference element (GIE).

    * ``unique_id``: the producing GIE's ``gie-unique-id`` (``NvDsInferTensorMeta.unique_id``).
    * ``pts_ns``: buffer PTS in nanoseconds; ``ntp_timestamp``: NTP ns, 0 when unknown.
    * ``network_size``: network input ``(width, height, channels)``.
    * ``frame_size``: ``(width, height)`` of the nvstreammux output, the space boxes map back to.
    * ``layers``: PGIE output layers for the whole frame (name -> array, true dtype, no batch axis).
      Empty for an SGIE record, whose tensors live on ``objects``.
    * ``objects``: for an SGIE, the objects it inferred on, each with its ``layers``.
    * ``detections``: the ``NvDsObjectMeta`` already on the frame when it was recorded (nvinfer's own
      output, or a live postprocess's), without layers, so replay can be compared with the pipeline.
    * ``image``: optional picture of the frame (usually downscaled).
    """

    source_id: int
    frame_num: int
    pts_ns: int = 0
    unique_id: int = 1
    network_size: tuple[int, int, int] = (0, 0, 0)
    frame_size: tuple[int, int] = (0, 0)
    layers: dict[str, np.ndarray] = field(default_factory=dict)
    objects: list[ObjectRecord] = field(default_factory=list)
    detections: list[ObjectRecord] = field(default_factory=list)
    image: ImageRecord | None = None
    ntp_timestamp: int = 0
    batch_id: int = 0
    pad_index: int = 0
