"""Image downscaling and encoding for recordings (runs on the writer thread, never the probe's)."""

from __future__ import annotations

import io

import numpy as np


def downscale(image: np.ndarray, max_size: int) -> np.ndarray:
    """Nearest-neighbour downscale so the longest side is <= ``max_size`` (keeps aspect ratio)."""
    h, w = image.shape[:2]
    scale = max(h, w) / max_size if max_size else 1.0
    if scale <= 1.0:
        return image
    nh, nw = max(1, int(round(h / scale))), max(1, int(round(w / scale)))
    ys = np.minimum(((np.arange(nh) + 0.5) * h / nh).astype(np.intp), h - 1)
    xs = np.minimum(((np.arange(nw) + 0.5) * w / nw).astype(np.intp), w - 1)
    return image[ys[:, None], xs[None, :]]


def to_rgb(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 from RGB, RGBA (alpha dropped) or gray."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.shape[2] == 4:
        a = a[:, :, :3]
    return np.ascontiguousarray(a, dtype=np.uint8)


def encode(image: np.ndarray, encoding: str, quality: int = 90) -> bytes:
    """Encode an HxWx3 uint8 RGB array as JPEG or PNG bytes (needs Pillow)."""
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - environment dependent
        raise ImportError("encoding recording images needs Pillow: pip install pillow "
                          "(or Recorder(image_format='raw'))") from exc
    buf = io.BytesIO()
    if encoding == "jpeg":
        Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    elif encoding == "png":
        Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    else:
        raise ValueError(f"unknown image encoding {encoding!r}; use 'jpeg', 'png' or 'raw'")
    return buf.getvalue()


def decode(data: bytes | np.ndarray, encoding: str, shape: tuple[int, int, int]) -> np.ndarray:
    """Decode stored image bytes back into an HxWxC uint8 array."""
    if encoding == "raw":
        return np.frombuffer(bytes(data), dtype=np.uint8).reshape(shape)
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover
        raise ImportError("reading JPEG/PNG images from a recording needs Pillow: pip install pillow") from exc
    return np.asarray(Image.open(io.BytesIO(bytes(data))).convert("RGB"))
