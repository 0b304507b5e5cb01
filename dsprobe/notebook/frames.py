"""Recorded frames with boxes as matplotlib figures (imported lazily; ``pip install
'dsprobe[notebook]'``): boxes and keypoints in frame pixels on the recorded image, ground truth, A/B
differences (for reports and notebooks; the widgets draw with :mod:`dsprobe.notebook.raster`).
Axes are frame pixels (nvstreammux output), y down."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dsprobe.detections import Detections
from dsprobe.notebook.figures import HIGHLIGHT, axes_for, color, label_of, new_figure
from dsprobe.notebook.raster import OUTCOME_COLORS


def show_image(
    ax: Any,
    image: np.ndarray | None,
    image_rect: Sequence[float] | None,
    frame_size: tuple[int, int],
) -> None:
    """Draw the recorded image over the frame rectangle it covers (axes in frame pixels)."""
    fw, fh = frame_size
    if image is not None:
        left, top, w, h = image_rect if image_rect is not None else (0, 0, fw, fh)
        ax.imshow(image, extent=(left, left + w, top + h, top), interpolation="nearest")
    else:
        ax.set_facecolor("#303030")
        ax.text(
            fw / 2, fh / 2, "no image recorded", color="white", ha="center", va="center", fontsize=9
        )
    ax.set_xlim(0, fw)
    ax.set_ylim(fh, 0)
    ax.set_xticks([])
    ax.set_yticks([])


class _LabelPlacer:
    """Keeps labels inside the axes and off each other: above the box when there is room, else
    inside its top edge; moved down a line while it would overlap a label already placed."""

    def __init__(self, ax: Any) -> None:
        self.ax = ax
        x0, x1 = ax.get_xlim()
        bbox = ax.get_window_extent()
        self.px = abs(x1 - x0) / max(bbox.width, 1)  # frame px per figure px
        self.line = 11 * self.px
        self.taken: list[tuple[float, float, float, float]] = []

    def place(self, x: float, y_top: float, text: str) -> tuple[float, float]:
        w, h = (len(text) * 5.2 + 4) * self.px, self.line
        y = y_top - h if y_top - h >= 0 else y_top
        for _ in range(6):
            if not any(
                x < bx + bw and bx < x + w and y < by + bh and by < y + h
                for bx, by, bw, bh in self.taken
            ):
                break
            y += h
        self.taken.append((x, y, w, h))
        return x, y


def draw_detections(
    ax: Any,
    dets: Detections,
    labels: Sequence[str] = (),
    *,
    linestyle: str = "-",
    linewidth: float = 1.5,
    edgecolor: str | None = None,
    edgecolors: Sequence[str] | None = None,
    show_scores: bool = True,
    placer: _LabelPlacer | None = None,
) -> list:
    """Rectangles (and visible keypoints) for frame-pixel ``dets``; returns the rectangles added
    (one per detection). ``edgecolors``: one colour per box (else ``edgecolor``, else by class)."""
    from matplotlib.patches import Rectangle

    patches = []
    placer = placer or (_LabelPlacer(ax) if show_scores else None)
    for i, ((x1, y1, x2, y2), s, c) in enumerate(
        zip(dets.boxes.tolist(), dets.scores.tolist(), dets.class_ids.tolist())
    ):
        col = edgecolors[i] if edgecolors is not None else (edgecolor or color(c))
        p = Rectangle(
            (x1, y1),
            x2 - x1,
            y2 - y1,
            fill=False,
            edgecolor=col,
            linewidth=linewidth,
            linestyle=linestyle,
        )
        ax.add_patch(p)
        patches.append(p)
        if show_scores:
            text = f"{label_of(c, labels)} {s:.2f}"
            tx, ty = placer.place(x1, y1, text)
            ax.text(
                tx,
                ty,
                text,
                color="black" if col in (HIGHLIGHT, "white", OUTCOME_COLORS["tp"]) else "white",
                fontsize=7,
                va="top",
                bbox=dict(facecolor=col, edgecolor="none", pad=1, alpha=0.8),
                clip_on=True,
            )
        if dets.keypoints is not None:
            kp = dets.keypoints[i]
            vis = kp[:, 2] > 0.5
            ax.scatter(kp[vis, 0], kp[vis, 1], s=8, c=col)
    return patches


def draw_ground_truth(ax: Any, gt: Detections, labels: Sequence[str] = (), **kw: Any) -> list:
    """Ground truth boxes, dashed white (``kw`` overrides the style)."""
    style = dict(linestyle="--", edgecolor=OUTCOME_COLORS["gt"], show_scores=False, linewidth=1)
    return draw_detections(ax, gt, labels, **{**style, **kw})


def plot_frame(
    frame: Any,
    dets: Detections | None = None,
    labels: Sequence[str] = (),
    *,
    ax: Any = None,
    gt: Detections | None = None,
    title: str | None = None,
    highlight: np.ndarray | None = None,
) -> Any:
    """A recorded frame (FrameView) with ``dets`` (default: the pipeline's own recorded objects),
    optional ground truth (dashed white) and ``highlight`` (bool mask: boxes drawn thick yellow).
    Returns the figure; ``fig.dsprobe_patches`` holds the detection rectangles drawn."""
    own = ax is None
    fig, ax = axes_for(ax, (8, 4.8))
    if own:
        fig.subplots_adjust(left=0.005, right=0.995, bottom=0.005, top=0.94)
    show_image(ax, frame.image, frame.image_rect, frame.frame_size)
    if gt is not None:
        draw_ground_truth(ax, gt, labels)
    d = frame.detections if dets is None else dets
    hl = np.zeros(len(d), bool) if highlight is None else np.asarray(highlight, bool)
    patches = draw_detections(ax, d[~hl], labels) + draw_detections(
        ax, d[hl], labels, edgecolor=HIGHLIGHT, linewidth=3
    )
    ax.set_title(
        title or f"source {frame.source_id} frame {frame.frame_num}: {len(d)} detections",
        fontsize=9,
    )
    fig.dsprobe_patches = patches
    return fig


def ab_difference(
    a: Detections, b: Detections, iou_threshold: float = 0.9
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of boxes in ``a`` with no counterpart in ``b`` and vice versa (same class and
    IoU >= ``iou_threshold`` counts as the same box; 0.9 treats a box that moved as different)."""
    from dsprobe.analysis.evaluate import match

    m = match(a, b, iou_threshold)
    only_a = np.zeros(len(a), bool)
    only_b = np.zeros(len(b), bool)
    only_a[m.unmatched_a] = True
    only_b[m.unmatched_b] = True
    return only_a, only_b


def plot_ab(
    frame: Any,
    a: Detections,
    b: Detections,
    labels: Sequence[str] = (),
    names: tuple[str, str] = ("A", "B"),
    iou_threshold: float = 0.9,
    gt: Detections | None = None,
) -> Any:
    """Side by side A / B on the same frame (with ground truth ``gt``, dashed white, on both); boxes
    present on one side only are drawn thick yellow. ``fig.dsprobe_patches`` is ``(A rectangles,
    B rectangles)``, ``fig.dsprobe_only`` the two one-side-only masks and ``fig.dsprobe_titles`` the
    panel titles. (The widgets draw the same with :class:`~dsprobe.notebook.raster.FrameCanvas`.)"""
    only_a, only_b = ab_difference(a, b, iou_threshold)
    fig = new_figure((12, 3.7))
    patches, titles = [], []
    for k, (d, only, name) in enumerate(((a, only_a, names[0]), (b, only_b, names[1]))):
        title = f"{name}: {len(d)} boxes, {int(only.sum())} only here"
        f = plot_frame(
            frame, d, labels, ax=fig.add_subplot(1, 2, k + 1), gt=gt, title=title, highlight=only
        )
        patches.append(f.dsprobe_patches)
        titles.append(title)
    fig.subplots_adjust(left=0.005, right=0.995, bottom=0.005, top=0.93, wspace=0.02)
    fig.dsprobe_patches = tuple(patches)
    fig.dsprobe_only = (only_a, only_b)
    fig.dsprobe_titles = titles
    return fig
