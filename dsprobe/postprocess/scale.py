"""Scale steps: network-input pixels -> frame (nvstreammux) pixels.

``scale:nvinfer`` is nvinfer's ``attach_metadata_detector`` (``docs/nvinfer-semantics.md`` §1.6), in its
float32/double arithmetic: for each object ``left = float32((float32(x1 - offset_left)) / ratio_x)``,
``width = float32(width / ratio_x)`` (double ratio), then (DeepStream >= 9) negative left/top set to 0,
then (SGIE) the parent's float32 ``left/top`` added in float32. The geometry (even-rounded crop,
truncated letterbox size, padding side, ratios) comes from :func:`dsprobe.nvinfer.geometry.nvinfer_transform`.
Boxes are ``left, top, float32(left + width), float32(top + height)``.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, NamedTuple

import numpy as np

from dsprobe.detections import Detections
from dsprobe.nvinfer.geometry import CropTransform, nvinfer_transform
from dsprobe.postprocess.filters import nvinfer_object_filter, rects_to_boxes
from dsprobe.postprocess.registry import ObjectBatch, StepContext, batch_over_objects, register

#: first DeepStream version whose nvinfer clamps negative left/top to 0 (DS 6.2 does not; DS 9.1 does)
CLAMP_NEGATIVE_SINCE = 9.0


def _geometry_flag(value: bool | None, ctx: StepContext, name: str) -> bool:
    if value is not None:
        return bool(value)
    return bool(getattr(ctx.geometry, name, False))


class CropMapping(NamedTuple):
    """nvinfer's back-mapping for one crop, as arrays ready for the per-frame arithmetic (read-only:
    one instance is cached and shared by every frame with the same geometry)."""

    transform: CropTransform
    offset: np.ndarray  # (2,) float32 left/top padding offset, network pixels
    ratio: np.ndarray  # (2,) float64 network pixels per frame pixel (x, y)
    origin: np.ndarray  # (2,) float32 crop left/top (SGIE parent rect, unrounded), frame pixels
    rect: tuple[float, float, float, float]  # the crop rect as given, frame pixels


def crop_transform(
    ctx: StepContext,
    maintain_aspect_ratio: bool | None = None,
    symmetric_padding: bool | None = None,
) -> CropMapping:
    """nvinfer's transform for this context: the crop is ``ctx.crop_rect`` (SGIE parent rect) or the
    whole frame; flags default to ``ctx.geometry`` (the recording's nvinfer config)."""
    crop, net = ctx.crop_rect or ctx.frame_size, ctx.network_size
    return _mapping(
        crop if type(crop) is tuple else tuple(crop),
        net if type(net) is tuple else tuple(net),
        _geometry_flag(maintain_aspect_ratio, ctx, "maintain_aspect_ratio"),
        _geometry_flag(symmetric_padding, ctx, "symmetric_padding"),
    )


@functools.lru_cache(maxsize=1024)
def _mapping(
    crop: tuple[float, ...],
    network_size: tuple[int, ...],
    maintain_aspect_ratio: bool,
    symmetric_padding: bool,
) -> CropMapping:
    """:func:`nvinfer_transform` and its arrays, remembered (a pure function of a few numbers that
    frames repeat). ``crop``: ``(left, top, width, height)``, or the frame ``(width, height)``."""
    rect = (
        tuple(float(v) for v in crop)
        if len(crop) == 4
        else (0.0, 0.0, float(crop[0]), float(crop[1]))
    )
    t = nvinfer_transform(
        rect,
        tuple(int(v) for v in network_size[:2]),  # type: ignore[arg-type]
        maintain_aspect_ratio=maintain_aspect_ratio,
        symmetric_padding=symmetric_padding,
    )
    arrays = (
        np.array([t.offset_left, t.offset_top], np.float32),
        np.array([t.ratio_x, t.ratio_y]),
        np.array(rect[:2], np.float32),
    )
    for a in arrays:
        a.setflags(write=False)
    return CropMapping(t, *arrays, rect)  # type: ignore[arg-type]


def nvinfer_attach(
    dets: Detections,
    ctx: StepContext,
    *,
    maintain_aspect_ratio: bool | None = None,
    symmetric_padding: bool | None = None,
    deepstream_version: float = 7.1,
    filters: Mapping[str, Any] | None = None,
) -> Detections:
    """nvinfer's ``attach_metadata_detector`` for one frame or SGIE object: map each network-pixel
    object back (float32 as nvinfer), clamp negative left/top (DeepStream >= 9), apply the object
    ``filters`` (params of :func:`~dsprobe.postprocess.filters.nvinfer_object_filter`; crop-relative
    for an SGIE, as nvinfer does), then add the crop origin (the SGIE parent's unrounded float left/top;
    0 for a PGIE) in float32. Keypoints are mapped with the same formula (nvinfer leaves them alone).
    Returns frame pixels."""
    if dets.space != "network":
        raise ValueError(f"scale nvinfer: expects detections in network pixels, got {dets.space!r}")
    m = crop_transform(ctx, maintain_aspect_ratio, symmetric_padding)
    b = dets.boxes
    rects = np.empty_like(b)
    # float32 (v - offset), then / ratio in double, stored as float32; width = the parser's float32 x2 - x1
    np.divide(b[:, :2] - m.offset, m.ratio, out=rects[:, :2], casting="unsafe")
    np.divide(b[:, 2:] - b[:, :2], m.ratio, out=rects[:, 2:], casting="unsafe")
    if deepstream_version >= CLAMP_NEGATIVE_SINCE:
        rects[:, :2] = np.where(rects[:, :2] < 0, np.float32(0), rects[:, :2])
    d = dets
    if filters is not None:
        keep, rects = nvinfer_object_filter(rects, dets.class_ids, ctx.frame_size, **filters)
        d = dets[keep]
    kp = None
    if d.keypoints is not None:
        t, (ox, oy) = m.transform, m.rect[:2]
        kp = d.keypoints.astype(np.float64)
        kp[..., 0] = (kp[..., 0] - t.offset_left) / t.ratio_x + ox
        kp[..., 1] = (kp[..., 1] - t.offset_top) / t.ratio_y + oy
    return _with_boxes(d, rects_to_boxes(rects, m.origin), kp, "frame")


class CropMappings(NamedTuple):
    """:class:`CropMapping` of N crops as arrays, one row per crop (what the object-batched scale uses)."""

    offset: np.ndarray  # (N, 2) float32 left/top padding offset, network pixels
    ratio: np.ndarray  # (N, 2) float64 network pixels per frame pixel (x, y)
    origin: np.ndarray  # (N, 2) float32 crop left/top (SGIE parent rect, unrounded), frame pixels
    rect_origin: np.ndarray  # (N, 2) float64 crop left/top as given, frame pixels


def crop_mappings(
    crop_rects: np.ndarray,
    network_size: tuple[int, int],
    maintain_aspect_ratio: bool,
    symmetric_padding: bool,
) -> CropMappings:
    """:func:`dsprobe.nvinfer.geometry.nvinfer_transform` for ``(N, 4)`` float64 crop rects ``left,
    top, width, height`` (frame pixels) at once, in its integer and float64 arithmetic (C truncation,
    even rounding, truncated letterbox size, ``dst / src`` ratios). ValueError for a rect it rejects
    (not finite, smaller than 2x2 after the rounding) or a network size that is not positive."""
    r = np.asarray(crop_rects, np.float64).reshape(-1, 4)
    if not np.isfinite(r).all() or (np.abs(r) >= 2.0**52).any():
        raise ValueError("crop rects must be finite numbers below 2**52")
    width, height = np.maximum(np.trunc(r[:, 2:]).astype(np.int64), 0).T
    # the even-rounded crop origin is not added back (nvinfer): only its size counts here
    src_w, src_h = width & ~1, height & ~1
    if (src_w <= 0).any() or (src_h <= 0).any():
        raise ValueError("a crop rect is smaller than 2x2 pixels after nvinfer's even rounding")
    net_w, net_h = int(network_size[0]), int(network_size[1])
    if net_w <= 0 or net_h <= 0:
        raise ValueError(f"network size {network_size} must be positive (width, height)")
    if maintain_aspect_ratio:
        hdest = net_w * src_h / src_w  # exact integers, one correctly rounded division: as Python
        fits = hdest <= net_h
        dw = np.where(fits, net_w, np.trunc(net_h * src_w / src_h).astype(np.int64))
        dh = np.where(fits, np.trunc(hdest).astype(np.int64), net_h)
    else:
        dw, dh = np.full(len(r), net_w, np.int64), np.full(len(r), net_h, np.int64)
    offset = np.zeros((len(r), 2), np.float32)
    if maintain_aspect_ratio and symmetric_padding:
        offset[:, 0], offset[:, 1] = (net_w - dw) // 2, (net_h - dh) // 2
    ratio = np.stack([dw / src_w, dh / src_h], axis=1)
    return CropMappings(offset, ratio, r[:, :2].astype(np.float32), r[:, :2].copy())


def nvinfer_attach_objects(
    dets: Detections,
    owner: np.ndarray,
    objects: ObjectBatch,
    *,
    maintain_aspect_ratio: bool | None = None,
    symmetric_padding: bool | None = None,
    deepstream_version: float = 7.1,
    filters: Mapping[str, Any] | None = None,
) -> tuple[Detections, np.ndarray]:
    """:func:`nvinfer_attach` for the rows of N SGIE objects at once (row ``i`` belongs to object
    ``owner[i]`` with crop ``objects.crop_rects[owner[i]]``): ``(Detections in frame pixels, owner)``,
    each object's rows bit for bit its per-object call (the same float32 / float64 operations per row;
    the object filters are row-wise)."""
    if dets.space != "network":
        raise ValueError(f"scale nvinfer: expects detections in network pixels, got {dets.space!r}")
    ctx = objects.context
    m = crop_mappings(
        objects.crop_rects,
        ctx.network_size,
        _geometry_flag(maintain_aspect_ratio, ctx, "maintain_aspect_ratio"),
        _geometry_flag(symmetric_padding, ctx, "symmetric_padding"),
    )
    owner = np.asarray(owner, np.int64)
    offset, ratio = m.offset[owner], m.ratio[owner]
    b = dets.boxes
    rects = np.empty_like(b)
    np.divide(b[:, :2] - offset, ratio, out=rects[:, :2], casting="unsafe")
    np.divide(b[:, 2:] - b[:, :2], ratio, out=rects[:, 2:], casting="unsafe")
    if deepstream_version >= CLAMP_NEGATIVE_SINCE:
        rects[:, :2] = np.where(rects[:, :2] < 0, np.float32(0), rects[:, :2])
    d = dets
    if filters is not None:
        keep, rects = nvinfer_object_filter(rects, dets.class_ids, ctx.frame_size, **filters)
        d, owner = dets[keep], owner[keep]
        offset, ratio = offset[keep], ratio[keep]
    kp = None
    if d.keypoints is not None:
        o, ro = offset.astype(np.float64), m.rect_origin[owner]
        kp = d.keypoints.astype(np.float64)
        kp[..., 0] = (kp[..., 0] - o[:, :1]) / ratio[:, :1] + ro[:, :1]
        kp[..., 1] = (kp[..., 1] - o[:, 1:]) / ratio[:, 1:] + ro[:, 1:]
    return _with_boxes(d, rects_to_boxes(rects, m.origin[owner]), kp, "frame"), owner


def _scale_nvinfer_objects(
    dets: Detections,
    owner: np.ndarray,
    objects: ObjectBatch,
    *,
    maintain_aspect_ratio: bool | None = None,
    symmetric_padding: bool | None = None,
    deepstream_version: float = 7.1,
) -> tuple[Detections, np.ndarray]:
    """``scale:nvinfer`` batched over objects: :func:`nvinfer_attach_objects` without filters."""
    return nvinfer_attach_objects(
        dets,
        owner,
        objects,
        maintain_aspect_ratio=maintain_aspect_ratio,
        symmetric_padding=symmetric_padding,
        deepstream_version=deepstream_version,
    )


def _with_boxes(
    d: Detections, boxes: np.ndarray, keypoints: np.ndarray | None, space: str
) -> Detections:
    return Detections(
        boxes,
        d.scores,
        d.class_ids,
        space,
        keypoints=keypoints,
        vectors=d.vectors,
        masks=d.masks,
        object_ids=d.object_ids,
    )


@batch_over_objects(_scale_nvinfer_objects)
@register("scale", "nvinfer")
def scale_nvinfer(
    dets: Detections,
    ctx: StepContext,
    *,
    maintain_aspect_ratio: bool | None = None,
    symmetric_padding: bool | None = None,
    deepstream_version: float = 7.1,
) -> Detections:
    """nvinfer's mapping back to frame pixels (:func:`nvinfer_attach` without filters): ``(v - offset) /
    ratio`` for the even-rounded crop, DeepStream >= 9 clamps negative left/top to 0 (width/height
    kept; crop-relative for an SGIE), plus the crop origin's *unrounded* left/top (SGIE parent rect).

    ``deepstream_version``: the DeepStream release whose nvinfer ran (6.2 and 7.1 do not clamp, 9.x
    does). Geometry flags default to the context's (the recording's nvinfer config)."""
    return nvinfer_attach(
        dets,
        ctx,
        maintain_aspect_ratio=maintain_aspect_ratio,
        symmetric_padding=symmetric_padding,
        deepstream_version=deepstream_version,
    )


def ultralytics_letterbox(
    network_size: tuple[int, int], frame_size: tuple[int, int], pad: str = "ultralytics"
) -> tuple[float, float, float, float]:
    """``(gain_x, gain_y, pad_x, pad_y)`` of an Ultralytics-style centred letterbox of a frame into the
    network input: ``gain = min(Wn/Wf, Hn/Hf)``.

    * ``pad="ultralytics"``: as Ultralytics' ``LetterBox`` / ``scale_boxes``: the resized size is
      ``round(Wf * gain)`` per side (so the per-axis gains are ``round(Wf * gain) / Wf``), the image is
      placed at the integer ``round((Wn - w) / 2 - 0.1)``.
    * ``pad="float"``: one gain for both axes and the float ``(Wn - Wf * gain) / 2`` (how the
      DeepStream-Yolo-Pose app maps keypoints back).
    """
    (nw, nh), (fw, fh) = network_size, frame_size
    if min(nw, nh, fw, fh) <= 0:
        raise ValueError(
            f"network size {network_size} and frame size {frame_size} must be positive"
        )
    gain = min(nw / fw, nh / fh)
    if pad == "float":
        return gain, gain, (nw - fw * gain) / 2, (nh - fh * gain) / 2
    if pad != "ultralytics":
        raise ValueError(f"pad must be 'ultralytics' or 'float', got {pad!r}")
    new_w, new_h = max(round(fw * gain), 1), max(round(fh * gain), 1)
    return new_w / fw, new_h / fh, round((nw - new_w) / 2 - 0.1), round((nh - new_h) / 2 - 0.1)


@register("scale", "ultralytics")
def scale_ultralytics(
    dets: Detections, ctx: StepContext, *, clip: bool = True, pad: str = "ultralytics"
) -> Detections:
    """Undo an Ultralytics-style letterbox (for models run outside DeepStream): boxes
    ``(v - pad) / gain`` with :func:`ultralytics_letterbox`, then clipped to the frame (``clip``).
    Keypoints are mapped the same way (not clipped)."""
    if dets.space != "network":
        raise ValueError(
            f"scale ultralytics: expects detections in network pixels, got {dets.space!r}"
        )
    gx, gy, px, py = ultralytics_letterbox(ctx.network_size, ctx.frame_size, pad)
    fw, fh = ctx.frame_size
    b = (dets.boxes.astype(np.float64) - [px, py, px, py]) / [gx, gy, gx, gy]
    if clip:
        b = np.clip(b, 0, [fw, fh, fw, fh])
    kp = None
    if dets.keypoints is not None:
        kp = dets.keypoints.astype(np.float64)
        kp[..., 0] = (kp[..., 0] - px) / gx
        kp[..., 1] = (kp[..., 1] - py) / gy
    return _with_boxes(dets, b.astype(np.float32), kp, "frame")


def _scale_none_objects(
    dets: Detections, owner: np.ndarray, objects: ObjectBatch
) -> tuple[Detections, np.ndarray]:
    return dets, owner


@batch_over_objects(_scale_none_objects)
@register("scale", "none")
def scale_none(dets: Detections, ctx: StepContext) -> Detections:
    """Keep network pixels (for inspecting raw decoder output)."""
    return dets
