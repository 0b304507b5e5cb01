"""Small widget groups the browsers share: play / step buttons over a frame slider, zoom of the frame
picture (drawn at its recorded resolution; pan by scrolling), and an explicit save of a spec to a
file name the user types (nothing is ever written without that click)."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Callable


def require_ipywidgets() -> Any:
    """The ipywidgets module (a clear error naming the extra to install without it)."""
    try:
        import ipywidgets
    except ImportError as exc:  # pragma: no cover
        raise ImportError(
            "the notebook widgets need ipywidgets and matplotlib: pip install 'dsprobe[notebook]'"
        ) from exc
    return ipywidgets


class Player:
    """Play / pause and step buttons (-10, -1, +1, +10 frames) for a ``SelectionSlider``; ``play`` is
    an ``ipywidgets.Play`` over the slider's option index (``fps`` frames per second)."""

    def __init__(self, slider: Any, fps: float = 5.0) -> None:
        w = require_ipywidgets()
        self.slider = slider
        n = max(len(slider.options) - 1, 0)
        self.play = w.Play(
            value=0,
            min=0,
            max=n,
            interval=int(1000 / fps),
            description="play",
            show_repeat=False,
            layout=w.Layout(width="110px"),
        )
        self.buttons = []
        for step in (-10, -1, 1, 10):
            b = w.Button(
                description=f"{step:+d}".replace("-", "\u2212"),
                tooltip=f"{step:+d} frames",
                layout=w.Layout(width="52px", flex="0 0 auto"),
            )
            b.on_click(lambda _, s=step: self.step(s))
            self.buttons.append(b)
        self._syncing = False
        self.play.observe(self._on_play, "value")
        self.widget = w.HBox(
            [self.play, *self.buttons], layout=w.Layout(overflow="visible", flex="0 0 auto")
        )

    def index(self) -> int:
        values = [v for _, v in self.slider.options]
        return values.index(self.slider.value) if self.slider.value in values else 0

    def step(self, n: int) -> None:
        """Move ``n`` frames (clamped to the slider's ends)."""
        opts = self.slider.options
        if opts:
            self.slider.value = opts[min(max(self.index() + n, 0), len(opts) - 1)][1]

    def sync(self) -> None:
        """Follow the slider (after it moved or got new options)."""
        self._syncing = True
        try:
            self.play.max = max(len(self.slider.options) - 1, 0)
            self.play.value = self.index()
        finally:
            self._syncing = False

    def _on_play(self, change: dict) -> None:
        if not self._syncing and self.slider.options:
            self.slider.value = self.slider.options[int(change["new"])][1]


class Zoom:
    """The frame picture in a scrollable box: ``fit`` (the box's width) or 100 / 200 / 400 % of the
    recorded resolution; scroll to pan."""

    LEVELS = (("fit", 0), ("100%", 1), ("200%", 2), ("400%", 4))

    def __init__(self, image: Any, width: int = 0) -> None:
        w = require_ipywidgets()
        self.image = image
        self.natural_width = width
        self.level = w.Dropdown(
            options=list(self.LEVELS), value=0, description="zoom", layout=w.Layout(width="150px")
        )
        self.box = w.Box(
            [image], layout=w.Layout(overflow="auto", max_height="760px", max_width="100%")
        )
        self.level.observe(lambda _: self.apply(), "value")
        self.apply()

    def apply(self, width: int | None = None) -> None:
        if width is not None:
            self.natural_width = width
        z = self.level.value
        self.image.layout.width = "100%" if not z else f"{self.natural_width * z}px"
        self.image.layout.max_width = "100%" if not z else "none"


class SaveSpec:
    """A file name and a save button: ``get()`` returns the object to save (with a ``save(path)``
    method, e.g. a Postprocess); nothing is written until the button is clicked."""

    def __init__(self, get: Callable[[], Any], path: str | Path = "tuned_postprocess.json") -> None:
        w = require_ipywidgets()
        self.get = get
        self.path = w.Text(value=str(path), description="save as", layout=w.Layout(width="420px"))
        self.button = w.Button(
            description="save", button_style="primary", icon="save", layout=w.Layout(width="90px")
        )
        self.export_button = w.Button(
            description="export bundle",
            tooltip="a folder: the spec plus the source of your own step functions (pp.export)",
            icon="archive",
            layout=w.Layout(width="130px"),
        )
        self.message = w.HTML()
        self.saved: Path | None = None
        self.button.on_click(lambda _: self.save())
        self.export_button.on_click(lambda _: self.export())
        self.widget = w.HBox([self.path, self.button, self.export_button, self.message])

    def save(self) -> Path | None:
        """Write the spec to the typed file name; says where (or why not) next to the button."""
        p = Path(self.path.value).expanduser()
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            self.saved = Path(self.get().save(p))
        except (OSError, ValueError) as exc:
            self.message.value = (
                f'<span style="color:#c00">not saved: {html.escape(str(exc))}</span>'
            )
            return None
        self.message.value = f"saved {html.escape(str(self.saved))}"
        return self.saved

    def export(self) -> Path | None:
        """Export a bundle (``get().export(folder)``) into the typed name without ``.json``: the spec
        and the source of the user's own functions, for ``attach_postprocess(..., trust=True)``."""
        p = Path(self.path.value).expanduser()
        folder = p.with_suffix("") if p.suffix == ".json" else p
        try:
            spec = Path(self.get().export(folder))
        except (
            OSError,
            ValueError,
        ) as exc:  # BundleError (what cannot be captured) is a ValueError
            self.message.value = (
                f'<span style="color:#c00">not exported: {html.escape(str(exc))}</span>'
            )
            return None
        self.saved = spec
        self.message.value = f"exported {html.escape(str(folder))}/ (load it with trust=True)"
        return spec
