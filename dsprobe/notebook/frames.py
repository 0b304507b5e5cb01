"""Recorded frames with boxes (matplotlib, imported lazily; ``pip install 'dsprobe[notebook]'``):
boxes and keypoints in frame pixels on the recorded image, ground truth, true / false positive and
missed-object colouring, A/B differences, and :class:`FrameCanvas`, the reused figure the widgets
redraw. Axes are frame pixels (nvstreammux output), y down; the widgets' canvas has one figure pixel
per recorded image pixel (frames are drawn at their recorded resolution, never stretched)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from dsprobe.detections import Detections
from dsprobe.notebook.figures import HIGHLIGHT, axes_for, color, jpeg_bytes, label_of, new_figure

#: box colours when detections are judged against ground truth
OUTCOME_COLORS = {"tp": "#2ecc40", "fp": "#ff4136", "missed": "#ff851b", "gt": "white"}


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


@dataclass
class Panel:
    """One panel of a :class:`FrameCanvas`: detections (frame px), an optional highlight mask (thick
    yellow), a title, optional per-box colours and ground-truth boxes to draw as missed (orange)."""

    dets: Detections
    highlight: np.ndarray | None = None
    title: str = ""
    colors: Sequence[str] | None = None
    missed: Detections | None = None


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


def _picture_size(frame: Any) -> tuple[int, int]:
    """(width, height) the frame is drawn at: its recorded image's, else the frame's."""
    img = getattr(frame, "image", None)
    if img is not None:
        return int(img.shape[1]), int(img.shape[0])
    return int(frame.frame_size[0]), int(frame.frame_size[1])


class FrameCanvas:
    """A figure reused for redraws of detections on recorded frames (what the widgets use).

    One figure pixel per recorded image pixel (``ncols`` panels side by side, no margins: titles
    belong in the widget's text). The picture (and ground truth) is drawn once per frame and kept as
    a bitmap; each redraw restores it and draws only the boxes and labels (Agg blitting)."""

    def __init__(self, ncols: int = 1, dpi: float = 100) -> None:
        self.ncols, self.dpi = ncols, dpi
        self.fig: Any = None
        self.axes: list = []
        self.size: tuple[int, int] = (0, 0)
        self._key: Any = None
        self._background: Any = None
        self._overlay: list = []
        self.full_draws = 0  # how often the picture itself was drawn

    def _ensure(self, size: tuple[int, int]) -> None:
        if self.fig is not None and size == self.size:
            return
        w, h = size
        gap = 4 if self.ncols > 1 else 0
        total = w * self.ncols + gap * (self.ncols - 1)
        self.fig = new_figure((total / self.dpi, h / self.dpi), self.dpi)
        self.axes = [
            self.fig.add_axes([k * (w + gap) / total, 0, w / total, 1]) for k in range(self.ncols)
        ]
        for ax in self.axes:
            ax.set_axis_off()
        self.size, self._key, self._overlay = size, None, []

    def draw(
        self,
        frame: Any,
        panels: Sequence[Panel],
        labels: Sequence[str] = (),
        gt: Detections | None = None,
    ) -> list[list]:
        """Draw ``panels`` (one per axes) on ``frame``; returns each panel's rectangles (one per
        detection)."""
        self._ensure(_picture_size(frame))
        canvas = self.fig.canvas
        key = (
            getattr(frame, "row", None),
            frame.source_id,
            frame.frame_num,
            id(frame.image),
            None if gt is None else gt.boxes.tobytes(),
        )
        for a in self._overlay:
            a.remove()
        self._overlay = []
        if key != self._key:
            for ax in self.axes:
                ax.clear()
                ax.set_axis_off()
                show_image(ax, frame.image, frame.image_rect, frame.frame_size)
                if gt is not None:
                    draw_ground_truth(ax, gt, labels)
            canvas.draw()
            self._background = canvas.copy_from_bbox(self.fig.bbox)
            self._key = key
            self.full_draws += 1
        else:
            canvas.restore_region(self._background)
        drawn = []
        for ax, p in zip(self.axes, panels):
            before = set(ax.get_children())
            placer = _LabelPlacer(ax)
            if p.missed is not None and len(p.missed):
                draw_ground_truth(
                    ax, p.missed, labels, edgecolor=OUTCOME_COLORS["missed"], linewidth=2.5
                )
            d = p.dets
            hl = np.zeros(len(d), bool) if p.highlight is None else np.asarray(p.highlight, bool)
            cols = None if p.colors is None else np.asarray(p.colors, object)
            drawn.append(
                draw_detections(
                    ax,
                    d[~hl],
                    labels,
                    edgecolors=None if cols is None else list(cols[~hl]),
                    placer=placer,
                )
                + draw_detections(
                    ax, d[hl], labels, edgecolor=HIGHLIGHT, linewidth=3, placer=placer
                )
            )
            new = [a for a in ax.get_children() if a not in before]
            self._overlay += new
            for a in new:
                ax.draw_artist(a)
        return drawn

    def rgb(self) -> np.ndarray:
        """The current picture, HxWx3 uint8 (as last drawn: no full redraw)."""
        return np.asarray(self.fig.canvas.buffer_rgba())[..., :3].copy()

    def jpeg(self, quality: int = 90) -> bytes:
        return jpeg_bytes(self.rgb(), quality)


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
    canvas: FrameCanvas | None = None,
    gt: Detections | None = None,
) -> Any:
    """Side by side A / B on the same frame (with ground truth ``gt``, dashed white, on both); boxes
    present on one side only are drawn thick yellow. Returns the figure (of ``canvas`` when given);
    ``fig.dsprobe_patches`` is ``(A rectangles, B rectangles)``, ``fig.dsprobe_only`` the two
    one-side-only masks and ``fig.dsprobe_titles`` the panel titles."""
    canvas = canvas or FrameCanvas(ncols=2)
    only_a, only_b = ab_difference(a, b, iou_threshold)
    panels = [
        Panel(d, only, f"{name}: {len(d)} boxes, {int(only.sum())} only here")
        for d, only, name in ((a, only_a, names[0]), (b, only_b, names[1]))
    ]
    drawn = canvas.draw(frame, panels, labels, gt=gt)
    fig = canvas.fig
    fig.dsprobe_patches = tuple(drawn)
    fig.dsprobe_only = (only_a, only_b)
    fig.dsprobe_titles = [p.title for p in panels]  # the widgets show titles as text
    return fig
