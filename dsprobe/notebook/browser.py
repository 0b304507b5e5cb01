"""The frame browser the notebook widgets share (:class:`FrameBrowser`: stream selector, frame slider,
the picture of the chosen frame) and :class:`Explorer`, which shows a recording's frames with the
pipeline's own detections and optional ground truth. ipywidgets and matplotlib are imported lazily
(``pip install 'dsprobe[notebook]'``); :mod:`dsprobe.notebook.tuner` is the public entry point."""

from __future__ import annotations

import abc
import html
import time
from typing import Any, Sequence

import numpy as np

from dsprobe.detections import Detections
from dsprobe.notebook.controls import Player, Zoom, require_ipywidgets
from dsprobe.notebook.raster import FrameCanvas, Panel

__all__ = ["Explorer", "FrameBrowser", "recording_config", "require_ipywidgets"]


class _Widget:
    """Shows ``self.widget`` when the object is a cell's value."""

    widget: Any

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def show(self) -> None:
        from IPython.display import display

        display(self.widget)


class FrameBrowser(_Widget, abc.ABC):
    """Stream selector + frame slider over ``rows`` of a recording, play / step buttons
    (``player``), and an image of the chosen frame at its recorded resolution in a zoomable,
    scrollable box (``zoom``).

    ``frame.value`` is the frame row (``rec.frames`` index); the slider shows frame numbers. Changing
    stream keeps the frame number (the nearest one the other stream has).
    """

    def __init__(
        self,
        rec: Any,
        rows: Sequence[int] | None = None,
        *,
        labels: Sequence[str] = (),
        gt: Any = None,
    ) -> None:
        w = require_ipywidgets()
        self.rec = rec
        self.labels = list(labels)
        self.gt = gt
        f = rec.frames
        self.rows = np.asarray(sorted(f.index if rows is None else rows), np.int64)
        if not len(self.rows):
            raise ValueError(f"{getattr(rec, 'paths', ['recording'])[0]}: no frames to browse")
        sub = f.loc[self.rows]
        self._by_stream = {int(s): g.sort_values("frame_num") for s, g in sub.groupby("source_id")}
        self._syncing = False
        self._view: Any = None
        first = next(iter(self._by_stream))
        self.stream = w.Dropdown(
            options=[(f"source {s}", s) for s in self._by_stream],
            value=first,
            description="stream",
            layout=w.Layout(width="200px"),
        )
        self.frame = w.SelectionSlider(
            options=self._frame_options(first),
            description="frame",
            continuous_update=False,
            layout=w.Layout(width="480px"),
        )
        self.image = w.Image(format="jpeg")
        self.image.add_class("dsprobe-picture")
        self.zoom = Zoom(self.image)
        self.player = Player(self.frame)
        self.count_text = w.HTML()
        self.status = w.HTML(layout=w.Layout(margin="0 0 0 24px"))
        self.stream.observe(self._on_stream, "value")
        self.frame.observe(self._on_frame, "value")
        self.render_seconds = 0.0
        self._canvases: dict[int, FrameCanvas] = {}

    def navigation(self) -> Any:
        """The stream / frame / play / zoom row."""
        w = require_ipywidgets()
        return w.HBox(
            [self.stream, self.frame, self.player.widget, self.zoom.level],
            layout=w.Layout(flex_flow="row wrap"),
        )

    def show_picture(self, canvas: FrameCanvas) -> None:
        """Put ``canvas``'s picture into the image (natural width = recorded width x panels)."""
        self.image.value = canvas.jpeg()
        width = int(canvas.width)
        if width != self.zoom.natural_width:
            self.zoom.apply(width)

    def canvas(self, ncols: int = 1) -> FrameCanvas:
        """The reused figure for one panel (or two, A/B)."""
        if ncols not in self._canvases:
            self._canvases[ncols] = FrameCanvas(ncols)
        return self._canvases[ncols]

    def _frame_options(self, source_id: int) -> list[tuple[str, int]]:
        g = self._by_stream[source_id]
        return [(str(int(n)), int(r)) for n, r in zip(g["frame_num"], g.index)]

    # ---------------------------------------------------------------- state
    @property
    def row(self) -> int:
        return int(self.frame.value)

    @property
    def frame_view(self) -> Any:
        """The recording's FrameView of the current row (read once per row)."""
        if self._view is None or self._view.row != self.row:
            self._view = self.rec[self.row]
        return self._view

    def nearest_row(self, source_id: int, frame_num: int) -> int:
        """The row of ``source_id``'s frame nearest ``frame_num``."""
        g = self._by_stream[int(source_id)]
        fn = g["frame_num"].to_numpy()
        return int(g.index[int(np.argmin(np.abs(fn - int(frame_num))))])

    def goto(self, source_id: int, frame_num: int | None = None) -> None:
        """Show ``frame_num`` of stream ``source_id`` (default: its first frame; the nearest recorded
        frame when that number is missing)."""
        source_id = int(source_id)
        row = (
            self.nearest_row(source_id, frame_num)
            if frame_num is not None
            else int(self._by_stream[source_id].index[0])
        )
        self._syncing = True
        try:
            if self.stream.value != source_id:
                self.stream.value = source_id
                self.frame.options = self._frame_options(source_id)
            self.frame.value = row
        finally:
            self._syncing = False
        self.player.sync()
        self.render()

    def _on_stream(self, change: dict) -> None:
        if self._syncing:
            return
        current = int(self.rec.frames.at[self.row, "frame_num"])
        row = self.nearest_row(int(change["new"]), current)
        self._syncing = True
        try:
            self.frame.options = self._frame_options(int(change["new"]))
            self.frame.value = row
        finally:
            self._syncing = False
        self.player.sync()
        self.render()

    def _on_frame(self, change: dict) -> None:
        if not self._syncing:
            self.player.sync()
            self.render()

    def _gt_for_frame(self) -> Detections | None:
        if self.gt is None:
            return None
        v = self.frame_view
        return self.gt.for_frame(v.source_id, v.frame_num)

    def _set_status(self, message: str = "", error: bool = False) -> None:
        color = "#c00" if error else "#555"
        self.status.value = (
            f'<span style="color:{color}">{html.escape(message)}</span>' if message else ""
        )

    @abc.abstractmethod
    def render(self) -> None:
        """Draw the current frame (each browser draws its own view)."""


class Explorer(FrameBrowser):
    """Browse a recording: the recorded image with the pipeline's own detections (nvinfer's output,
    if it was recorded), ground truth (dashed white) if given, and what else the frame holds."""

    def __init__(
        self,
        rec: Any,
        rows: Sequence[int] | None = None,
        *,
        labels: Sequence[str] | None = None,
        gt: Any = None,
    ) -> None:
        if labels is None:
            cfg = recording_config(rec)
            labels = cfg.labels() if cfg is not None else ()
        super().__init__(rec, rows, labels=labels, gt=gt)
        w = require_ipywidgets()
        self.info = w.HTML()
        self.detections = Detections.empty("frame")
        self.num_patches = 0
        self.widget = w.VBox([self.navigation(), self.count_text, self.zoom.box, self.info])
        self.widget.add_class("dsprobe-explorer")
        self.render()

    def render(self) -> None:
        t0 = time.perf_counter()
        v = self.frame_view
        self.detections = v.detections
        canvas = self.canvas(1)
        drawn = canvas.draw(v, [Panel(self.detections)], self.labels, gt=self._gt_for_frame())
        self.num_patches = len(drawn[0])
        self.show_picture(canvas)
        rec_det = int(self.rec.frames.at[v.row, "num_detections"])
        self.count_text.value = (
            f"source {v.source_id} frame {v.frame_num}: "
            f'<b><span class="dsprobe-count">{len(self.detections)}</span></b> recorded '
            f"detections{'' if rec_det else ' (none recorded on this frame)'}"
        )
        layers = ", ".join(f"{k} {a.dtype}{list(a.shape)}" for k, a in v.tensors.items()) or "none"
        self.info.value = (
            f"<small>row {v.row} &middot; PTS {v.pts_ns / 1e9:.3f} s &middot; GIE {v.unique_id} "
            f"&middot; batch_id {v.batch_id} &middot; frame {v.frame_size[0]}x{v.frame_size[1]} "
            f"&middot; network {v.network_size[0]}x{v.network_size[1]} &middot; "
            f"image rect {v.image_rect} &middot; layers: {html.escape(layers)} &middot; "
            f"SGIE objects: {len(v.objects)}</small>"
        )
        self.render_seconds = time.perf_counter() - t0


def recording_config(rec: Any) -> Any:
    """The recording's nvinfer config, or None when it holds several GIEs (the caller then names labels
    or a postprocess itself)."""
    try:
        return rec.config()
    except ValueError:  # several GIEs: the caller names labels / a postprocess
        return None
