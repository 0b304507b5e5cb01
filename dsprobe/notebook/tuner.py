"""Notebook widgets (ipywidgets 8, matplotlib; imported lazily: ``pip install 'dsprobe[notebook]'``).

* :class:`Explorer` (from :mod:`dsprobe.notebook.browser`, with the shared :class:`FrameBrowser`): a frame
  browser for a recording: the recorded image with the pipeline's own
  detections (nvinfer's output, if recorded) and optional ground truth.
* :class:`Tuner`: postprocess settings on recorded frames: decoder, per-class pre-cluster threshold,
  NMS IoU, top-k, cluster mode, min/max box size; boxes drawn in frame pixels; A/B of two settings
  with the differing boxes highlighted; with ground truth, every box coloured true / false positive
  and every missed object drawn, precision / recall / F1 of the frame at once and of the whole
  recording (with mAP) when a background thread has it; a zoomable, clickable timeline of
  detections (and errors) per frame; an explicit save button.

Figures are rendered with matplotlib's Agg into ``ipywidgets.Image`` widgets on every change (no
ipympl), so they work in any Jupyter front end. Every callback is a plain method and every result is
an attribute (``tuner.detections``, ``tuner.num_patches``, ``tuner.counts``, ``tuner.score``...), so
tests drive the widgets by setting control values, without a browser (``background=False`` computes
whole-recording results inline; ``tuner.wait()`` waits for the background thread otherwise).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from dsprobe.analysis.search import Reclusterer
from dsprobe.detections import Detections
from dsprobe.notebook.browser import Explorer, FrameBrowser, recording_config
from dsprobe.notebook.controls import SaveSpec, require_ipywidgets
from dsprobe.notebook.figures import label_of
from dsprobe.notebook.metrics_panel import Evaluator, RecordingScore, Worker
from dsprobe.notebook.param_controls import param_control, shown, step_options, with_option
from dsprobe.notebook.timeline import Timeline
from dsprobe.notebook.tuner_view import TunerDisplay
from dsprobe.postprocess.gpu.backend import resolve_device
from dsprobe.postprocess.nvinfer_params import key_param
from dsprobe.postprocess.pipeline import Postprocess, PostprocessError
from dsprobe.postprocess.registry import is_builtin, one_line

ALL_CLASSES = -1

__all__ = ["ALL_CLASSES", "Explorer", "FrameBrowser", "Tuner"]


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


class Tuner(TunerDisplay):
    """Tune a postprocess on a recording's frames.

    * ``postprocess`` (A): the current settings (default: from the recording's nvinfer config with
      ``decoder``); ``postprocess_b`` (B): the settings A is compared with, when ``ab`` is ticked.
    * ``detections`` / ``detections_b``: this frame's boxes (frame px); ``num_patches``: rectangles
      drawn for A; ``counts``: detections per frame over the recording (frame_num x stream);
      ``count_text``: the HTML the user sees (``<span class="dsprobe-count">N</span> boxes``).
    * With ``gt``: ``frame_outcome`` (this frame's boxes judged: true / false positives, missed
      objects, precision / recall / F1), ``score`` / ``score_b`` (the whole recording's, from the
      background thread: ``wait()`` for it), shown in ``frame_metrics`` / ``metrics_text``.
    * ``decoded``: reuse a ``pp.decode_recording(rec, rows)`` (decode once per notebook);
      ``save_to``: the file name the save button starts with (nothing is written until it is clicked);
      ``background=False``: whole-recording results computed inline.
    * Controls: ``stream``, ``frame``, ``player`` (play / step), ``zoom``, ``decoder``,
      ``class_select`` (-1 = all classes), ``threshold``, ``iou``, ``topk``, ``cluster``, ``min_w``,
      ``min_h``, ``max_w``, ``max_h``, ``ab``, ``set_b``, ``saver`` (file name + save button),
      ``timeline`` (click to jump, zoom).
    * ``device="cuda"``: decoding and re-clustering run on the GPU (CuPy, ``docs/gpu.md``) with the
      same boxes; without CuPy or a GPU one warning says so and the CPU runs them.
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
        decoded: Any = None,
        save_to: str | None = None,
        background: bool = True,
        device: str = "cpu",
    ) -> None:
        self.device = resolve_device(device)  # one message here when the GPU cannot be used
        if postprocess is None:
            if decoded is not None:
                postprocess = decoded.postprocess
            else:
                cfg = recording_config(rec)
                if cfg is None:
                    raise ValueError(
                        "this recording stores no single nvinfer config: pass postprocess="
                    )
                postprocess = Postprocess.from_nvinfer_config(cfg, decoder=decoder)
        if rows is None:  # frames with frame-level (PGIE) tensors
            rows = (
                sorted(decoded.candidates)
                if decoded is not None
                else np.flatnonzero(rec.frames["layer_row"].to_numpy() >= 0)
            )
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
        self.score: RecordingScore | None = None
        self.score_b: RecordingScore | None = None
        self.frame_outcome: Any = None
        self.show_counts = show_counts
        self.on_change: list[Callable[["Tuner"], None]] = []
        self.worker = Worker(background)
        self.decoded = decoded
        self._decode(reuse=decoded is not None)

        slider = dict(
            continuous_update=False,
            style={"description_width": "110px"},
            layout=w.Layout(width="420px"),
        )
        box = dict(style={"description_width": "50px"}, layout=w.Layout(width="130px"))
        n = len(self.labels) or postprocess.num_classes
        self.decoder = w.Dropdown(
            options=step_options("decode", postprocess.steps[0].name),
            value=postprocess.steps[0].name,
            description="decoder",
            layout=w.Layout(width="240px"),
        )
        self.cluster = w.Dropdown(
            options=step_options("cluster", cluster_name(postprocess)),
            value=cluster_name(postprocess),
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
        self.per_class_note = w.HTML()
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
        self.metrics_text = w.HTML()
        self.frame_metrics = w.HTML()
        self.timeline = Timeline(self._jump)
        self.saver = SaveSpec(lambda: self.postprocess, save_to or "tuned_postprocess.json")
        self.step_params = w.VBox([])  # controls for the params of the user's own steps
        self.param_controls: dict[str, Any] = {}
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
                self.navigation(),
                w.HBox([self.decoder, self.cluster, self.class_select, self.per_class_note]),
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
                self.step_params,
                self.saver.widget,
                w.HBox([self.count_text, self.status]),
                self.frame_metrics,
                self.metrics_text,
                self.zoom.box,
                self.timeline.widget,
            ]
        )
        self.timeline.widget.layout.display = None if show_counts else "none"
        self.widget.add_class("dsprobe-tuner")
        self.metrics_text.add_class("dsprobe-metrics-line")
        self.frame_metrics.add_class("dsprobe-frame-metrics-line")
        self.render(counts=True)

    # ---------------------------------------------------------------- postprocess state
    def _decode(self, reuse: bool = False) -> None:
        """Decode every row once (or reuse ``decoded=``): all later changes re-run from the cache."""
        if not reuse:
            self.decoded = self.postprocess.to(self.device).decode_recording(
                self.rec, self.rows, progress=self.progress
            )
        self.reclusterer = Reclusterer(self.decoded, device=self.device)
        self.evaluator = (
            Evaluator(self.reclusterer, self.gt, self.rec, self.rows)
            if self.gt is not None
            else None
        )
        self.counts_b = None
        self.score_b = None

    @property
    def class_id(self) -> int | None:
        c = int(self.class_select.value)
        return None if c == ALL_CLASSES else c

    def _sync_controls(self) -> None:
        """Show the current postprocess's values (for the selected class) in the controls."""
        pp, cls = self.postprocess, self.class_id
        specs = pp.param_specs()
        self._syncing = True
        notes = []
        try:
            self.decoder.options = with_option(self.decoder.options, pp.steps[0].name)
            self.decoder.value = pp.steps[0].name
            self.cluster.options = with_option(self.cluster.options, cluster_name(pp))
            self.cluster.value = cluster_name(pp)
            self.cluster.disabled = self.cluster.value is None
            self._sync_step_params(specs)
            for name, param in _PARAM_OF.items():
                ctl = getattr(self, name)
                if param not in specs:  # this cluster step has no such param
                    ctl.disabled = True
                    continue
                ctl.disabled = False
                value = pp.get_param(param, cls)
                if np.ndim(value) > 0:  # per-class values while "all classes" is chosen
                    value, note = self._common_value(name, value)
                    notes += [note] if note else []
                ctl.value = type(ctl.value)(value)
        finally:
            self._syncing = False
        self.per_class_note.value = (
            f'<small style="color:#a60">{"; ".join(notes)}</small>' if notes else ""
        )

    def _common_value(self, control: str, values: Sequence[float]) -> tuple[float, str]:
        """What "all classes" shows for per-class values: the value most classes share, and a note
        naming the classes that differ (moving the control sets every class)."""
        vals = [float(v) for v in values]
        common = max(set(vals), key=vals.count)
        differ = [f"{label_of(c, self.labels)} {v:g}" for c, v in enumerate(vals) if v != common]
        if not differ:
            return common, ""
        return common, f"{getattr(self, control).description}: {common:g}, except " + ", ".join(
            differ
        )

    def _sync_step_params(self, specs: dict) -> None:
        """One control per param of the user's own steps (from their signatures), showing the
        current value; rebuilt when the set of params changes (another decoder chosen)."""
        pp, cls = self.postprocess, self.class_id
        user = {
            k: spec
            for k, spec in specs.items()
            if spec.step_index is not None
            and not is_builtin(pp.step_function(spec.step_index))
            and k not in _PARAM_OF.values()
        }
        if list(user) != list(self.param_controls):
            controls = {k: param_control(k, spec, pp.get_param(k)) for k, spec in user.items()}
            self.param_controls = {k: c for k, c in controls.items() if c is not None}
            for c in self.param_controls.values():
                c.observe(self._on_step_param, "value")
            self.step_params.children = tuple(self.param_controls.values())
        for k, ctl in self.param_controls.items():
            ctl.value = shown(pp.get_param(k, cls if user[k].per_class else None))

    def _on_step_param(self, change: dict) -> None:
        if self._syncing:
            return
        key = next(k for k, c in self.param_controls.items() if c is change["owner"])
        per_class = self.postprocess.param_specs()[key].per_class
        try:
            pp = self.postprocess.set_params(
                {key: change["new"]}, self.class_id if per_class else None
            )
        except (ValueError, PostprocessError) as exc:
            self._set_status(one_line(exc), error=True)
            return
        self._apply(pp)

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
        old = self.postprocess
        self.postprocess = pp
        if pp.steps[0].to_dict() != old.steps[0].to_dict():  # a decoder param: decode again
            try:
                self._decode()
            except PostprocessError as exc:  # the user's decoder failed: keep the old settings
                self.postprocess = old
                self._sync_controls()
                self._set_status(one_line(exc), error=True)
                return
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
            self._set_status(one_line(exc), error=True)
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
            self._sync_controls()  # the new decoder's own params
            self.render(counts=True)
        except (PostprocessError, ValueError, KeyError) as exc:
            self.postprocess = old
            self._decode()
            self._syncing = True
            self.decoder.value = old.steps[0].name
            self._syncing = False
            self._set_status(
                f"decoder {change['new']!r} does not fit this recording: {one_line(exc)}",
                error=True,
            )

    def _on_cluster(self, change: dict) -> None:
        if self._syncing:
            return
        name = change["new"]
        if name is None:
            return
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


def cluster_name(pp: Postprocess) -> str | None:
    """The name of ``pp``'s cluster step (None when it has none)."""
    return next((s.name for s in pp.steps if s.kind == "cluster"), None)
