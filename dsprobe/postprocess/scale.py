"""Scale steps: network-input pixels -> frame (nvstreammux) pixels."""

from __future__ import annotations

import numpy as np

from dsprobe.detections import Detections
from dsprobe.geometry import network_to_crop, nvinfer_transform
from dsprobe.postprocess.registry import StepContext, register


def _geometry_flag(value: bool | None, ctx: StepContext, name: str) -> bool:
    if value is not None:
        return bool(value)
    return bool(getattr(ctx.geometry, name, False))


def _with_boxes(d: Detections, boxes: np.ndarray, keypoints: np.ndarray | None, space: str) -> Detections:
    return Detections(boxes, d.scores, d.class_ids, space, keypoints=keypoints, vectors=d.vectors, masks=d.masks,
                      object_ids=d.object_ids)


@register("scale", "nvinfer")
def scale_nvinfer(dets: Detections, ctx: StepContext, *, maintain_aspect_ratio: bool | None = None,
                  symmetric_padding: bool | None = None, deepstream_version: float = 7.1) -> Detections:
    """nvinfer's mapping (``attach_metadata_detector``): ``(v - offset) / ratio`` for the even-rounded
    crop, plus the crop origin's *unrounded* left/top (SGIE parent rect; 0 for a PGIE). DeepStream >= 9
    then clamps negative left/top to 0 keeping width/height. Keypoints are mapped the same way.

    Geometry flags default to the context's (the recording's nvinfer config)."""
    if dets.space != "network":
        raise ValueError(f"scale nvinfer: expects detections in network pixels, got {dets.space!r}")
    fw, fh = ctx.frame_size
    crop = ctx.crop_rect or (0.0, 0.0, float(fw), float(fh))
    t = nvinfer_transform(crop, ctx.network_size,
                          maintain_aspect_ratio=_geometry_flag(maintain_aspect_ratio, ctx, "maintain_aspect_ratio"),
                          symmetric_padding=_geometry_flag(symmetric_padding, ctx, "symmetric_padding"))
    b = network_to_crop(dets.boxes, t)
    b[:, [0, 2]] += crop[0]
    b[:, [1, 3]] += crop[1]
    if deepstream_version >= 9:
        for k in (0, 1):
            neg = b[:, k] < 0
            b[neg, k + 2] -= b[neg, k]
            b[neg, k] = 0
    kp = None
    if dets.keypoints is not None:
        kp = dets.keypoints.astype(np.float64).copy()
        kp[..., 0] = (kp[..., 0] - t.offset_left) / t.ratio_x + crop[0]
        kp[..., 1] = (kp[..., 1] - t.offset_top) / t.ratio_y + crop[1]
    return _with_boxes(dets, b.astype(np.float32), kp, "frame")


@register("scale", "ultralytics")
def scale_ultralytics(dets: Detections, ctx: StepContext, *, clip: bool = True) -> Detections:
    """Ultralytics' letterbox undo (for models run outside DeepStream): ``gain = min(Wn/Wf, Hn/Hf)``,
    centred padding rounded as ``round(pad - 0.1)``, boxes ``(v - pad) / gain``, clipped to the frame."""
    if dets.space != "network":
        raise ValueError(f"scale ultralytics: expects detections in network pixels, got {dets.space!r}")
    (nw, nh), (fw, fh) = ctx.network_size, ctx.frame_size
    gain = min(nw / fw, nh / fh)
    px, py = round((nw - fw * gain) / 2 - 0.1), round((nh - fh * gain) / 2 - 0.1)
    b = (dets.boxes.astype(np.float64) - [px, py, px, py]) / gain
    if clip:
        b = np.clip(b, 0, [fw, fh, fw, fh])
    kp = None
    if dets.keypoints is not None:
        kp = dets.keypoints.astype(np.float64).copy()
        kp[..., 0] = (kp[..., 0] - px) / gain
        kp[..., 1] = (kp[..., 1] - py) / gain
    return _with_boxes(dets, b.astype(np.float32), kp, "frame")


@register("scale", "none")
def scale_none(dets: Detections, ctx: StepContext) -> Detections:
    """Keep network pixels (for inspecting raw decoder output)."""
    return dets
