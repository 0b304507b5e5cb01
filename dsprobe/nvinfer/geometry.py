"""nvinfer's crop / letterbox geometry, shared by preprocessing (reference recorder) and box scaling.

Exactly as ``get_converted_buffer`` and ``attach_metadata_detector`` in gst-nvinfer
(``docs/nvinfer-semantics.md`` §1.1, §1.2, §1.6):

* the crop rect is even-rounded: left/top rounded **up** to even, width/height **down** to even,
  after C truncation to unsigned int;
* with maintain-aspect-ratio the scaled size is truncated, padding goes right/bottom unless
  symmetric-padding=1 (then ``offset = (W - dw) // 2``, odd pixel right/bottom);
* boxes map back with ``(v - offset) / ratio``; the even-rounded crop origin is **not** added back.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Rect = tuple[float, float, float, float]


@dataclass(frozen=True)
class CropTransform:
    """How one crop of a frame was placed into the network input.

    * ``src_left, src_top, src_width, src_height``: the even-rounded crop, frame pixels (ints).
    * ``dst_width, dst_height``: size of the scaled crop inside the network input, network pixels.
    * ``offset_left, offset_top``: where the scaled crop starts in the network input (padding).
    * ``ratio_x, ratio_y``: ``dst / src`` (float64), what maps boxes back.
    * ``network_width, network_height``: the network input size.
    """

    src_left: int
    src_top: int
    src_width: int
    src_height: int
    dst_width: int
    dst_height: int
    offset_left: int
    offset_top: int
    ratio_x: float
    ratio_y: float
    network_width: int
    network_height: int


def round_up_even(v: int) -> int:
    return (v + 1) & ~1


def round_down_even(v: int) -> int:
    return v & ~1


def nvinfer_transform(
    crop_rect: Rect,
    network_size: tuple[int, int],
    *,
    maintain_aspect_ratio: bool = False,
    symmetric_padding: bool = False,
) -> CropTransform:
    """The transform nvinfer applies to ``crop_rect`` ``(left, top, width, height)`` in frame pixels.

    For a PGIE ``crop_rect`` is the whole muxer frame ``(0, 0, W, H)``; for an SGIE the parent
    object's ``rect_params`` (floats). ``network_size`` is ``(width, height)``.
    """
    left, top, width, height = (max(0, int(v)) for v in crop_rect)  # C (guint) truncation
    src_left, src_top = round_up_even(left), round_up_even(top)
    src_w, src_h = round_down_even(width), round_down_even(height)
    if src_w <= 0 or src_h <= 0:
        raise ValueError(
            f"crop rect {crop_rect} is smaller than 2x2 pixels after nvinfer's even rounding"
        )
    net_w, net_h = int(network_size[0]), int(network_size[1])
    if net_w <= 0 or net_h <= 0:
        raise ValueError(f"network size {network_size} must be positive (width, height)")
    if maintain_aspect_ratio:
        hdest = net_w * src_h / src_w
        if hdest <= net_h:
            dw, dh = net_w, int(hdest)
        else:
            dw, dh = int(net_h * src_w / src_h), net_h
    else:
        dw, dh = net_w, net_h
    if maintain_aspect_ratio and symmetric_padding:
        off_l, off_t = (net_w - dw) // 2, (net_h - dh) // 2
    else:
        off_l = off_t = 0
    return CropTransform(
        src_left, src_top, src_w, src_h, dw, dh, off_l, off_t, dw / src_w, dh / src_h, net_w, net_h
    )


def network_to_crop(boxes: np.ndarray, t: CropTransform) -> np.ndarray:
    """Map ``(N, 4)`` x1,y1,x2,y2 boxes from network pixels to crop-relative frame pixels.

    nvinfer computes ``left = (x1 - offset_left) / ratio_x`` and ``width = (x2 - x1) / ratio_x``;
    this returns ``x1, y1, x1 + width, y1 + height`` in float64. Add the crop origin (for an SGIE the
    parent's *unrounded* left/top; 0 for a PGIE) to get frame pixels.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    left = (b[:, 0] - t.offset_left) / t.ratio_x
    top = (b[:, 1] - t.offset_top) / t.ratio_y
    width = (b[:, 2] - b[:, 0]) / t.ratio_x
    height = (b[:, 3] - b[:, 1]) / t.ratio_y
    return np.stack([left, top, left + width, top + height], axis=1)


def crop_to_network(boxes: np.ndarray, t: CropTransform) -> np.ndarray:
    """Inverse of :func:`network_to_crop`: crop-relative frame pixels to network pixels."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x1 = b[:, 0] * t.ratio_x + t.offset_left
    y1 = b[:, 1] * t.ratio_y + t.offset_top
    return np.stack(
        [x1, y1, x1 + (b[:, 2] - b[:, 0]) * t.ratio_x, y1 + (b[:, 3] - b[:, 1]) * t.ratio_y], axis=1
    )


def muxer_content_size(source: tuple[int, int], muxer: tuple[int, int]) -> tuple[int, int]:
    """(width, height) in pixels that a ``source`` picture covers inside the nvstreammux frame when the
    muxer keeps the aspect ratio (``enable-padding=1``): one scale for both axes, sizes truncated, the
    picture at the top-left and the rest padded."""
    scale = min(muxer[0] / source[0], muxer[1] / source[1])
    return int(source[0] * scale), int(source[1] * scale)
