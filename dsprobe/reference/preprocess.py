"""nvinfer's preprocessing in numpy (shared/reference/nvinfer_semantics.md §1, §7).

Order, as nvinfer: frame at nvstreammux size -> even-rounded crop -> resize into the (letterboxed)
network rectangle, **quantised to uint8** -> zero padding -> ``net-scale-factor * (x - offset_c)`` in
network channel order -> NCHW (default) or NHWC.

Resampling conventions (NvBufSurfTransform is closed source, so these are our documented choice):
nearest samples source pixel ``floor((d + 0.5) * src / dst)`` (pixel centres); bilinear is
half-pixel-centre bilinear with edge clamping, rounded to nearest. ``dsprobe compare`` against a
device recording shows how far a given device is from this.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from dsprobe.geometry import CropTransform, nvinfer_transform
from dsprobe.nvinfer_config import Preprocessing

NEAREST_FILTERS = (0, 6)   # 0 Nearest, 6 Default (= nearest on GPU and VIC)
BILINEAR_FILTERS = (1,)
# 2..5 (cubic, super, lanczos, nicest) have no exact public definition: we use bilinear for them.


@lru_cache(maxsize=64)
def _nearest_index(src: int, dst: int) -> np.ndarray:
    return np.minimum(((np.arange(dst) + 0.5) * src / dst).astype(np.intp), src - 1)


@lru_cache(maxsize=64)
def _linear_weights(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
    i0 = np.floor(pos).astype(np.intp)
    i1 = np.minimum(i0 + 1, src - 1)
    return i0, i1, (pos - i0).astype(np.float32)


def resize(image: np.ndarray, width: int, height: int, scaling_filter: int = 0) -> np.ndarray:
    """Resize an HxWxC uint8 image to ``width`` x ``height`` with nvinfer's ``scaling-filter`` value."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    if scaling_filter in NEAREST_FILTERS:
        return image[_nearest_index(h, height)[:, None], _nearest_index(w, width)[None, :]]
    y0, y1, wy = _linear_weights(h, height)
    x0, x1, wx = _linear_weights(w, width)
    img = image.astype(np.float32)
    top = img[y0] * (1 - wy)[:, None, None] + img[y1] * wy[:, None, None]
    out = top[:, x0] * (1 - wx)[None, :, None] + top[:, x1] * wx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def muxer_scale(frame: np.ndarray, width: int, height: int, *, keep_aspect: bool = False,
                scaling_filter: int = 0) -> np.ndarray:
    """What nvstreammux does to a decoded frame: scale to the muxer size (optionally letterboxed
    top-left with black, like ``enable-padding=1``)."""
    h, w = frame.shape[:2]
    if not keep_aspect:
        return resize(frame, width, height, scaling_filter)
    scale = min(width / w, height / h)
    dw, dh = int(w * scale), int(h * scale)
    out = np.zeros((height, width, frame.shape[2]), np.uint8)
    out[:dh, :dw] = resize(frame, dw, dh, scaling_filter)
    return out


def network_image(frame: np.ndarray, pre: Preprocessing, crop_rect: tuple[float, float, float, float] | None = None,
                  network_size: tuple[int, int] | None = None) -> tuple[np.ndarray, CropTransform]:
    """The uint8 HxWx3 network-size picture nvinfer builds (crop, resize, zero padding), RGB order.

    ``frame`` is the nvstreammux-size RGB frame; ``crop_rect`` (left, top, width, height) in frame
    pixels defaults to the whole frame (PGIE); an SGIE passes the object's rect.
    """
    fh, fw = frame.shape[:2]
    net_w, net_h = network_size or pre.network_size
    t = nvinfer_transform(crop_rect or (0, 0, fw, fh), (net_w, net_h),
                          maintain_aspect_ratio=pre.maintain_aspect_ratio, symmetric_padding=pre.symmetric_padding)
    crop = frame[t.src_top:t.src_top + t.src_height, t.src_left:t.src_left + t.src_width]
    if crop.shape[0] != t.src_height or crop.shape[1] != t.src_width:
        raise ValueError(f"crop {crop_rect} lies outside the {fw}x{fh} frame")
    canvas = np.zeros((net_h, net_w, frame.shape[2]), np.uint8)
    canvas[t.offset_top:t.offset_top + t.dst_height, t.offset_left:t.offset_left + t.dst_width] = \
        resize(crop, t.dst_width, t.dst_height, pre.scaling_filter)
    return canvas, t


def normalize(image: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """uint8 HxWx3 RGB network picture -> float32 network tensor (no batch axis), NCHW or NHWC."""
    if pre.model_color_format == 2:  # GRAY: luma of the RGB picture, one channel
        x = np.rint(image[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    elif pre.model_color_format == 1:  # BGR: channel swap in the conversion kernel
        x = image[..., 2::-1].astype(np.float32)
    else:
        x = image[..., :3].astype(np.float32)
    if pre.net_scale_factor > 0:
        if pre.offsets:
            if len(pre.offsets) != x.shape[2]:
                raise ValueError(f"offsets has {len(pre.offsets)} values but the network has {x.shape[2]} channels")
            x = x - np.asarray(pre.offsets, np.float32)
        x = x * np.float32(pre.net_scale_factor)
    return np.ascontiguousarray(x if pre.network_input_order == 1 else x.transpose(2, 0, 1))


def preprocess(frame: np.ndarray, pre: Preprocessing, crop_rect: tuple[float, float, float, float] | None = None,
               network_size: tuple[int, int] | None = None) -> tuple[np.ndarray, CropTransform]:
    """Frame (muxer size, RGB uint8) -> (network tensor float32 without batch axis, CropTransform)."""
    img, t = network_image(frame, pre, crop_rect, network_size)
    return normalize(img, pre), t


def preprocess_source(source: np.ndarray, muxer: tuple[int, int], pre: Preprocessing, *, keep_aspect: bool = False,
                      network_size: tuple[int, int] | None = None) -> tuple[np.ndarray, CropTransform]:
    """:func:`preprocess` of the nvstreammux-scaled ``source`` frame (PGIE, full frame).

    When both scalings are nearest-neighbour (the defaults) the two index maps are composed, so the
    muxer-size frame is never built; the result is identical to ``preprocess(muxer_scale(...))``."""
    mw, mh = muxer
    if keep_aspect or pre.scaling_filter not in NEAREST_FILTERS:
        return preprocess(muxer_scale(source, mw, mh, keep_aspect=keep_aspect), pre, network_size=network_size)
    net_w, net_h = network_size or pre.network_size
    t = nvinfer_transform((0, 0, mw, mh), (net_w, net_h), maintain_aspect_ratio=pre.maintain_aspect_ratio,
                          symmetric_padding=pre.symmetric_padding)
    h, w = source.shape[:2]
    ys = t.src_top + _nearest_index(t.src_height, t.dst_height)    # network row -> muxer row
    xs = t.src_left + _nearest_index(t.src_width, t.dst_width)
    if (w, h) != (mw, mh):
        ys, xs = _nearest_index(h, mh)[ys], _nearest_index(w, mw)[xs]  # muxer -> source
    canvas = np.zeros((net_h, net_w, source.shape[2]), np.uint8)
    canvas[t.offset_top:t.offset_top + t.dst_height, t.offset_left:t.offset_left + t.dst_width] = \
        source[ys[:, None], xs[None, :]]
    return normalize(canvas, pre), t
