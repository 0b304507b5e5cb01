"""The space of each frame's object rects (``FrameRecord.frame_size``): the nvstreammux output size.

In this order: ``muxer_size=`` given by the caller; the classic nvstreammux's ``width`` / ``height``;
under the new nvstreammux (no such properties, no scaling) each frame's own
``source_frame_width/height``; else the size of that frame's RGBA surface at the probe (right unless
an nvvideoconvert upstream of the probe scales); else the source size, with a one-time warning.
Nothing learnt from one frame is reused for another stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dsprobe.deepstream.graph import MuxerInfo


class FrameSizes:
    def __init__(self, muxer_size: tuple[int, int] | None, stats: Any) -> None:
        self.muxer_size = None if muxer_size is None else (int(muxer_size[0]), int(muxer_size[1]))
        self.new_mux = False
        self.stats = stats

    def use_muxer(self, muxer: MuxerInfo | None) -> None:
        """Take what :func:`dsprobe.deepstream.graph.find_muxer` found (unless a size was given)."""
        if muxer is None or self.muxer_size is not None:
            return
        if muxer.size is not None:
            self.muxer_size = muxer.size
        else:
            self.new_mux = True

    @property
    def known(self) -> bool:
        """True when frame sizes need no surface (a fixed muxer size or the new nvstreammux)."""
        return self.muxer_size is not None or self.new_mux

    def frame_size(self, fm: Any, surface: np.ndarray | None = None) -> tuple[int, int]:
        if self.muxer_size is not None:
            return self.muxer_size
        source = (int(fm.source_frame_width), int(fm.source_frame_height))
        if self.new_mux:
            return source
        if surface is not None:
            return (int(surface.shape[1]), int(surface.shape[0]))
        self.stats.warn_once(
            "muxer-size",
            "nvstreammux output size unknown (no nvstreammux found, no RGBA surface at the probe): "
            "using the source frame size. Pass muxer_size=(width, height) so boxes map to the "
            "right space",
        )
        return source
