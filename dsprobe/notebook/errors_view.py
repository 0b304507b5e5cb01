"""Error analysis in the notebook: PR and F1-vs-confidence curves with the current threshold marked,
the confusion matrix, errors per TIDE type, and :class:`ErrorGallery`, a gallery grouped by error
type with one entry per run of frames (the detection and the nearby ground truth drawn), each with a
button that opens its frame in a browser widget (Tuner or Explorer)."""

from __future__ import annotations

import html
import io
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from dsprobe.analysis.errors import ERROR_TYPES
from dsprobe.analysis.objectives import Matches, confidence_sweep
from dsprobe.notebook.controls import require_ipywidgets
from dsprobe.notebook.figures import PALETTE, label_of, new_figure
from dsprobe.notebook.raster import OUTCOME_COLORS


def _threshold_of(threshold: float | Sequence[float] | Mapping[int, float], c: int) -> float:
    if isinstance(threshold, Mapping):
        return float(threshold.get(c, min(threshold.values(), default=0.0)))
    if np.ndim(threshold):
        return float(list(threshold)[c])
    return float(threshold)


def plot_operating_curves(
    matches: Matches,
    threshold: float | Sequence[float] | Mapping[int, float],
    labels: Sequence[str] = (),
    title: str = "",
) -> Any:
    """Per class: precision-recall (left) and F1 over confidence (right) at IoU 0.5, computed from
    ``matches`` (taken at a threshold below the current one); the current ``threshold`` (one value,
    or per class) is a dot on each PR curve and a dashed line on each F1 curve."""
    fig = new_figure((10, 3.6))
    ax_pr, ax_f1 = fig.subplots(1, 2)
    classes = sorted(c for c, n in matches.num_gt.items() if n > 0)
    for c in classes:
        col = PALETTE[c % len(PALETTE)]
        tc = matches.for_class(c)
        sw = confidence_sweep(tc)
        thr = _threshold_of(threshold, c)
        at = confidence_sweep(tc, [thr]).iloc[0]
        name = label_of(c, labels)
        ax_pr.plot(sw["recall"], sw["precision"], color=col, linewidth=1.2, label=name)
        ax_pr.plot([at["recall"]], [at["precision"]], "o", color=col, markersize=6, mec="black")
        ax_f1.plot(sw["threshold"], sw["f1"], color=col, linewidth=1.2, label=f"{name}")
        ax_f1.axvline(thr, color=col, linestyle="--", linewidth=0.8)
        ax_f1.plot([thr], [at["f1"]], "o", color=col, markersize=6, mec="black")
    ax_pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    ax_pr.set_title("precision-recall @ IoU 0.5 (dot: current threshold)", fontsize=9)
    ax_f1.set(xlabel="confidence threshold", ylabel="F1", xlim=(0, 1), ylim=(0, 1.02))
    ax_f1.set_title("F1 over confidence (dashed: current threshold)", fontsize=9)
    if classes:
        ax_pr.legend(fontsize=7, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_confusion(cm: pd.DataFrame, title: str = "confusion matrix @ IoU 0.5") -> Any:
    """A :func:`~dsprobe.analysis.errors.confusion_matrix` as an annotated heat map (counts)."""
    fig = new_figure((1.2 + 0.75 * cm.shape[1], 1.0 + 0.6 * cm.shape[0]))
    ax = fig.add_subplot()
    v = cm.to_numpy()
    ax.imshow(np.log1p(v), cmap="Blues")
    ax.set_xticks(range(cm.shape[1]), list(cm.columns), fontsize=7, rotation=30)
    ax.set_yticks(range(cm.shape[0]), list(cm.index), fontsize=7)
    ax.set_xlabel(cm.columns.name or "detected", fontsize=8)
    ax.set_ylabel(cm.index.name or "ground truth", fontsize=8)
    hi = np.log1p(v).max() if v.size else 0
    for (i, j), n in np.ndenumerate(v):
        ax.text(
            j,
            i,
            str(n),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if np.log1p(n) > hi / 2 else "black",
        )
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_error_breakdown(errors: pd.DataFrame, runs: pd.DataFrame | None = None) -> Any:
    """Errors per TIDE type (bars: every error; dark part: runs of frames, when ``runs`` is given)."""
    fig = new_figure((6, 2.6))
    ax = fig.add_subplot()
    per = errors["type"].value_counts().reindex(list(ERROR_TYPES), fill_value=0)
    y = np.arange(len(per))
    ax.barh(y, per.to_numpy(), color="#9ab", label="errors (frames)")
    if runs is not None and len(runs):
        r = runs["type"].value_counts().reindex(list(ERROR_TYPES), fill_value=0)
        ax.barh(y, r.to_numpy(), color="#357", height=0.45, label="runs (objects)")
    for k, n in enumerate(per.to_numpy()):
        ax.text(n, k, f" {n}", va="center", fontsize=7)
    ax.set_yticks(y, list(per.index), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("count", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("errors by type (TIDE)", fontsize=9)
    fig.tight_layout()
    return fig


def error_thumbnail(frame: Any, entry: Mapping[str, Any], height: int = 120) -> bytes:
    """JPEG of the region around an error: the detection (red; orange for a miss) and the nearby
    ground truth (white), drawn on the recorded image (boxes in frame px)."""
    from PIL import Image, ImageDraw

    img = frame.image
    if img is None:
        img = np.full((frame.frame_size[1] // 4, frame.frame_size[0] // 4, 3), 48, np.uint8)
        rect = (0, 0, *frame.frame_size)
    else:
        rect = frame.image_rect if frame.image_rect is not None else (0, 0, *frame.frame_size)
    left, top, w, h = rect
    sx, sy = img.shape[1] / w, img.shape[0] / h
    box = np.array([entry["x1"], entry["y1"], entry["x2"], entry["y2"]], float)
    gtb = np.array([entry.get(f"gt_{k}", np.nan) for k in ("x1", "y1", "x2", "y2")], float)
    both = np.vstack([box, gtb]) if np.isfinite(gtb).all() else box[None]
    x1, y1 = both[:, 0].min(), both[:, 1].min()
    x2, y2 = both[:, 2].max(), both[:, 3].max()
    pad = 0.25 * max(x2 - x1, y2 - y1, 16)
    to_px = lambda b: [(b[0] - left) * sx, (b[1] - top) * sy, (b[2] - left) * sx, (b[3] - top) * sy]  # noqa: E731
    cx1, cy1, cx2, cy2 = to_px([x1 - pad, y1 - pad, x2 + pad, y2 + pad])
    cx1, cy1 = int(max(cx1, 0)), int(max(cy1, 0))
    cx2, cy2 = int(min(max(cx2, cx1 + 2), img.shape[1])), int(min(max(cy2, cy1 + 2), img.shape[0]))
    crop = Image.fromarray(np.ascontiguousarray(img[cy1:cy2, cx1:cx2]))
    k = height / max(crop.height, 1)
    crop = crop.resize((max(int(crop.width * k), 1), height), Image.NEAREST)
    draw = ImageDraw.Draw(crop)

    def rect_of(b: np.ndarray) -> list[float]:
        p = to_px(b)
        return [(p[0] - cx1) * k, (p[1] - cy1) * k, (p[2] - cx1) * k, (p[3] - cy1) * k]

    if np.isfinite(gtb).all():
        draw.rectangle(rect_of(gtb), outline="white", width=1)
    missed = entry.get("type") == "missed"
    draw.rectangle(rect_of(box), outline=OUTCOME_COLORS["missed" if missed else "fp"], width=2)
    buf = io.BytesIO()
    crop.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _caption(e: Mapping[str, Any], labels: Sequence[str]) -> str:
    what = label_of(int(e["class_id"]), labels)
    if e["type"] != "missed":
        what += f" {e['score']:.2f}"
    if e["type"] in ("classification", "both") and e.get("gt_class_id", -1) >= 0:
        what += f" (is {label_of(int(e['gt_class_id']), labels)})"
    run = (
        ""
        if e["first_frame"] == e["last_frame"]
        else f"<br>run {e['first_frame']}-{e['last_frame']} ({e['frames']} frames)"
    )
    return (
        f"<small><b>{html.escape(what)}</b><br>source {e['source_id']} frame {e['frame_num']}"
        f"{run}</small>"
    )


class ErrorGallery:
    """Errors grouped by TIDE type (one tab each), one entry per run of frames
    (:func:`~dsprobe.analysis.errors.error_runs`), longest runs first, ``per_type`` per tab; each entry
    shows the detection and the nearby ground truth, and its "open" button shows the frame in
    ``browser`` (``browser.goto(source_id, frame_num)``)."""

    def __init__(
        self,
        rec: Any,
        runs: pd.DataFrame,
        labels: Sequence[str] = (),
        browser: Any = None,
        per_type: int = 8,
    ) -> None:
        w = require_ipywidgets()
        self.rec, self.runs, self.labels, self.browser = rec, runs, list(labels), browser
        self.opened: list[tuple[int, int]] = []
        self.entries: dict[str, list[Any]] = {}
        tabs, titles = [], []
        for t in ERROR_TYPES:
            sub = runs[runs["type"] == t].head(per_type)
            items = [self._entry(w, e) for e in sub.to_dict("records")]
            self.entries[t] = items
            total = int((runs["type"] == t).sum())
            note = w.HTML(
                f"<small>{total} runs{'' if total <= per_type else f', {per_type} longest shown'}</small>"
            )
            tabs.append(w.VBox([note, w.HBox(items, layout=w.Layout(flex_flow="row wrap"))]))
            titles.append(f"{t} ({total})")
        self.tabs = w.Tab(children=tabs, titles=titles)
        self.widget = self.tabs
        self.widget.add_class("dsprobe-gallery")

    def _entry(self, w: Any, e: dict) -> Any:
        frame = self.rec.find(int(e["source_id"]), int(e["frame_num"]))
        img = w.Image(
            value=error_thumbnail(frame, e), format="jpeg", layout=w.Layout(height="120px")
        )
        button = w.Button(
            description="open",
            tooltip="show this frame in the browser",
            layout=w.Layout(width="70px"),
        )
        button.on_click(lambda _, s=int(e["source_id"]), f=int(e["frame_num"]): self.open(s, f))
        return w.VBox(
            [img, w.HTML(_caption(e, self.labels)), button],
            layout=w.Layout(margin="4px", width="auto"),
        )

    def open(self, source_id: int, frame_num: int) -> None:
        """Show that frame in the browser widget (what an entry's button does)."""
        self.opened.append((source_id, frame_num))
        if self.browser is not None:
            self.browser.goto(source_id, frame_num)

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)
