"""Image downscaling, encoding and decoding for recordings (encoding runs on the writer thread).

Pillow is imported lazily: raw images need no Pillow; JPEG/PNG do (``pip install pillow``).
"""

from __future__ import annotations

import io

import numpy as np


def downscale(image: np.ndarray, max_size: int) -> np.ndarray:
    """Downscale so the longest side is <= ``max_size`` pixels, keeping the aspect ratio.

    Uses Pillow's area-averaging resize when Pillow is installed, else nearest neighbour.
    """
    h, w = image.shape[:2]
    scale = max(h, w) / max_size if max_size else 1.0
    if scale <= 1.0:
        return image
    nh, nw = max(1, int(round(h / scale))), max(1, int(round(w / scale)))
    try:
        from PIL import Image
    except ImportError:
        ys = np.minimum(((np.arange(nh) + 0.5) * h / nh).astype(np.intp), h - 1)
        xs = np.minimum(((np.arange(nw) + 0.5) * w / nw).astype(np.intp), w - 1)
        return image[ys[:, None], xs[None, :]]
    return np.asarray(Image.fromarray(to_rgb(image)).resize((nw, nh), Image.BOX))


def to_rgb(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 from RGB, RGBA (alpha dropped), HxWx1 or HxW gray."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = a[:, :, :3]
    return np.ascontiguousarray(a, dtype=np.uint8)


def _pillow(why: str):
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(
            f"{why} needs Pillow: pip install pillow (or pip install dsprobe[onnx])"
        ) from exc
    return Image


def encode(image: np.ndarray, encoding: str, quality: int = 90) -> bytes:
    """Encode an HxWx3 uint8 RGB array as JPEG (``quality``) or PNG (fast compression) bytes."""
    if encoding not in ("jpeg", "png"):
        raise ValueError(f"unknown image encoding {encoding!r}; use 'jpeg', 'png' or 'raw'")
    Image = _pillow("encoding recording images as JPEG/PNG")
    buf = io.BytesIO()
    if encoding == "jpeg":
        Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    else:
        Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def decode(data: bytes | np.ndarray, encoding: str) -> np.ndarray:
    """Stored image (raw array, or JPEG/PNG bytes) -> HxWx3 uint8 RGB."""
    if encoding == "raw":
        return to_rgb(np.asarray(data, dtype=np.uint8))
    Image = _pillow("reading JPEG/PNG images from a recording")
    with Image.open(io.BytesIO(bytes(data))) as im:
        return np.asarray(im.convert("RGB"))
