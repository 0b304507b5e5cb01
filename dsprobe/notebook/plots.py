"""Plots with matplotlib (imported lazily; ``pip install 'dsprobe[notebook]'``): per-frame counts, score distributions, frame gaps,
PR curves, search heat maps and crop galleries. The core never imports this module.

Figure plumbing (Agg figures, PNG/JPEG bytes, palette, labels) is :mod:`dsprobe.notebook.figures`; its names
are importable from here too. Every ``plot_*`` function returns a :class:`matplotlib.figure.Figure` that pyplot does not track (no
figure piles up, nothing is shown twice in a notebook); a notebook shows it as the cell's value, and
:func:`figure_png` renders it to PNG bytes (what the widgets put in an ``ipywidgets.Image``).
Frames with boxes are :mod:`dsprobe.notebook.frames`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from dsprobe.notebook.figures import (
    PALETTE,
    axes_for,
    color,
    label_of,
    new_figure,
)


# ---------------------------------------------------------------------------------------------- tables
def counts_by_stream(frames: pd.DataFrame, counts: pd.Series) -> pd.DataFrame:
    """Per-frame counts (Series indexed by frame row) as a table: index frame_num, one column per
    stream (``source 0``, ...)."""
    f = frames.loc[counts.index]
    df = pd.DataFrame(
        {
            "frame_num": f["frame_num"].to_numpy(),
            "stream": [f"source {s}" for s in f["source_id"]],
            "count": counts.to_numpy(),
        }
    )
    return df.pivot_table(index="frame_num", columns="stream", values="count", aggfunc="sum")


def frame_gaps(frames: pd.DataFrame) -> pd.DataFrame:
    """Frames missing from the recording, per stream and GIE: one row per gap with ``source_id``,
    ``unique_id``, ``after_frame`` (last frame_num before the gap), ``missing`` (frames) and
    ``pts_gap_s`` (PTS distance across the gap)."""
    rows = []
    for (src, uid), g in frames.groupby(["source_id", "unique_id"]):
        g = g.sort_values("frame_num")
        fn, pts = g["frame_num"].to_numpy(np.int64), g["pts_ns"].to_numpy(np.int64)
        for i in np.flatnonzero(np.diff(fn) > 1):
            rows.append(
                (
                    int(src),
                    int(uid),
                    int(fn[i]),
                    int(fn[i + 1] - fn[i] - 1),
                    (pts[i + 1] - pts[i]) / 1e9,
                )
            )
    return pd.DataFrame(
        rows, columns=["source_id", "unique_id", "after_frame", "missing", "pts_gap_s"]
    )


# ---------------------------------------------------------------------------------------------- plots
def plot_counts(
    counts: Any,
    ax: Any = None,
    title: str = "detections per frame",
    *,
    current: float | None = None,
    other: Any = None,
    other_label: str = "B",
) -> Any:
    """Per-frame detection counts (DataFrame indexed by frame number, one column per stream, as
    :func:`counts_by_stream` makes). ``other``: a second table drawn dashed (A/B); ``current``: a
    frame number marked with a vertical line."""
    fig, ax = axes_for(ax, (8, 2.5))
    for k, col in enumerate(counts.columns):
        ax.plot(
            counts.index, counts[col], linewidth=1, color=PALETTE[k % len(PALETTE)], label=str(col)
        )
        if other is not None and col in other:
            ax.plot(
                other.index,
                other[col],
                linewidth=1,
                linestyle="--",
                color=PALETTE[k % len(PALETTE)],
                label=f"{col} ({other_label})",
            )
    if current is not None:
        ax.axvline(current, color="black", linewidth=0.8)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("frame", fontsize=8)
    ax.tick_params(labelsize=7)
    if len(counts.columns):
        ax.legend(fontsize=7, loc="upper right")
    if ax.get_subplotspec() is not None and len(fig.axes) == 1:
        fig.subplots_adjust(
            left=0.06, right=0.99, bottom=0.2, top=0.88
        )  # fixed: tight_layout costs ~100 ms
    return fig


def plot_score_distributions(
    detections: pd.DataFrame,
    labels: Sequence[str] = (),
    ax: Any = None,
    bins: int = 50,
    title: str = "scores per class",
) -> Any:
    """Histogram of ``score`` per ``class_id`` (log counts) of a detections DataFrame."""
    fig, ax = axes_for(ax, (7, 3))
    edges = np.linspace(0, 1, bins + 1)
    for c in sorted(detections["class_id"].unique()):
        s = detections.loc[detections["class_id"] == c, "score"].to_numpy()
        ax.hist(
            np.clip(s, 0, 1),
            bins=edges,
            histtype="step",
            color=color(c),
            label=f"{label_of(int(c), labels)} ({len(s)})",
        )
    ax.set_yscale("log")
    ax.set_xlabel("score")
    ax.set_ylabel("boxes")
    ax.set_title(title, fontsize=9)
    if len(detections):
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_frame_gaps(frames: pd.DataFrame, ax: Any = None) -> Any:
    """Per stream: the step from one recorded frame_num to the next (1 = no frame missing)."""
    fig, ax = axes_for(ax, (8, 2.5))
    for k, ((src, uid), g) in enumerate(frames.groupby(["source_id", "unique_id"])):
        fn = np.sort(g["frame_num"].to_numpy())
        if len(fn) > 1:
            ax.step(
                fn[1:],
                np.diff(fn),
                where="post",
                color=PALETTE[k % len(PALETTE)],
                linewidth=1,
                label=f"source {src} (GIE {uid})",
            )
    ax.set_xlabel("frame")
    ax.set_ylabel("frame_num step")
    ax.set_title("frame gaps per stream (1 = none missing)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_pr_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    ax: Any = None,
    ap: dict[str, float] | None = None,
    title: str = "PR @ IoU 0.5",
) -> Any:
    """Precision-recall curves per class (``evaluate(...).pr_curves``; ``ap``: per-class AP for the legend)."""
    fig, ax = axes_for(ax, (5, 4))
    for k, (name, (r, p)) in enumerate(curves.items()):
        label = f"{name} (AP {ap[name]:.3f})" if ap and name in ap else name
        ax.plot(r, p, label=label, color=PALETTE[k % len(PALETTE)])
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    if curves:
        ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_heatmap(
    table: Any, ax: Any = None, title: str = "mAP@0.5", best: tuple[Any, Any] | None = None
) -> Any:
    """A 2-D search result (``SearchResult.pivot()``) as an annotated heat map; ``best`` (index value,
    column value) is outlined."""
    from matplotlib.patches import Rectangle

    fig, ax = axes_for(ax, (6, 4.5))
    values = table.to_numpy(dtype=float)
    im = ax.imshow(values, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(table.columns)), [f"{c:g}" for c in table.columns], fontsize=7)
    ax.set_yticks(range(len(table.index)), [f"{c:g}" for c in table.index], fontsize=7)
    ax.set_xlabel(table.columns.name or "")
    ax.set_ylabel(table.index.name or "")
    mid = np.nanmean(values) if np.isfinite(values).any() else 0
    for (i, j), v in np.ndenumerate(values):
        ax.text(
            j,
            i,
            f"{v:.3f}",
            ha="center",
            va="center",
            color="white" if v < mid else "black",
            fontsize=6,
        )
    if best is not None:
        i, j = list(table.index).index(best[0]), list(table.columns).index(best[1])
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    fig.colorbar(im, ax=ax)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def error_crops(
    rec: Any, errors: pd.DataFrame, labels: Sequence[str] = (), max_items: int = 24
) -> list[tuple[Any, np.ndarray, str]]:
    """Gallery items for :func:`crop_gallery` from :func:`dsprobe.analysis.evaluate.error_table` rows
    (false positives by descending score first, then misses)."""
    e = errors.sort_values(["kind", "score"], ascending=[True, False], na_position="last").head(
        max_items
    )
    items = []
    for r in e.itertuples():
        frame = rec.find(int(r.source_id), int(r.frame_num))
        what = f"FP {r.score:.2f}" if r.kind == "false_positive" else "missed"
        items.append(
            (
                frame,
                np.array([r.x1, r.y1, r.x2, r.y2]),
                f"{what} {label_of(int(r.class_id), labels)}\ns{r.source_id} f{r.frame_num}",
            )
        )
    return items


def crop_gallery(
    items: Sequence[tuple[Any, np.ndarray, str]],
    cols: int = 6,
    size: float = 1.6,
    title: str | None = None,
) -> Any:
    """A grid of crops: ``items`` are (frame view, x1y1x2y2 box in frame px, caption)."""
    rows = max(1, -(-len(items) // cols))
    fig = new_figure((cols * size, rows * size + (0.3 if title else 0)))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
    for ax in axes:
        ax.axis("off")
    for ax, (frame, box, caption) in zip(axes, items):
        img = frame.image
        ax.set_title(caption, fontsize=6)
        if img is None:
            continue
        left, top, w, h = frame.image_rect
        sx, sy = img.shape[1] / w, img.shape[0] / h
        x1, y1, x2, y2 = box
        xa, ya = int(max(0, (x1 - left) * sx - 4)), int(max(0, (y1 - top) * sy - 4))
        xb, yb = (
            int(min(img.shape[1], (x2 - left) * sx + 4)),
            int(min(img.shape[0], (y2 - top) * sy + 4)),
        )
        if xb > xa and yb > ya:
            ax.imshow(img[ya:yb, xa:xb])
    if title:
        fig.suptitle(title, fontsize=9)
    if not items:
        axes[0].text(0.5, 0.5, "nothing to show", ha="center", va="center", fontsize=8)
    fig.tight_layout()
    return fig
