"""What the writer thread does to a frame before it is buffered: keep the selected layers and apply
the image policy (downscale, encode) (:class:`FramePreparer`)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from dsprobe.recording import images as imgs
from dsprobe.recording.options import RecorderOptions
from dsprobe.recording.schema import IMAGE_ENCODINGS
from dsprobe.recording.stats import RecorderStats
from dsprobe.recording.validate import InvalidFrame
from dsprobe.records import FrameRecord, ImageRecord


class FramePreparer:
    """Layer selection and image policy of one Recorder (runs on its writer thread)."""

    def __init__(self, options: RecorderOptions, stats: RecorderStats) -> None:
        self.options = options
        self.keep = frozenset(options.layers) if options.layers is not None else None
        self.stats = stats
        self.pillow_missing = False

    def __call__(self, frame: FrameRecord) -> FrameRecord:
        if self._unchanged(frame):
            return frame
        objects = [
            replace(o, layers=self._select(o.layers), image=self._image(o.image))
            for o in frame.objects
        ]
        return replace(
            frame,
            layers=self._select(frame.layers),
            objects=objects,
            image=self._image(frame.image),
        )

    def _unchanged(self, frame: FrameRecord) -> bool:
        """True when the policy leaves ``frame`` as it is (all layers kept, no image to encode or
        drop): the common case of small frames, handed on without copying the record."""
        keep = self.keep
        if frame.image is not None or keep is not None and not keep.issuperset(frame.layers):
            return False
        for o in frame.objects:
            if o.image is not None or keep is not None and not keep.issuperset(o.layers):
                return False
        return True

    def _select(self, layers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.keep is None:
            return layers
        return {k: v for k, v in layers.items() if k in self.keep}

    def _image(self, image: ImageRecord | None) -> ImageRecord | None:
        if image is None or not self.options.images:
            return None
        if image.encoding != "raw":
            if image.encoding not in IMAGE_ENCODINGS:
                raise InvalidFrame(
                    f"image encoding {image.encoding!r} is not one of {IMAGE_ENCODINGS}"
                )
            return image  # already encoded upstream
        data = np.asarray(image.data)
        if (
            data.dtype != np.uint8
            or data.ndim not in (2, 3)
            or (data.ndim == 3 and data.shape[2] not in (1, 3, 4))
        ):
            raise InvalidFrame(
                f"raw image must be HxW, HxWx3 or HxWx4 uint8, got {data.dtype}{list(data.shape)}"
            )
        rgb = imgs.to_rgb(imgs.downscale(data, self.options.image_max_size))
        fmt = self.options.image_format
        if fmt == "raw" or self.pillow_missing:
            return ImageRecord(rgb, image.rect, "raw")
        try:
            return ImageRecord(imgs.encode(rgb, fmt, self.options.image_quality), image.rect, fmt)
        except ImportError as exc:
            self.pillow_missing = True
            self.stats.error("pillow-missing", exc)
            return ImageRecord(rgb, image.rect, "raw")
