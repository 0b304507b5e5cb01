"""Figure plumbing shared by the plots and widgets (matplotlib imported lazily; ``pip install
'dsprobe[notebook]'``): pyplot-free Agg figures that a notebook shows as PNG, PNG/JPEG bytes of a
figure, the class colour palette and class labels."""

from __future__ import annotations

import io
import sys
from typing import Any, Sequence

import numpy as np

PALETTE = [
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#fabed4",
    "#469990",
    "#dcbeff",
    "#9a6324",
]
HIGHLIGHT = "#ffe119"  # boxes on one side of an A/B comparison only

_NOTEBOOK_MSG = "plotting needs matplotlib: pip install 'dsprobe[notebook]'"


def pyplot() -> Any:
    """pyplot, on the Agg backend outside a notebook (for scripts that save PNGs)."""
    try:
        import matplotlib

        if matplotlib.get_backend().lower() in ("", "agg") or not _in_notebook():
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover
        raise ImportError(_NOTEBOOK_MSG) from exc
    return plt


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython

        return get_ipython() is not None
    except ImportError:
        return False


def new_figure(figsize: tuple[float, float] = (8, 4.5), dpi: float = 80) -> Any:
    """A Figure with an Agg canvas that pyplot does not track."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover
        raise ImportError(_NOTEBOOK_MSG) from exc
    _notebook_display(Figure)
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _notebook_display(figure_class: type) -> None:
    """In IPython, show figures as PNG when they are a cell's value (pyplot-free figures are not
    registered by the inline backend until pyplot draws something)."""
    ipython = sys.modules.get("IPython")  # not imported: not running in IPython
    ip = ipython.get_ipython() if ipython is not None else None
    if ip is None or not hasattr(ip, "display_formatter"):
        return
    fmt = ip.display_formatter.formatters["image/png"]
    if figure_class not in fmt.type_printers:
        fmt.for_type(figure_class, lambda fig: figure_png(fig, dpi=fig.dpi))


def axes_for(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    if ax is not None:
        return ax.figure, ax
    fig = new_figure(figsize)
    return fig, fig.add_subplot()


def figure_png(fig: Any, dpi: float | None = None) -> bytes:
    """PNG bytes of ``fig`` (Agg): for line art."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi)
    return buf.getvalue()


def figure_jpeg(fig: Any, quality: int = 90) -> bytes:
    """JPEG bytes of ``fig`` at its dpi: for pictures (encodes ~10x faster than PNG for photos)."""
    fig.canvas.draw()
    return jpeg_bytes(np.asarray(fig.canvas.buffer_rgba())[..., :3], quality)


def png_bytes(rgb: np.ndarray) -> bytes:
    """PNG bytes of an HxWx3 uint8 picture (fast zlib level: for line art redrawn often)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def color(class_id: int) -> str:
    return PALETTE[int(class_id) % len(PALETTE)]


def label_of(class_id: int, labels: Sequence[str] = ()) -> str:
    return labels[class_id] if 0 <= class_id < len(labels) else str(class_id)


def jpeg_bytes(rgb: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
