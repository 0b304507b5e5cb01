"""Notebook widgets (ipywidgets 8, matplotlib; imported lazily: ``pip install 'dsprobe[notebook]'``).

* :class:`Explorer` (from :mod:`dsprobe.notebook.browser`, with the shared :class:`FrameBrowser`): a frame
  browser for a recording: the recorded image with the pipeline's own
  detections (nvinfer's output, if recorded) and optional ground truth.
* :class:`Tuner`: postprocess settings on recorded frames: decoder, per-class pre-cluster threshold,
  NMS IoU, top-k, cluster mode, min/max box size; boxes drawn in frame pixels; A/B of two settings
  with the differing boxes highlighted; detections per frame over the whole recording.
* :func:`search_panel`: a search result's heat map with a button that takes the best settings into a tuner.

Figures are rendered with matplotlib's Agg into ``ipywidgets.Image`` widgets on every change (no
ipympl), so they work in any Jupyter front end. Every callback is a plain method and every result is
an attribute (``tuner.detections``, ``tuner.num_patches``, ``tuner.counts``...), so tests drive the
widgets by setting control values, without a browser.
"""

from __future__ import annotations

import html
import time
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from dsprobe.analysis.search import Reclusterer, SearchResult
from dsprobe.detections import Detections
from dsprobe.notebook.browser import Explorer, FrameBrowser, recording_config, require_ipywidgets
from dsprobe.notebook.figures import figure_png, label_of
from dsprobe.notebook.plots import counts_by_stream, plot_ab, plot_counts, plot_heatmap
from dsprobe.postprocess.nvinfer_params import key_param
from dsprobe.postprocess.pipeline import Postprocess, PostprocessError
from dsprobe.postprocess.registry import step_names

ALL_CLASSES = -1

__all__ = ["ALL_CLASSES", "Explorer", "FrameBrowser", "Tuner", "search_panel"]


#: tuner control -> the nvinfer key whose param it sets (the key table names the param)
_KEY_OF = {
    "threshold": "pre-cluster-threshold",
    "iou": "nms-iou-threshold",
    "topk": "topk",
    "min_w": "detected-min-w",
    "min_h": "detected-min-h",
    "max_w": "detected-max-w",
    "max_h": "detected-max-h",
}
_PARAM_OF = {control: key_param(key).param for control, key in _KEY_OF.items()}


class Tuner(FrameBrowser):
    """Tune a postprocess on a recording's frames.

    * ``postprocess`` (A): the current settings (default: from the recording's nvinfer config with
      ``decoder``); ``postprocess_b`` (B): the settings A is compared with, when ``ab`` is ticked.
    * ``detections`` / ``detections_b``: this frame's boxes (frame px); ``num_patches``: rectangles
      drawn for A; ``counts``: detections per frame over the recording (frame_num x stream);
      ``count_text``: the HTML the user sees (``<span class="dsprobe-count">N</span> boxes``).
    * Controls: ``stream``, ``frame``, ``decoder``, ``class_select`` (-1 = all classes), ``threshold``,
      ``iou``, ``topk``, ``cluster``, ``min_w``, ``min_h``, ``max_w``, ``max_h``, ``ab``, ``set_b``.
    """

    def __init__(
        self,
        rec: Any,
        postprocess: Postprocess | None = None,
        *,
        decoder: str = "yolov8",
        rows: Sequence[int] | None = None,
        gt: Any = None,
        show_counts: bool = True,
        progress: bool = False,
    ) -> None:
        if postprocess is None:
            cfg = recording_config(rec)
            if cfg is None:
                raise ValueError(
                    "this recording stores no single nvinfer config: pass postprocess="
                )
            postprocess = Postprocess.from_nvinfer_config(cfg, decoder=decoder)
        if rows is None:  # frames with frame-level (PGIE) tensors
            rows = np.flatnonzero(rec.frames["layer_row"].to_numpy() >= 0)
        super().__init__(rec, rows, labels=postprocess.labels, gt=gt)
        w = require_ipywidgets()
        self.progress = progress
        self.postprocess = postprocess
        self.postprocess_b: Postprocess | None = None
        self.detections = Detections.empty("frame")
        self.detections_b: Detections | None = None
        self.num_patches = 0
        self.counts: pd.DataFrame | None = None
        self.counts_b: pd.DataFrame | None = None
        self.show_counts = show_counts
        self.on_change: list[Callable[["Tuner"], None]] = []
        self._decode()

        slider = dict(
            continuous_update=False,
            style={"description_width": "110px"},
            layout=w.Layout(width="420px"),
        )
        box = dict(style={"description_width": "50px"}, layout=w.Layout(width="130px"))
        n = len(self.labels) or postprocess.num_classes
        self.decoder = w.Dropdown(
            options=step_names("decode"),
            value=postprocess.steps[0].name,
            description="decoder",
            layout=w.Layout(width="240px"),
        )
        self.cluster = w.Dropdown(
            options=step_names("cluster"),
            value=postprocess.step("cluster").name,
            description="cluster",
            layout=w.Layout(width="240px"),
        )
        self.class_select = w.Dropdown(
            options=[("all classes", ALL_CLASSES)]
            + [(label_of(c, self.labels), c) for c in range(n)],
            value=ALL_CLASSES,
            description="class",
            layout=w.Layout(width="240px"),
        )
        self.threshold = w.FloatSlider(
            min=0.0,
            max=1.0,
            step=0.01,
            readout_format=".2f",
            description="pre-cluster thr",
            **slider,
        )
        self.iou = w.FloatSlider(
            min=0.0, max=1.0, step=0.01, readout_format=".2f", description="NMS IoU", **slider
        )
        self.topk = w.IntSlider(min=-1, max=300, description="top-k (-1 all)", **slider)
        self.min_w = w.BoundedIntText(min=0, max=16384, description="min w", **box)
        self.min_h = w.BoundedIntText(min=0, max=16384, description="min h", **box)
        self.max_w = w.BoundedIntText(min=0, max=16384, description="max w", **box)
        self.max_h = w.BoundedIntText(min=0, max=16384, description="max h", **box)
        self.ab = w.Checkbox(
            value=False, description="compare A/B", indent=False, layout=w.Layout(width="120px")
        )
        self.set_b = w.Button(
            description="B \u2190 A",
            tooltip="copy the current settings (A) into B",
            layout=w.Layout(width="80px"),
        )
        self.counts_image = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self._sync_controls()
        for name in _PARAM_OF:
            getattr(self, name).observe(self._on_param, "value")
        self.class_select.observe(self._on_class, "value")
        self.decoder.observe(self._on_decoder, "value")
        self.cluster.observe(self._on_cluster, "value")
        self.ab.observe(self._on_ab, "value")
        self.set_b.on_click(lambda _: self.set_postprocess_b(self.postprocess))
        self.widget = w.VBox(
            [
                w.HBox([self.stream, self.frame]),
                w.HBox([self.decoder, self.cluster, self.class_select]),
                w.HBox(
                    [
                        w.VBox([self.threshold, self.iou, self.topk]),
                        w.VBox(
                            [
                                w.HBox([self.min_w, self.max_w]),
                                w.HBox([self.min_h, self.max_h]),
                                w.HBox([self.ab, self.set_b]),
                            ]
                        ),
                    ]
                ),
                w.HBox([self.count_text, self.status]),
                self.image,
                self.counts_image,
            ]
        )
        self.render(counts=True)

    # ---------------------------------------------------------------- postprocess state
    def _decode(self) -> None:
        self.decoded = self.postprocess.decode_recording(
            self.rec, self.rows, progress=self.progress
        )
        self.reclusterer = Reclusterer(self.decoded)
        self.counts_b = None

    @property
    def class_id(self) -> int | None:
        c = int(self.class_select.value)
        return None if c == ALL_CLASSES else c

    def _sync_controls(self) -> None:
        """Show the current postprocess's values (for the selected class) in the controls."""
        pp, cls = self.postprocess, self.class_id
        specs = pp.param_specs()
        self._syncing = True
        try:
            self.decoder.value = pp.steps[0].name
            self.cluster.value = pp.step("cluster").name
            for name, param in _PARAM_OF.items():
                ctl = getattr(self, name)
                if param not in specs:  # this cluster step has no such param
                    ctl.disabled = True
                    continue
                ctl.disabled = False
                value = pp.get_param(param, cls)
                if (
                    np.ndim(value) > 0
                ):  # per-class values while "all classes" is chosen: show class 0's
                    value = list(value)[0]
                ctl.value = type(ctl.value)(value)
        finally:
            self._syncing = False

    def set_postprocess(self, pp: Postprocess) -> None:
        """Make ``pp`` the current settings (A): e.g. ``tuner.set_postprocess(search_result.best)``."""
        decoder_changed = pp.steps[0].to_dict() != self.postprocess.steps[0].to_dict()
        self.postprocess = pp
        if decoder_changed:
            self._decode()
        self._sync_controls()
        self.render(counts=True)

    def set_postprocess_b(self, pp: Postprocess | None) -> None:
        """Settings B for the A/B view (None: no comparison); ticks ``ab`` when given."""
        self.postprocess_b = pp
        self.counts_b = None
        self._syncing = True
        try:
            self.ab.value = pp is not None
        finally:
            self._syncing = False
        self.render(counts=True)

    def _apply(self, pp: Postprocess) -> None:
        self.postprocess = pp
        for cb in self.on_change:
            cb(self)
        self.render(counts=True)

    def _on_param(self, change: dict) -> None:
        if self._syncing:
            return
        name = next(k for k in _PARAM_OF if getattr(self, k) is change["owner"])
        try:
            pp = self.postprocess.set_params({_PARAM_OF[name]: change["new"]}, self.class_id)
        except (ValueError, PostprocessError) as exc:
            self._set_status(str(exc), error=True)
            return
        self._apply(pp)

    def _on_class(self, change: dict) -> None:
        self._sync_controls()

    def _on_decoder(self, change: dict) -> None:
        if self._syncing:
            return
        old = self.postprocess
        try:
            self.postprocess = old.with_step("decode", change["new"])
            self._decode()
            self.render(counts=True)
        except (PostprocessError, ValueError, KeyError) as exc:
            self.postprocess = old
            self._decode()
            self._syncing = True
            self.decoder.value = old.steps[0].name
            self._syncing = False
            self._set_status(
                f"decoder {change['new']!r} does not fit this recording: {exc}", error=True
            )

    def _on_cluster(self, change: dict) -> None:
        if self._syncing:
            return
        name = change["new"]
        cur = self.postprocess.step("cluster").params
        bare = self.postprocess.with_step("cluster", name)
        accepted = bare.resolved_params(bare.steps.index(bare.step("cluster")))
        params = {k: v for k, v in cur.items() if k in accepted}
        self.postprocess = self.postprocess.with_step("cluster", name, **params)
        self._sync_controls()
        self._apply(self.postprocess)

    def _on_ab(self, change: dict) -> None:
        if self._syncing:
            return
        if change["new"] and self.postprocess_b is None:
            self.postprocess_b = self.postprocess
        self.render(counts=True)

    # ---------------------------------------------------------------- drawing
    def render(self, counts: bool = False) -> None:
        """Redraw this frame (and, with ``counts``, the per-frame counts over the recording)."""
        t0 = time.perf_counter()
        v = self.frame_view
        try:
            self.detections = self.postprocess(v)
            self.detections_b = (
                self.postprocess_b(v) if self.ab.value and self.postprocess_b else None
            )
        except PostprocessError as exc:
            self._set_status(str(exc), error=True)
            return
        self._set_status(self._describe())
        if self.detections_b is not None:
            canvas = self.canvas(2)
            fig = plot_ab(v, self.detections, self.detections_b, self.labels, canvas=canvas)
            self.num_patches = len(fig.dsprobe_patches[0])
            only = int(sum(m.sum() for m in fig.dsprobe_only))
            text = (
                f'A: <b><span class="dsprobe-count">{len(self.detections)}</span></b> boxes &middot; '
                f'B: <b><span class="dsprobe-count-b">{len(self.detections_b)}</span></b> boxes &middot; '
                f"{only} differ (yellow)"
            )
        else:
            canvas = self.canvas(1)
            drawn = canvas.draw(
                v,
                [(self.detections, None, f"source {v.source_id} frame {v.frame_num}")],
                self.labels,
                gt=self._gt_for_frame(),
            )
            self.num_patches = len(drawn[0])
            text = f'<b><span class="dsprobe-count">{len(self.detections)}</span></b> boxes on this frame'
        self.image.value = canvas.jpeg()
        self.count_text.value = text
        self.render_seconds = time.perf_counter() - t0
        if self.show_counts:
            self.render_counts(recompute=counts)

    def render_counts(self, recompute: bool = True) -> None:
        """Detections per frame over every tuned frame for A (and B, dashed), current frame marked."""
        frames = self.rec.frames
        if recompute or self.counts is None:
            self.counts = counts_by_stream(frames, self.reclusterer.counts(self.postprocess))
            if self.ab.value and self.postprocess_b is not None and self.counts_b is None:
                self.counts_b = counts_by_stream(frames, self._counts_of(self.postprocess_b))
        other = self.counts_b if self.ab.value and self.postprocess_b is not None else None
        cur = int(frames.at[self.row, "frame_num"])
        fig = plot_counts(
            self.counts,
            current=cur,
            other=other,
            title=f"detections per frame, {len(self.rows)} frames "
            f"(total A {int(np.nansum(self.counts.to_numpy()))}"
            + (f", B {int(np.nansum(other.to_numpy()))})" if other is not None else ")"),
        )
        self.counts_image.value = figure_png(fig)

    def _counts_of(self, pp: Postprocess) -> pd.Series:
        if pp.steps[0].to_dict() == self.decoded.postprocess.steps[0].to_dict():
            return self.reclusterer.counts(pp)
        return Reclusterer(pp.decode_recording(self.rec, self.rows)).counts(pp)

    def _describe(self) -> str:
        s = self.postprocess.steps
        return " \u2192 ".join(f"{x.kind}:{x.name}" for x in s)


def search_panel(
    result: SearchResult,
    tuner: Tuner | None = None,
    index: str = "pre_cluster_threshold",
    columns: str = "iou_threshold",
) -> Any:
    """The search's heat map (``index`` x ``columns``, best outlined), the best settings, and a button
    that takes them into ``tuner`` (same as ``tuner.set_postprocess(result.best)``)."""
    w = require_ipywidgets()
    best = (result.best_params.get(index), result.best_params.get(columns))
    fig = plot_heatmap(
        result.pivot(index, columns),
        title=f"{result.metric} by {index} x {columns}",
        best=best if None not in best else None,
    )
    image = w.Image(value=figure_png(fig), format="png")
    top = result.table.iloc[0]
    text = w.HTML(
        f"<b>best</b>: {html.escape(str(result.best_params))} &rarr; mAP@0.5 {top['map50']:.4f}, "
        f"mAP@0.5:0.95 {top['map50_95']:.4f} ({len(result.table)} settings tried)"
    )
    parts = [image, text]
    if tuner is not None:
        button = w.Button(
            description="use best in tuner", button_style="success", layout=w.Layout(width="180px")
        )
        button.on_click(lambda _: tuner.set_postprocess(result.best))
        parts.append(button)
    return w.VBox(parts)
