"""What the :class:`~dsprobe.notebook.tuner.Tuner` shows: the frame with its boxes (coloured true /
false positive against ground truth, missed objects drawn, A/B side by side with the ground truth on
both), the frame's metrics at once, and the whole recording's metrics and per-frame timeline from a
background thread (a busy note while it computes). :class:`TunerDisplay` is the Tuner's base class;
the Tuner adds the controls that change the settings."""

from __future__ import annotations

import time
from typing import Any

import pandas as pd

from dsprobe.analysis.search import Reclusterer
from dsprobe.notebook.browser import FrameBrowser
from dsprobe.notebook.frames import ab_difference
from dsprobe.notebook.metrics_panel import frame_html, recording_html
from dsprobe.notebook.plots import counts_by_stream
from dsprobe.notebook.raster import OUTCOME_COLORS, Panel
from dsprobe.postprocess.pipeline import Postprocess, PostprocessError


class TunerDisplay(FrameBrowser):
    """Drawing and whole-recording updates of the Tuner (see the module doc)."""

    postprocess: Postprocess
    postprocess_b: Postprocess | None
    evaluator: Any
    reclusterer: Reclusterer
    worker: Any
    timeline: Any
    show_counts: bool

    # ---------------------------------------------------------------- the frame
    def render(self, counts: bool = False) -> None:
        """Redraw this frame (and, with ``counts``, start re-scoring the whole recording)."""
        t0 = time.perf_counter()
        v = self.frame_view
        try:
            self.detections = self._run_frame(self.postprocess, v)
            self.detections_b = (
                self._run_frame(self.postprocess_b, v)
                if self.ab.value and self.postprocess_b
                else None
            )
        except PostprocessError as exc:
            self._set_status(str(exc), error=True)
            return
        self._set_status(self._describe())
        ev = self.evaluator
        gt = ev.gt_for_row(v.row) if ev is not None else self._gt_for_frame()
        out = ev.frame(v.row, self.detections) if ev is not None else None
        out_b = (
            ev.frame(v.row, self.detections_b)
            if ev is not None and self.detections_b is not None
            else None
        )
        self.frame_outcome = out
        where = f"source {v.source_id} frame {v.frame_num}: "
        if self.detections_b is not None:
            canvas = self.canvas(2)
            only_a, only_b = ab_difference(self.detections, self.detections_b)
            drawn = canvas.draw(
                v,
                [
                    Panel(self.detections, only_a, colors=_colors(out), missed=_missed(out)),
                    Panel(self.detections_b, only_b, colors=_colors(out_b), missed=_missed(out_b)),
                ],
                self.labels,
                gt=gt,
            )
            self.num_patches = len(drawn[0])
            only = int(only_a.sum() + only_b.sum())
            text = (
                f'{where}A: <b><span class="dsprobe-count">{len(self.detections)}</span></b> boxes'
                f' &middot; B: <b><span class="dsprobe-count-b">{len(self.detections_b)}</span></b>'
                f" boxes &middot; {only} differ (yellow)"
            )
        else:
            canvas = self.canvas(1)
            panel = Panel(
                self.detections,
                colors=out.colors if out is not None else None,
                missed=out.missed if out is not None else None,
            )
            drawn = canvas.draw(v, [panel], self.labels, gt=gt)
            self.num_patches = len(drawn[0])
            text = f'{where}<b><span class="dsprobe-count">{len(self.detections)}</span></b> boxes'
        self.show_picture(canvas)
        self.count_text.value = text
        self.frame_metrics.value = frame_html(out, out_b) if out is not None else ""
        self.render_seconds = time.perf_counter() - t0
        if counts:
            self.refresh_recording()
        elif self.show_counts:
            self._update_timeline()

    def _run_frame(self, pp: Postprocess, v: Any) -> Any:
        """``pp`` on frame ``v``, from the cached decoder output when ``pp`` decodes the same way
        (identical to ``pp(v)``, without decoding the frame again)."""
        dec = self.decoded
        if v.row in dec.candidates and pp.steps[0].to_dict() == dec.postprocess.steps[0].to_dict():
            return pp.run({}, dec.contexts[v.row], start=1, dets=dec.candidates[v.row])
        return pp(v)

    def _describe(self) -> str:
        s = self.postprocess.steps
        return " \u2192 ".join(f"{x.kind}:{x.name}" for x in s)

    # ---------------------------------------------------------------- the whole recording
    def refresh_recording(self) -> None:
        """Re-score A (and B) on every frame on the background worker; the metrics line says it is
        computing and the results replace it when ready (``wait()`` blocks until then)."""
        pp = self.postprocess
        pp_b = self.postprocess_b if self.ab.value else None
        old = self.score
        self.metrics_text.value = recording_html(
            old, busy=f"re-scoring {len(self.rows)} frames (clustering if needed)"
        )
        self.worker.submit(lambda: self._score(pp, pp_b), self._scored, self._failed)

    def _score(self, pp: Postprocess, pp_b: Postprocess | None) -> tuple:
        ev = self.evaluator
        a = ev.recording(pp) if ev is not None else None
        b = ev.recording(pp_b) if ev is not None and pp_b is not None else None
        counts_a = a.counts if a is not None else self._counts_of(pp)
        counts_b = (b.counts if b is not None else self._counts_of(pp_b)) if pp_b else None
        return a, b, counts_a, counts_b

    def _scored(self, result: tuple) -> None:
        a, b, counts_a, counts_b = result
        frames = self.rec.frames
        self.score, self.score_b = a, b
        self._per_row = {"A": counts_a, "B": counts_b}
        self.counts = counts_by_stream(frames, counts_a)
        self.counts_b = counts_by_stream(frames, counts_b) if counts_b is not None else None
        self.metrics_text.value = recording_html(a, b) if a is not None else ""
        self._timeline_stream = None
        if self.show_counts:
            self._update_timeline()

    def _failed(self, exc: BaseException) -> None:
        self._set_status(f"whole-recording update failed: {exc}", error=True)
        self.metrics_text.value = ""

    def wait(self, timeout: float | None = 300) -> None:
        """Wait for the background update (tests, benchmarks, scripts)."""
        self.worker.wait(timeout)

    def _counts_of(self, pp: Postprocess) -> pd.Series:
        if pp.steps[0].to_dict() == self.decoded.postprocess.steps[0].to_dict():
            return self.reclusterer.counts(pp)
        device = getattr(self, "device", "cpu")
        decoded = pp.to(device).decode_recording(self.rec, self.rows)
        return Reclusterer(decoded, device=device).counts(pp)

    # ---------------------------------------------------------------- timeline
    def _update_timeline(self) -> None:
        per_row = getattr(self, "_per_row", None)
        if per_row is None:
            return
        src = int(self.stream.value)
        if getattr(self, "_timeline_stream", None) != src:
            g = self._by_stream[src]
            rows, fn = g.index.to_numpy(), g["frame_num"].to_numpy()
            series = {}
            for name, s, style in (
                ("detections", per_row["A"], {"color": "#4363d8"}),
                ("B", per_row["B"], {"color": "#4363d8", "linestyle": "--"}),
                (
                    "false positives",
                    getattr(self.score, "fp_per_row", None),
                    {"color": OUTCOME_COLORS["fp"]},
                ),
                (
                    "missed",
                    getattr(self.score, "fn_per_row", None),
                    {"color": OUTCOME_COLORS["missed"]},
                ),
            ):
                if s is not None:
                    series[name] = (fn, s.reindex(rows).fillna(0).to_numpy(), style)
            self.timeline.title = f"source {src}: per frame"
            self.timeline.set_series(series)
            self._timeline_stream = src
        self.timeline.set_current(int(self.rec.frames.at[self.row, "frame_num"]))

    def _jump(self, frame_num: int) -> None:
        """Timeline click: show that frame of the current stream."""
        self.goto(int(self.stream.value), int(frame_num))


def _colors(outcome: Any) -> Any:
    return outcome.colors if outcome is not None else None


def _missed(outcome: Any) -> Any:
    return outcome.missed if outcome is not None else None


__all__ = ["TunerDisplay"]
