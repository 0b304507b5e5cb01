"""nvinfer's preprocessing in numpy (docs/nvinfer-semantics.md §1, §7).

Order, as nvinfer: frame at nvstreammux size -> even-rounded crop -> resize into the (letterboxed)
network rectangle, **quantised to uint8** -> zero padding -> ``net-scale-factor * (x - mean)`` in
network channel order (``offsets`` or a ``mean-file``) -> NCHW (default) or NHWC.

Resampling (NvBufSurfTransform is closed source; these are our documented choices, see
docs/reference-recorder.md):

* nearest (``scaling-filter`` 0 and 6 = Default): destination pixel ``d`` samples source pixel
  ``floor((d + 0.5) * src / dst)``, the pixel-centre convention NPP documents for its resize
  (``src = (d + 0.5) / f - 0.5``, rounded to the nearest pixel). OpenCV's ``INTER_NEAREST``
  (``floor(d * src / dst)``) differs by up to one source pixel.
* bilinear (1): the same pixel centres, neighbours clamped at the edges, rounded to nearest uint8.
* 2..5 (cubic/5-tap, super/10-tap, lanczos/smart, nicest) have no public definition: bilinear is
  used for them and the recorder says so once.

Index and weight tables are cached per (source, destination) size, so a resize is one gather (nearest)
or two gathers and a blend (bilinear) over the whole image.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from dsprobe.nvinfer.config import Preprocessing
from dsprobe.nvinfer.geometry import CropTransform, muxer_content_size, nvinfer_transform

Rect = tuple[float, float, float, float]

NEAREST_FILTERS = (0, 6)  # 0 Nearest, 6 Default (= nearest on GPU and VIC)
BILINEAR_FILTERS = (1,)
FILTER_NAMES = {
    0: "nearest",
    1: "bilinear",
    2: "cubic (GPU) / 5-tap (VIC)",
    3: "super (GPU) / 10-tap (VIC)",
    4: "lanczos (GPU) / smart (VIC)",
    5: "nicest (VIC)",
    6: "default (nearest)",
}
# Luma weights (BT.601) for an RGB picture given to a GRAY model.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def exact_filter(scaling_filter: int) -> bool:
    """True when ``scaling-filter`` is reproduced exactly (nearest or bilinear), False when bilinear
    stands in for it."""
    return scaling_filter in NEAREST_FILTERS or scaling_filter in BILINEAR_FILTERS


@lru_cache(maxsize=128)
def nearest_index(src: int, dst: int) -> np.ndarray:
    """Source pixel sampled by each of ``dst`` destination pixels (pixel-centre convention)."""
    return np.minimum(((np.arange(dst) + 0.5) * src / dst).astype(np.intp), src - 1)


@lru_cache(maxsize=128)
def _linear_weights(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pos = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
    i0 = np.floor(pos).astype(np.intp)
    i1 = np.minimum(i0 + 1, src - 1)
    return i0, i1, (pos - i0).astype(np.float32)


def resize(image: np.ndarray, width: int, height: int, scaling_filter: int = 0) -> np.ndarray:
    """Resize an ``(H, W, C)`` uint8 image to ``width`` x ``height`` with nvinfer's ``scaling-filter``."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    if scaling_filter in NEAREST_FILTERS:
        # two 1-D takes: the same pixels as image[yi[:, None], xi[None, :]], about 3x faster
        return image.take(nearest_index(h, height), axis=0).take(nearest_index(w, width), axis=1)
    y0, y1, wy = _linear_weights(h, height)
    x0, x1, wx = _linear_weights(w, width)
    img = image.astype(np.float32)
    rows = img[y0] * (1 - wy)[:, None, None] + img[y1] * wy[:, None, None]
    out = rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def muxer_scale(
    frame: np.ndarray,
    width: int,
    height: int,
    *,
    keep_aspect: bool = False,
    scaling_filter: int = 0,
) -> np.ndarray:
    """What nvstreammux does to a decoded frame: scale to the muxer ``width`` x ``height``, stretched
    (default) or, with ``keep_aspect`` (``enable-padding=1``), letterboxed at the top-left with black.
    ``scaling_filter`` takes nvstreammux's ``interpolation-method`` values (same table as nvinfer)."""
    h, w = frame.shape[:2]
    if not keep_aspect:
        return resize(frame, width, height, scaling_filter)
    dw, dh = muxer_content_size((w, h), (width, height))
    out = np.zeros((height, width, frame.shape[2]), np.uint8)
    out[:dh, :dw] = resize(frame, dw, dh, scaling_filter)
    return out


def clip_rect(rect: Rect, frame_size: tuple[int, int]) -> tuple[Rect, bool]:
    """``rect`` (left, top, width, height) intersected with the frame, and whether it had to change."""
    fw, fh = frame_size
    left, top, width, height = (float(v) for v in rect)
    x1, y1 = max(0.0, left), max(0.0, top)
    x2, y2 = min(float(fw), left + width), min(float(fh), top + height)
    clipped = (x1, y1, max(0.0, x2 - x1), max(0.0, y2 - y1))
    return clipped, clipped != (left, top, width, height)


def network_image(
    frame: np.ndarray,
    pre: Preprocessing,
    crop_rect: Rect | None = None,
    network_size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, CropTransform]:
    """The uint8 ``(net_h, net_w, C)`` picture nvinfer builds (crop, resize, zero padding).

    ``frame`` is the nvstreammux-size frame (RGB, or luma for GRAY models); ``crop_rect`` (left,
    top, width, height) in frame pixels defaults to the whole frame (PGIE); an SGIE passes the
    object's rect, which must lie inside the frame (see :func:`clip_rect`).
    """
    fh, fw = frame.shape[:2]
    net_w, net_h = network_size or pre.network_size
    t = nvinfer_transform(
        crop_rect or (0, 0, fw, fh),
        (net_w, net_h),
        maintain_aspect_ratio=pre.maintain_aspect_ratio,
        symmetric_padding=pre.symmetric_padding,
    )
    if t.src_left + t.src_width > fw or t.src_top + t.src_height > fh:
        raise ValueError(
            f"crop {crop_rect} (even-rounded to {t.src_left},{t.src_top} {t.src_width}x{t.src_height}) "
            f"lies outside the {fw}x{fh} frame"
        )
    crop = frame[t.src_top : t.src_top + t.src_height, t.src_left : t.src_left + t.src_width]
    canvas = np.zeros((net_h, net_w, frame.shape[2]), np.uint8)
    canvas[
        t.offset_top : t.offset_top + t.dst_height, t.offset_left : t.offset_left + t.dst_width
    ] = resize(crop, t.dst_width, t.dst_height, pre.scaling_filter)
    return canvas, t


def preprocess_source(
    source: np.ndarray,
    muxer: tuple[int, int],
    pre: Preprocessing,
    *,
    keep_aspect: bool = False,
    muxer_filter: int = 0,
    network_size: tuple[int, int] | None = None,
    mean: np.ndarray | None = None,
) -> tuple[np.ndarray, CropTransform]:
    """:func:`preprocess` of the nvstreammux-scaled decoded ``source`` frame (PGIE, full frame).

    When both scalings are nearest-neighbour (the defaults) the two index maps are composed
    (network pixel -> muxer pixel -> source pixel), so the muxer-size frame is never built; the result
    is identical to ``preprocess(muxer_scale(source, ...), ...)``."""
    mw, mh = muxer
    if (
        keep_aspect
        or pre.scaling_filter not in NEAREST_FILTERS
        or muxer_filter not in NEAREST_FILTERS
    ):
        frame = muxer_scale(source, mw, mh, keep_aspect=keep_aspect, scaling_filter=muxer_filter)
        return preprocess(frame, pre, network_size=network_size, mean=mean)
    net_w, net_h = network_size or pre.network_size
    t = nvinfer_transform(
        (0, 0, mw, mh),
        (net_w, net_h),
        maintain_aspect_ratio=pre.maintain_aspect_ratio,
        symmetric_padding=pre.symmetric_padding,
    )
    h, w = source.shape[:2]
    ys = t.src_top + nearest_index(t.src_height, t.dst_height)  # network row -> muxer row
    xs = t.src_left + nearest_index(t.src_width, t.dst_width)
    if (w, h) != (mw, mh):
        ys, xs = nearest_index(h, mh)[ys], nearest_index(w, mw)[xs]  # muxer -> source
    canvas = np.zeros((net_h, net_w, source.shape[2]), np.uint8)
    canvas[
        t.offset_top : t.offset_top + t.dst_height, t.offset_left : t.offset_left + t.dst_width
    ] = source[ys[:, None], xs[None, :]]
    return normalize(canvas, pre, mean), t


def load_mean_file(path: str | Path, width: int, height: int) -> np.ndarray:
    """nvinfer ``mean-file``: a binary (P6/P5) or text (P3/P2) PPM/PGM of exactly the network size,
    read in HWC order, byte position = network channel. Returns float32 ``(H, W, C)``."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ValueError(f"{p}: cannot read mean-file ({exc})") from None
    magic = data[:2].decode("latin-1")
    if magic not in ("P2", "P3", "P5", "P6"):
        raise ValueError(f"{p}: mean-file must be a PPM/PGM (P2/P3/P5/P6), found magic {magic!r}")
    tokens: list[bytes] = []
    pos = 0
    while len(tokens) < 4:  # magic, width, height, maxval (comments skipped)
        while pos < len(data) and data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.find(b"\n", pos) + 1 or len(data)
            continue
        end = pos
        while end < len(data) and not data[end : end + 1].isspace():
            end += 1
        if end == pos:
            raise ValueError(f"{p}: mean-file is not a PPM/PGM (truncated header)")
        tokens.append(data[pos:end])
        pos = end
    w, h = int(tokens[1]), int(tokens[2])
    if (w, h) != (width, height):
        raise ValueError(f"{p}: mean-file is {w}x{h} but the network input is {width}x{height}")
    c = 3 if magic in ("P3", "P6") else 1
    if magic in ("P5", "P6"):
        values = np.frombuffer(data, np.uint8, count=w * h * c, offset=pos + 1)
    else:
        values = np.array(data[pos:].split()[: w * h * c], dtype=np.float32)
    if values.size != w * h * c:
        raise ValueError(f"{p}: mean-file holds {values.size} values, expected {w}x{h}x{c}")
    return values.astype(np.float32).reshape(h, w, c)


def normalize(image: np.ndarray, pre: Preprocessing, mean: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``(H, W, C)`` network picture -> float32 network tensor (no batch axis), NCHW or NHWC.

    ``mean`` (from :func:`load_mean_file`) replaces ``offsets`` when given, as in nvinfer.
    """
    if pre.model_color_format == 2:  # GRAY: the luma buffer, one channel
        x = (
            image.astype(np.float32)
            if image.shape[2] == 1
            else np.rint(image[..., :3].astype(np.float32) @ _LUMA)[..., None]
        )
    elif pre.model_color_format == 1:  # BGR: channel swap in the conversion kernel
        x = image[..., 2::-1].astype(np.float32)
    else:
        x = image[..., :3].astype(np.float32)
    if pre.net_scale_factor > 0:
        if mean is not None:
            if mean.shape != x.shape:
                raise ValueError(
                    f"mean-file is {mean.shape[1]}x{mean.shape[0]}x{mean.shape[2]} (WxHxC), the network "
                    f"input {x.shape[1]}x{x.shape[0]}x{x.shape[2]}"
                )
            x = x - mean
        elif pre.offsets:
            if len(pre.offsets) != x.shape[2]:
                raise ValueError(
                    f"offsets has {len(pre.offsets)} values but the network has {x.shape[2]} channels"
                )
            x = x - np.asarray(pre.offsets, np.float32)
        x = x * np.float32(pre.net_scale_factor)
    return np.ascontiguousarray(x if pre.network_input_order == 1 else x.transpose(2, 0, 1))


def preprocess(
    frame: np.ndarray,
    pre: Preprocessing,
    crop_rect: Rect | None = None,
    network_size: tuple[int, int] | None = None,
    mean: np.ndarray | None = None,
) -> tuple[np.ndarray, CropTransform]:
    """Frame (muxer size, uint8) -> (network tensor float32 without batch axis, CropTransform)."""
    img, t = network_image(frame, pre, crop_rect, network_size)
    return normalize(img, pre, mean), t
