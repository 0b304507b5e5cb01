"""A timeline of one stream's frames that can be zoomed and clicked: detections per frame (and, with
ground truth, false positives and misses per frame) drawn over frame numbers, the current frame
marked. Click a point to jump there; zoom with the buttons or the mouse wheel (around the current
frame / the pointer). Clicks and wheel events come from ipyevents (``pip install 'dsprobe[notebook]'``);
without it the buttons still zoom and :meth:`Timeline.click` still jumps.

Zoomed out to more frames than pixels, each pixel column shows the mean count of its frames as a
line and their range as a band, so thousands of frames stay readable.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from dsprobe.notebook.controls import require_ipywidgets
from dsprobe.notebook.figures import new_figure, png_bytes

#: the axes' place in the figure (fractions): clicks are mapped through it
_AXES = (0.045, 0.2, 0.945, 0.68)


class Timeline:
    """``series``: {name: (frame numbers, values, matplotlib style dict)}; ``on_jump(frame_num)`` is
    called on a click. ``window``: the frame-number range shown (None: everything)."""

    def __init__(
        self,
        on_jump: Callable[[int], None],
        width: int = 900,
        height: int = 170,
        title: str = "detections per frame",
    ) -> None:
        w = require_ipywidgets()
        self.on_jump = on_jump
        self.width, self.height, self.title = width, height, title
        self.image = w.Image(
            format="png", layout=w.Layout(width=f"{width}px", height=f"{height}px")
        )
        self.image.add_class("dsprobe-timeline")
        self.series: dict[str, tuple[np.ndarray, np.ndarray, dict]] = {}
        self.extent: tuple[float, float] = (0.0, 1.0)
        self.window: tuple[float, float] | None = None
        self.current: float | None = None
        self.note = ""
        self.renders = 0
        self.fig = new_figure((width / 100, height / 100), 100)
        self.ax = self.fig.add_axes(_AXES)
        self._background: Any = None
        buttons = []
        for text, tip, fn in (
            ("\u2212", "zoom out", lambda: self.zoom(2.0)),
            ("+", "zoom in (around the current frame)", lambda: self.zoom(0.5)),
            ("all", "show every frame", self.reset_zoom),
        ):
            b = w.Button(description=text, tooltip=tip, layout=w.Layout(width="44px"))
            b.on_click(lambda _, f=fn: f())
            buttons.append(b)
        self.zoom_out, self.zoom_in, self.zoom_all = buttons
        self.events = self._events(w)
        self.widget = w.VBox([w.HBox(buttons), self.image])

    def _events(self, w: Any) -> Any:
        try:
            from ipyevents import Event
        except ImportError:  # pragma: no cover - ipyevents is in the notebook extra
            return None
        ev = Event(
            source=self.image, watched_events=["click", "wheel"], prevent_default_action=True
        )
        ev.on_dom_event(self._on_event)
        return ev

    # ---------------------------------------------------------------- data
    def set_series(
        self, series: Mapping[str, tuple[np.ndarray, np.ndarray, dict]], note: str = ""
    ) -> None:
        """New data (frame numbers, values, style per series); keeps the zoom window."""
        self.series = {
            k: (np.asarray(x, float), np.asarray(y, float), st) for k, (x, y, st) in series.items()
        }
        xs = [x for x, _, _ in self.series.values() if len(x)]
        self.extent = (
            (float(min(x.min() for x in xs)), float(max(x.max() for x in xs))) if xs else (0.0, 1.0)
        )
        self.note = note
        self.redraw()

    def set_current(self, frame_num: float) -> None:
        """Move the current-frame marker (cheap: the plot is kept as a bitmap)."""
        self.current = float(frame_num)
        if self.window is not None and not (self.window[0] <= self.current <= self.window[1]):
            half = (self.window[1] - self.window[0]) / 2
            self.window = (self.current - half, self.current + half)
            self.redraw()
            return
        self._blit()

    # ---------------------------------------------------------------- zoom / click
    def shown(self) -> tuple[float, float]:
        lo, hi = self.window or self.extent
        return (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)

    def zoom(self, factor: float, center: float | None = None) -> None:
        """Scale the window by ``factor`` (< 1 zooms in) around ``center`` (default the current frame)."""
        lo, hi = self.shown()
        c = (
            center
            if center is not None
            else (self.current if self.current is not None else (lo + hi) / 2)
        )
        half = max((hi - lo) * factor / 2, 5.0)
        full = self.extent[1] - self.extent[0]
        if 2 * half >= full:
            self.window = None
        else:
            lo = min(max(c - half, self.extent[0]), self.extent[1] - 2 * half)
            self.window = (lo, lo + 2 * half)
        self.redraw()

    def reset_zoom(self) -> None:
        self.window = None
        self.redraw()

    def frame_at(self, x_frac: float) -> float:
        """The frame number under a horizontal position (fraction of the image width, 0..1)."""
        lo, hi = self.shown()
        ax_frac = (x_frac - _AXES[0]) / _AXES[2]
        return lo + min(max(ax_frac, 0.0), 1.0) * (hi - lo)

    def click(self, x_frac: float) -> int:
        """Jump to the frame under ``x_frac`` (what a mouse click does); returns its number."""
        fn = int(round(self.frame_at(x_frac)))
        self.on_jump(fn)
        return fn

    def _on_event(self, event: dict) -> None:
        width = event.get("boundingRectWidth") or self.width
        x = event.get("relativeX", 0) / width
        if event.get("type") == "click":
            self.click(x)
        elif event.get("type") == "wheel":
            self.zoom(0.7 if event.get("deltaY", 0) < 0 else 1 / 0.7, center=self.frame_at(x))

    # ---------------------------------------------------------------- drawing
    def redraw(self) -> None:
        ax = self.ax
        # only the data artists go: ax.clear() would rebuild every tick (most of a redraw's time)
        for artist in [*ax.lines, *ax.collections]:
            artist.remove()
        if ax.get_legend() is not None:
            ax.get_legend().remove()
        ax.set_prop_cycle(None)
        lo, hi = self.shown()
        bins = max(int(self.width * _AXES[2] / 2), 10)
        for name, (x, y, style) in self.series.items():
            m = (x >= lo) & (x <= hi)
            xs, ys = x[m], y[m]
            if len(xs) > bins:
                edges = np.linspace(lo, hi, bins + 1)
                k = np.clip(np.searchsorted(edges, xs, side="right") - 1, 0, bins - 1)
                cnt = np.bincount(k, minlength=bins)
                ok = cnt > 0
                mean = np.bincount(k, ys, minlength=bins)[ok] / cnt[ok]
                top = np.full(bins, -np.inf)
                bot = np.full(bins, np.inf)
                np.maximum.at(top, k, ys)
                np.minimum.at(bot, k, ys)
                mid = ((edges[:-1] + edges[1:]) / 2)[ok]
                ax.fill_between(
                    mid, bot[ok], top[ok], color=style.get("color"), alpha=0.18, linewidth=0
                )
                ax.plot(mid, mean, label=name, **{"linewidth": 1, **style})
            else:
                ax.plot(xs, ys, label=name, **{"linewidth": 1, **style})
        ax.set_xlim(lo, hi)
        ax.tick_params(labelsize=7)
        span = "all frames" if self.window is None else f"frames {lo:.0f}-{hi:.0f}"
        # a fixed title position: matplotlib otherwise measures every tick label to place it
        ax.set_title(f"{self.title} ({span}; click to jump){self.note}", fontsize=8, y=1.0, pad=3)
        ax.relim()
        ax.autoscale_view(scalex=False)
        if self.series:
            ax.legend(fontsize=7, loc="upper right", ncol=len(self.series))
        self.fig.canvas.draw()
        self._background = np.asarray(self.fig.canvas.buffer_rgba())[..., :3].copy()
        bb = self.ax.get_window_extent()
        h = self._background.shape[0]
        self._axes_px = (bb.x0, bb.x1, int(h - bb.y1), int(h - bb.y0))  # x0, x1, top, bottom
        self.renders += 1
        self._blit()

    def _blit(self) -> None:
        """The plot with the current-frame marker: a black line drawn into the cached bitmap."""
        if self._background is None:
            return
        img = self._background
        if self.current is not None:
            lo, hi = self.shown()
            x0, x1, top, bottom = self._axes_px
            x = int(round(x0 + (self.current - lo) / (hi - lo) * (x1 - x0)))
            if int(x0) <= x < int(x1) + 1:
                img = img.copy()
                img[top:bottom, max(x - 1, 0) : x + 1] = 0
        self.image.value = png_bytes(img)
