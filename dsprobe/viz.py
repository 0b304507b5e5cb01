"""Drawing with matplotlib (imported lazily): boxes on recorded images in frame pixels, A/B
differences, count plots, PR curves. The core never imports this module."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dsprobe.detections import Detections

PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
           "#fabed4", "#469990", "#dcbeff", "#9a6324"]


def _plt():
    try:
        import matplotlib
        if matplotlib.get_backend().lower() in ("", "agg") or not _in_notebook():
            matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover
        raise ImportError("plotting needs matplotlib: pip install 'dsprobe[notebook]'") from exc
    return plt


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
        return get_ipython() is not None
    except ImportError:
        return False


def color(class_id: int) -> str:
    return PALETTE[int(class_id) % len(PALETTE)]


def show_image(ax: Any, image: np.ndarray | None, image_rect: Sequence[float] | None,
               frame_size: tuple[int, int]) -> None:
    """Draw the recorded image stretched over the frame rectangle it covers (axes in frame pixels)."""
    fw, fh = frame_size
    if image is not None:
        left, top, w, h = image_rect if image_rect is not None else (0, 0, fw, fh)
        ax.imshow(image, extent=(left, left + w, top + h, top), interpolation="nearest")
    ax.set_xlim(0, fw)
    ax.set_ylim(fh, 0)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_detections(ax: Any, dets: Detections, labels: Sequence[str] = (), *, linestyle: str = "-",
                    linewidth: float = 1.5, edgecolor: str | None = None, show_scores: bool = True) -> list:
    """Rectangles (and keypoints) for frame-pixel ``dets``; returns the added patches."""
    from matplotlib.patches import Rectangle

    patches = []
    for i, ((x1, y1, x2, y2), s, c) in enumerate(zip(dets.boxes, dets.scores, dets.class_ids)):
        col = edgecolor or color(c)
        p = Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=col, linewidth=linewidth,
                      linestyle=linestyle)
        ax.add_patch(p)
        patches.append(p)
        if show_scores:
            name = labels[c] if 0 <= c < len(labels) else str(c)
            ax.text(x1, y1 - 2, f"{name} {s:.2f}", color="white", fontsize=7,
                    bbox=dict(facecolor=col, edgecolor="none", pad=1, alpha=0.8))
        if dets.keypoints is not None:
            kp = dets.keypoints[i]
            vis = kp[:, 2] > 0.5
            ax.scatter(kp[vis, 0], kp[vis, 1], s=8, c=col)
    return patches


def plot_frame(frame: Any, dets: Detections | None = None, labels: Sequence[str] = (), *, ax: Any = None,
               gt: Detections | None = None, title: str | None = None) -> Any:
    """A recorded frame with ``dets`` (default: the pipeline's own recorded objects) and optional
    ground truth (dashed white). Returns the figure."""
    plt = _plt()
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 4.5))
    else:
        fig = ax.figure
    show_image(ax, frame.image, frame.image_rect, frame.frame_size)
    if gt is not None:
        draw_detections(ax, gt, labels, linestyle="--", edgecolor="white", show_scores=False, linewidth=1)
    d = frame.detections if dets is None else dets
    draw_detections(ax, d, labels)
    ax.set_title(title or f"source {frame.source_id} frame {frame.frame_num}: {len(d)} detections", fontsize=9)
    return fig


def ab_difference(a: Detections, b: Detections, iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks of boxes in ``a`` with no match in ``b`` and vice versa (same class, IoU >= thr)."""
    from dsprobe.evaluate import match

    m = match(a, b, iou_threshold)
    only_a = np.zeros(len(a), bool)
    only_b = np.zeros(len(b), bool)
    only_a[m.unmatched_a] = True
    only_b[m.unmatched_b] = True
    return only_a, only_b


def plot_ab(frame: Any, a: Detections, b: Detections, labels: Sequence[str] = (), names: tuple[str, str] = ("A", "B"),
            fig: Any = None) -> Any:
    """Side by side A / B; boxes present on one side only are drawn thick yellow."""
    plt = _plt()
    if fig is None:
        fig = plt.figure(figsize=(12, 3.6))
    fig.clear()
    axes = fig.subplots(1, 2)
    only_a, only_b = ab_difference(a, b)
    for ax, d, only, name in ((axes[0], a, only_a, names[0]), (axes[1], b, only_b, names[1])):
        show_image(ax, frame.image, frame.image_rect, frame.frame_size)
        draw_detections(ax, d[~only], labels)
        draw_detections(ax, d[only], labels, edgecolor="yellow", linewidth=3)
        ax.set_title(f"{name}: {len(d)} boxes, {int(only.sum())} only here", fontsize=9)
    fig.tight_layout()
    return fig


def plot_counts(counts: Any, ax: Any = None, title: str = "detections per frame") -> Any:
    """Per-frame detection counts (a Series/DataFrame indexed by frame number, one column per stream)."""
    plt = _plt()
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 2.5))
    counts.plot(ax=ax, linewidth=1)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("frame")
    return ax.figure


def plot_pr_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], ax: Any = None) -> Any:
    """Precision-recall curves per class (from ``evaluate(...).pr_curves``)."""
    plt = _plt()
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 4))
    for k, (name, (r, p)) in enumerate(curves.items()):
        ax.plot(r, p, label=name, color=PALETTE[k % len(PALETTE)])
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title("PR @ IoU 0.5", fontsize=9)
    return ax.figure


def plot_heatmap(table: Any, ax: Any = None, title: str = "mAP@0.5") -> Any:
    """A 2-D search result (``SearchResult.pivot()``) as an annotated heat map."""
    plt = _plt()
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 4))
    im = ax.imshow(table.to_numpy(), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(table.columns)), [f"{c:g}" for c in table.columns])
    ax.set_yticks(range(len(table.index)), [f"{c:g}" for c in table.index])
    ax.set_xlabel(table.columns.name or "")
    ax.set_ylabel(table.index.name or "")
    for (i, j), v in np.ndenumerate(table.to_numpy()):
        ax.text(j, i, f"{v:.3f}", ha="center", va="center", color="white", fontsize=7)
    ax.figure.colorbar(im, ax=ax)
    ax.set_title(title, fontsize=9)
    return ax.figure


def crop_gallery(items: Sequence[tuple[Any, np.ndarray, str]], cols: int = 6, size: float = 1.6) -> Any:
    """A grid of crops: ``items`` are (frame view, x1y1x2y2 box in frame px, caption)."""
    plt = _plt()
    rows = max(1, -(-len(items) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (frame, box, caption) in zip(axes.flat, items):
        img = frame.image
        if img is None:
            continue
        left, top, w, h = frame.image_rect
        sx, sy = img.shape[1] / w, img.shape[0] / h
        x1, y1, x2, y2 = box
        xa, ya = int(max(0, (x1 - left) * sx - 4)), int(max(0, (y1 - top) * sy - 4))
        xb, yb = int(min(img.shape[1], (x2 - left) * sx + 4)), int(min(img.shape[0], (y2 - top) * sy + 4))
        if xb > xa and yb > ya:
            ax.imshow(img[ya:yb, xa:xb])
        ax.set_title(caption, fontsize=7)
    fig.tight_layout()
    return fig
