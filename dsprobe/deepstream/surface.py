"""Frame pixels out of a batched NvBufSurface (docs/pyds-notes.md §3): map, copy, unmap.

``get_nvds_buf_surface(hash(buf), batch_id)`` gives an (H, W, 4) RGBA (or RGB) uint8 **view** with
strides ``(pitch, C, 1)``: not contiguous, valid only inside the probe, and on Jetson mapped until
``unmap_nvds_buf_surface``. Everything returned here is an owned, C-contiguous (H, W, C) copy made by
strided subsampling (nearest pixel, no filtering), cheap enough for the streaming thread; the
Recorder drops alpha and encodes JPEG/PNG on its own thread.
"""

from __future__ import annotations

import math
import os
import platform
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import numpy as np

from dsprobe.records import Rect

#: The fix to print when the probed surface is not RGBA/RGB.
RGBA_CAPS_FIX = (
    'add "nvvideoconvert ! capsfilter caps=video/x-raw(memory:NVMM),format=RGBA" before the probed '
    "pad (and on dGPU set nvbuf-memory-type=3 (CUDA unified) on nvstreammux/nvvideoconvert)"
)


#: files that exist on Jetson (L4T) and not on dGPU / SBSA hosts; any one of them is enough
TEGRA_MARKERS = (
    "/etc/nv_tegra_release",
    "/sys/module/tegra_fuse",
    "/sys/devices/soc0/family",  # "Tegra" on L4T
    "/proc/device-tree/compatible",  # contains "nvidia,tegra"
)


def is_jetson(root: str = "/") -> bool:
    """Integrated GPU (Jetson): aarch64 with any Tegra marker (``/etc/nv_tegra_release`` alone is
    missing on some installs and in containers that do not mount it; SBSA servers are aarch64 too).
    NVIDIA's samples ask CUDA (``platform_info.py``: device property ``integrated``); dsprobe does
    not import CUDA, and the probe no longer depends on this answer for unmapping (it always
    unmaps), only for whether dGPU memory rules apply."""
    if platform.machine() != "aarch64":
        return False
    for marker in TEGRA_MARKERS:
        path = os.path.join(root, marker.lstrip("/"))
        if not os.path.exists(path):
            continue
        if marker.endswith(("family", "compatible")):
            try:
                with open(path, "rb") as fh:
                    if b"tegra" not in fh.read(4096).lower():
                        continue
            except OSError:
                continue
        return True
    return False


def subsample_step(height: int, width: int, max_size: int) -> int:
    """Integer stride that brings the longest side to ``<= max_size`` (0 or less: no downscale)."""
    if max_size <= 0:
        return 1
    return max(1, math.ceil(max(height, width) / max_size))


#: ``alloc(shape, dtype)``: where to copy (a recorder's ``frame_memory``), None: a fresh array
Alloc = Callable[[tuple, Any], "np.ndarray | None"]


def pixels_copy(pixels: np.ndarray, alloc: Alloc | None = None) -> np.ndarray:
    """Owned C-contiguous copy of a strided (H, W, C) uint8 view, channels as they are.

    RGBA is copied as packed 32-bit pixels: one strided copy of H*W elements, about 0.03 ms for
    640x360 instead of 1.2 ms for building RGB here (3-byte runs); the Recorder drops alpha on its
    own thread. Anything else (an RGB surface) is copied as is. ``alloc`` gives the array to copy
    into (None, or what it returns: a fresh one).
    """
    dst = alloc(pixels.shape, np.uint8) if alloc is not None else None
    if pixels.shape[2] == 4 and pixels.strides[2] == 1:
        try:
            packed = pixels.view(np.uint32)
            if dst is None:
                return packed.copy().view(np.uint8)
            np.copyto(dst.view(np.uint32), packed)
            return dst
        except ValueError:  # strides numpy cannot view as uint32
            pass
    if dst is None:
        return np.array(pixels, copy=True, order="C")
    np.copyto(dst, pixels)
    return dst


def downscaled_copy(surface: np.ndarray, max_size: int, alloc: Alloc | None = None) -> np.ndarray:
    """Owned copy (RGBA or RGB, as the surface) of a whole pitched surface, every ``step``-th pixel
    (nearest, no filtering) so the longest side is <= ``max_size`` (``alloc``: see
    :func:`pixels_copy`)."""
    step = subsample_step(surface.shape[0], surface.shape[1], max_size)
    return pixels_copy(surface[::step, ::step], alloc)


def crop_copy(
    surface: np.ndarray,
    rect: Rect,
    frame_size: tuple[int, int],
    max_size: int,
    alloc: Alloc | None = None,
) -> tuple[np.ndarray, Rect] | None:
    """Owned copy (RGBA or RGB) of the part of ``surface`` under ``rect`` and the rect it really covers.

    ``rect`` is (left, top, width, height) in frame pixels (the nvstreammux output, ``frame_size`` =
    (width, height)); the surface may have another size (a scaling nvvideoconvert), so the rect is
    scaled to it. The crop is the smallest whole-pixel box holding the rect, clipped to the surface,
    and subsampled to ``max_size``; the returned rect (frame pixels) is the area it covers.
    None when nothing of the rect is inside the frame. ``alloc``: see :func:`pixels_copy`.
    """
    sh, sw = surface.shape[:2]
    sx, sy = sw / frame_size[0], sh / frame_size[1]
    left, top, w, h = rect
    x0, y0 = max(0, math.floor(left * sx)), max(0, math.floor(top * sy))
    x1, y1 = min(sw, math.ceil((left + w) * sx)), min(sh, math.ceil((top + h) * sy))
    if x1 <= x0 or y1 <= y0:
        return None
    step = subsample_step(y1 - y0, x1 - x0, max_size)
    pixels = pixels_copy(surface[y0:y1:step, x0:x1:step], alloc)
    return pixels, (x0 / sx, y0 / sy, (x1 - x0) / sx, (y1 - y0) / sy)


class SurfaceReader:
    """Maps frames of a batch for reading; once disabled (a format pyds refuses, device memory, a
    tiler upstream) it yields None and says why once through ``warn(kind, message)``.

    The surface is always unmapped after use: ``unmap_nvds_buf_surface`` unmaps only what
    ``get_nvds_buf_surface`` mapped (Jetson) and is a no-op otherwise (``bindfunctions.cpp``), so
    platform detection cannot leak mappings (pyds < 1.1.6 has no unmap: skipped)."""

    def __init__(self, warn: Callable[[str, str], None]) -> None:
        self.enabled = True
        self._warn = warn

    def disable(self, kind: str, message: str) -> None:
        self.enabled = False
        self._warn(kind, message)

    @contextmanager
    def mapped(self, pyds: Any, buf_hash: int, batch_id: int) -> Iterator[np.ndarray | None]:
        """The surface view of frame ``batch_id`` (None if unavailable), unmapped on exit.
        Copy what you need inside the ``with``: the view is invalid after it."""
        if not self.enabled:
            yield None
            return
        try:
            view = pyds.get_nvds_buf_surface(buf_hash, batch_id)
        except RuntimeError as exc:  # pyds refuses anything but RGBA (and RGB from pyds 1.1.11)
            self.disable(
                "surface-format",
                f"cannot read frame pixels ({exc}); recording tensors without images. "
                f"To get images, {RGBA_CAPS_FIX}",
            )
            view = None
        if view is None:
            yield None
            return
        try:
            yield view
        finally:
            unmap = getattr(pyds, "unmap_nvds_buf_surface", None)
            if unmap is not None:
                unmap(buf_hash, batch_id)
