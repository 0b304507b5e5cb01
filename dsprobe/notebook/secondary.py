"""Notebook views of a secondary GIE's per-object outputs (notebook 06): object crops, classifier
threshold and confusion, embedding projections, neighbours and cosine histograms.

The numbers come from :mod:`dsprobe.analysis.secondary`; this module only draws them (matplotlib,
ipywidgets; ipyevents for clicking the projection, when installed).
"""

from __future__ import annotations

import io
from typing import Any, Sequence

import numpy as np
import pandas as pd

from dsprobe.notebook.errors_view import plot_confusion
from dsprobe.notebook.figures import axes_for, color, new_figure


def object_crop(rec: Any, objects: pd.DataFrame, i: int) -> np.ndarray | None:
    """The stored crop (RGB array) of row ``i`` of ``objects`` (an ``SgieOutputs.objects`` table),
    None when the recording holds no crops."""
    from dsprobe.recording.images import decode

    r = objects.iloc[int(i)]
    obj = rec[int(r["row"])].objects[int(r["index_in_frame"])]
    if obj.image is None:
        return None
    im = obj.image
    return im.data if im.encoding == "raw" else decode(im.data, im.encoding)


def crop_grid(
    rec: Any,
    objects: pd.DataFrame,
    indices: Sequence[int],
    captions: Sequence[str] | None = None,
    cols: int = 8,
    size: float = 1.2,
    title: str | None = None,
) -> Any:
    """A grid of the stored crops of rows ``indices`` of ``objects`` with optional captions."""
    indices = list(indices)
    rows = max(1, -(-len(indices) // cols))
    fig = new_figure((cols * size, rows * size + (0.35 if title else 0.1)))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
    for ax in axes:
        ax.axis("off")
    for n, (ax, i) in enumerate(zip(axes, indices)):
        crop = object_crop(rec, objects, i)
        if crop is not None:
            ax.imshow(crop)
        ax.set_title(captions[n] if captions is not None else str(i), fontsize=6)
    if not indices:
        axes[0].text(0.5, 0.5, "nothing to show", ha="center", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def gallery_by(
    rec: Any,
    objects: pd.DataFrame,
    column: str,
    labels: Sequence[str] = (),
    per_group: int = 6,
    mask: np.ndarray | None = None,
    caption: str | None = None,
) -> Any:
    """Crops grouped by ``column`` (e.g. ``gt_attribute``, ``class_id``, ``pred``): one row of up to
    ``per_group`` crops per value (optionally only rows where ``mask``); ``caption`` names a column
    whose value captions each crop."""
    sel = objects if mask is None else objects[np.asarray(mask, bool)]
    idx, caps = [], []
    for value, g in sel.groupby(column):
        name = labels[int(value)] if 0 <= int(value) < len(labels) else str(value)
        for j in g.index[:per_group]:
            idx.append(objects.index.get_loc(j))
            caps.append(f"{name} {objects.at[j, caption]}" if caption else name)
    return crop_grid(rec, objects, idx, caps, cols=per_group, title=f"crops by {column}")


def plot_threshold_sweep(sweep: pd.DataFrame, best: float | None = None, ax: Any = None) -> Any:
    """Accuracy, coverage, precision and F1 against ``classifier-threshold``."""
    fig, ax = axes_for(ax, (6, 3.2))
    for k, col in enumerate(("accuracy", "coverage", "precision", "f1")):
        ax.plot(sweep["threshold"], sweep[col], label=col, color=color(k), lw=1.5)
    if best is not None:
        ax.axvline(best, color="k", ls="--", lw=1, label=f"best {best:g}")
    ax.set_xlabel("classifier-threshold")
    ax.set_ylim(min(0.0, float(sweep[["accuracy", "coverage"]].min().min())), 1.02)
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_cosine_histograms(
    same: np.ndarray, different: np.ndarray, threshold: float | None = None, ax: Any = None
) -> Any:
    """Histograms of cosine similarity: same identity on other frames vs different identities."""
    fig, ax = axes_for(ax, (6, 3.2))
    bins = np.linspace(-1, 1, 81)
    ax.hist(
        different,
        bins,
        density=True,
        alpha=0.6,
        color=color(2),
        label=f"different ({len(different)})",
    )
    ax.hist(
        same, bins, density=True, alpha=0.6, color=color(1), label=f"same identity ({len(same)})"
    )
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.2f}")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_norms(emb: np.ndarray, ax: Any = None) -> Any:
    """Histogram of the embeddings' L2 norms (non-finite rows counted in the title)."""
    fig, ax = axes_for(ax, (5, 2.6))
    e = np.asarray(emb, np.float64).reshape(len(emb), -1)
    finite = np.isfinite(e).all(1)
    ax.hist(np.linalg.norm(e[finite], axis=1), 50, color=color(2))
    ax.set_xlabel("L2 norm")
    ax.set_title(f"{(~finite).sum()} of {len(e)} rows with NaN/inf", fontsize=8)
    fig.tight_layout()
    return fig


def plot_projection(
    points: np.ndarray,
    colour: np.ndarray,
    labels: Sequence[str] = (),
    ax: Any = None,
    title: str = "",
) -> Any:
    """2-D projection (e.g. :func:`dsprobe.analysis.secondary.pca_2d`) coloured by a class or
    identity per point (legend for up to 12 values)."""
    fig, ax = axes_for(ax, (5.5, 4.5))
    colour = np.asarray(colour)
    values = np.unique(colour)
    for v in values:
        m = colour == v
        name = labels[int(v)] if 0 <= int(v) < len(labels) else str(v)
        ax.scatter(points[m, 0], points[m, 1], s=8, color=color(int(v)), label=name, alpha=0.8)
    if len(values) <= 12:
        ax.legend(fontsize=6, markerscale=1.5, loc="best")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    return fig


class ProjectionExplorer:
    """The 2-D projection as a picture; clicking a point (ipyevents) or typing its row number shows
    that object's crop, its caption and its nearest neighbours (other frames of the same stream)."""

    def __init__(
        self,
        rec: Any,
        objects: pd.DataFrame,
        points: np.ndarray,
        colour: np.ndarray,
        neighbours: np.ndarray,
        labels: Sequence[str] = (),
        caption: Sequence[str] | None = None,
        title: str = "",
    ) -> None:
        import ipywidgets as w

        self.rec, self.objects, self.points, self.nn = rec, objects, np.asarray(points), neighbours
        self.caption = (
            list(caption) if caption is not None else [str(i) for i in range(len(points))]
        )
        fig = plot_projection(self.points, colour, labels, title=title)
        fig.canvas.draw()
        ax = fig.axes[0]
        self._to_pixels = ax.transData.transform  # data -> display pixels (origin bottom left)
        self._height = fig.bbox.height
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        self.image = w.Image(value=buf.getvalue(), format="png")
        self.index = w.BoundedIntText(0, min=0, max=max(0, len(points) - 1), description="object")
        self.detail = w.Output()
        self.index.observe(lambda ch: self.select(ch["new"]), names="value")
        self.clicks = 0
        self.figure: Any = None  # the crop + neighbours figure last shown
        try:
            from ipyevents import Event

            self._event = Event(source=self.image, watched_events=["click"])
            self._event.on_dom_event(self.on_click)
        except ImportError:
            self._event = None
        self.widget = w.HBox([self.image, w.VBox([self.index, self.detail])])

    def nearest_point(self, x: float, y: float) -> int:
        """The point drawn nearest to picture pixel (x, y) (origin top left)."""
        px = self._to_pixels(self.points)
        d = (px[:, 0] - x) ** 2 + (self._height - px[:, 1] - y) ** 2
        return int(np.argmin(d))

    def on_click(self, event: dict) -> None:
        """ipyevents click handler: select the point nearest the click."""
        self.clicks += 1
        self.index.value = self.nearest_point(event["relativeX"], event["relativeY"])

    def select(self, i: int) -> None:
        """Show object ``i`` and its neighbours."""
        nn = [int(j) for j in self.nn[i] if j >= 0]
        self.detail.clear_output(wait=True)
        self.figure = crop_grid(
            self.rec,
            self.objects,
            [i, *nn],
            [f"#{i} {self.caption[i]}", *[f"nn #{j} {self.caption[j]}" for j in nn]],
            cols=len(nn) + 1,
            size=1.3,
        )
        with self.detail:
            from IPython.display import display

            display(self.figure)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        self.select(self.index.value)
        return self.widget._repr_mimebundle_(**kwargs)


class ThresholdView:
    """A ``classifier-threshold`` slider: accuracy / coverage / precision at the value and the
    confusion matrix against ground truth."""

    def __init__(
        self, probs: np.ndarray, truth: np.ndarray, labels: Sequence[str], value: float = 0.5
    ) -> None:
        import ipywidgets as w

        self.probs, self.truth, self.labels = probs, np.asarray(truth), list(labels)
        self.slider = w.FloatSlider(
            value=value,
            min=0.0,
            max=0.99,
            step=0.01,
            description="threshold",
            continuous_update=False,
        )
        self.out = w.Output()
        self.slider.observe(lambda ch: self.update(), names="value")
        self.widget = w.VBox([self.slider, self.out])
        self.scores: dict = {}

    def update(self) -> None:
        from IPython.display import display

        from dsprobe.analysis.secondary import (
            attribute_confusion,
            classifier_predictions,
            classifier_scores,
        )

        t = float(self.slider.value)
        self.scores = classifier_scores(self.probs, self.truth, t)
        pred, _ = classifier_predictions(self.probs, t)
        self.confusion = attribute_confusion(self.truth, pred, self.labels)
        s = self.scores
        self.out.clear_output(wait=True)
        with self.out:
            print(
                f"threshold {t:.2f}: accuracy {s['accuracy']:.4f}  coverage {s['coverage']:.4f}  "
                f"precision {s['precision']:.4f}  F1 {s['f1']:.4f}  ({s['objects']} objects)"
            )
            display(plot_confusion(self.confusion, title=f"classifier-threshold {t:.2f}"))

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        self.update()
        return self.widget._repr_mimebundle_(**kwargs)
