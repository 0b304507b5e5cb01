"""How good the current settings are, as you tune: :class:`Evaluator` judges the frame in view at once
(each box a true or false positive, each missed object, precision / recall / F1 / AP of the frame)
and the whole recording on a :class:`Worker` thread (precision, recall, F1, mAP@0.5, mAP@0.5:0.95,
false positives and misses per frame), shown when ready. Whole-recording match tables are cached per
clustering setting, so a threshold or top-k change re-scores by masking (exact, see
:mod:`dsprobe.analysis.objectives`)."""

from __future__ import annotations

import html
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from dsprobe.analysis.errors import type_frame
from dsprobe.analysis.objectives import Matches, score_all
from dsprobe.analysis.operating import SettingScorer
from dsprobe.detections import Detections
from dsprobe.notebook.raster import OUTCOME_COLORS


class Worker:
    """One background thread for slow jobs; only the newest job matters (one superseded before it
    starts is skipped, one superseded while running has its result dropped).

    Results are applied on the thread that submitted the job (the kernel's main thread), never on
    the worker: widgets and matplotlib are not thread-safe. In a notebook the kernel's event loop
    runs the ``done`` callback as soon as it is idle (``call_soon_threadsafe``); ``wait()`` applies
    it at once. ``background=False`` runs jobs inline (scripts, tests)."""

    def __init__(self, background: bool = True) -> None:
        self.background = background
        self._pool = (
            ThreadPoolExecutor(1, thread_name_prefix="dsprobe-eval") if background else None
        )
        self._gen = 0
        self._lock = threading.Lock()
        self._last: Future | None = None
        self._pending: tuple | None = None  # (gen, callback, value) ready to apply
        self.errors: list[BaseException] = []

    def submit(
        self,
        job: Callable[[], Any],
        done: Callable[[Any], None],
        failed: Callable[[BaseException], None],
    ) -> None:
        with self._lock:
            self._gen += 1
            gen = self._gen
        if self._pool is None:
            try:
                done(job())
            except Exception as exc:  # reported in the widget, never raised into the UI loop
                self.errors.append(exc)
                failed(exc)
            return
        loop = _running_loop()

        def run() -> None:
            if gen != self._gen:
                return
            try:
                item = (gen, done, job())
            except Exception as exc:
                self.errors.append(exc)
                item = (gen, failed, exc)
            with self._lock:
                self._pending = item
            if loop is not None:
                loop.call_soon_threadsafe(self.deliver)

        self._last = self._pool.submit(run)

    def deliver(self) -> None:
        """Apply the newest finished job's result (on the calling thread); stale ones are dropped."""
        with self._lock:
            item, self._pending = self._pending, None
        if item is not None and item[0] == self._gen:
            item[1](item[2])

    def wait(self, timeout: float | None = 120) -> None:
        """Block until the newest job has finished, then apply its result (tests, scripts, cells)."""
        if self._last is not None:
            self._last.result(timeout)
        self.deliver()


def _running_loop() -> Any:
    """The asyncio loop of the calling thread (the kernel's, inside a notebook), else None."""
    import asyncio

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@dataclass
class FrameOutcome:
    """One frame judged against ground truth: per detection ``types`` ("tp" or a TIDE error type) and
    colours, the ``missed`` ground-truth boxes, and precision / recall / F1 / TP / FP / FN."""

    types: np.ndarray
    colors: list[str]
    missed: Detections
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int


@dataclass
class RecordingScore:
    """The whole recording scored: objectives (``scores``: precision, recall, f1, map50, map50_95, tp,
    fp, fn, fp_per_frame...), ``counts`` (detections per frame row), ``fp_per_row`` and ``fn_per_row``
    (Series indexed by frame row) and the ``matches`` they come from."""

    scores: dict[str, float]
    counts: pd.Series
    fp_per_row: pd.Series
    fn_per_row: pd.Series
    matches: Matches


class Evaluator:
    """Scores settings of a decoded recording (``reclusterer``) against ground truth ``gt`` on frame
    ``rows`` of ``rec`` (match tables cached per clustering setting:
    :class:`~dsprobe.analysis.operating.SettingScorer`)."""

    def __init__(self, reclusterer: Any, gt: Any, rec: Any, rows: np.ndarray) -> None:
        self.rec = rec
        self.scorer = SettingScorer(reclusterer, gt, rows)
        self.rows = self.scorer.rows

    def gt_for_row(self, row: int) -> Detections:
        return self.scorer.gt_for_row(row)

    def frame(self, row: int, dets: Detections) -> FrameOutcome:
        """The frame ``row``'s ``dets`` judged (fast: one frame)."""
        g = self.gt_for_row(row)
        types, nearest, _ = type_frame(dets, g)
        hit = types == "tp"
        tp, fp, fn = int(hit.sum()), int((~hit).sum()), len(g) - int(hit.sum())
        p = tp / (tp + fp) if tp + fp else 1.0
        r = tp / (tp + fn) if tp + fn else 1.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        cols = [OUTCOME_COLORS["tp"] if t else OUTCOME_COLORS["fp"] for t in hit]
        unmatched = np.ones(len(g), bool)
        unmatched[nearest[hit]] = False
        return FrameOutcome(types, cols, g[unmatched], p, r, f, tp, fp, fn)

    def recording(self, pp: Any) -> RecordingScore:
        """``pp`` scored on every row (slow the first time per clustering setting: run on a Worker)."""
        matches = self.scorer.matches(pp)
        index = pd.Index(self.rows, name="row")
        pos = np.searchsorted(self.rows, matches.rows)
        counts = np.bincount(pos, minlength=len(self.rows))
        tp_rows = np.bincount(pos, matches.tp[:, 0], minlength=len(self.rows)).astype(int)
        gt_rows = np.array([len(self.gt_for_row(r)) for r in self.rows])
        return RecordingScore(
            score_all(matches),
            pd.Series(counts, index, name="detections"),
            pd.Series(counts - tp_rows, index, name="false positives"),
            pd.Series(gt_rows - tp_rows, index, name="missed"),
            matches,
        )


def _fmt(v: float) -> str:
    return f"{v:.3f}"


def _delta(a: float, b: float | None) -> str:
    if b is None:
        return ""
    d = a - b
    colour = "#2a2" if d > 1e-9 else "#c22" if d < -1e-9 else "#777"
    return f' <span style="color:{colour}">({d:+.3f} vs B)</span>'


def frame_html(o: FrameOutcome, other: FrameOutcome | None = None) -> str:
    """One line: this frame's TP / FP / missed and precision / recall / F1 (deltas vs B)."""
    leg = (
        f'<span style="color:{OUTCOME_COLORS["tp"]}">&#9632; TP {o.tp}</span> '
        f'<span style="color:{OUTCOME_COLORS["fp"]}">&#9632; FP {o.fp}</span> '
        f'<span style="color:{OUTCOME_COLORS["missed"]}">&#9633; missed {o.fn}</span>'
    )
    parts = [
        f"{name} {_fmt(getattr(o, name))}{_delta(getattr(o, name), getattr(other, name) if other else None)}"
        for name in ("precision", "recall", "f1")
    ]
    return f'<span class="dsprobe-frame-metrics">this frame: {leg} &middot; {" &middot; ".join(parts)}</span>'


def recording_html(
    s: RecordingScore | None, other: RecordingScore | None = None, busy: str = ""
) -> str:
    """Whole-recording metrics (with deltas vs B), or what is being computed."""
    if s is None:
        return f'<span class="dsprobe-metrics-busy">&#8987; {html.escape(busy or "computing")}&hellip;</span>'
    names = ("precision", "recall", "f1", "map50", "map50_95")
    shown = {"map50": "mAP@0.5", "map50_95": "mAP@0.5:0.95"}
    parts = [
        f"{shown.get(n, n)} <b>{_fmt(s.scores[n])}</b>{_delta(s.scores[n], other.scores[n] if other else None)}"
        for n in names
    ]
    extra = (
        f"TP {s.scores['tp']}, FP {s.scores['fp']} ({s.scores['fp_per_frame']:.2f}/frame), "
        f"missed {s.scores['fn']}"
    )
    busy_note = (
        f' <span style="color:#888">(&#8987; {html.escape(busy)}&hellip;)</span>' if busy else ""
    )
    return (
        f'<span class="dsprobe-metrics">whole recording ({len(s.counts)} frames): '
        f"{' &middot; '.join(parts)} &middot; {extra}</span>{busy_note}"
    )


__all__ = ["Evaluator", "FrameOutcome", "RecordingScore", "Worker", "frame_html", "recording_html"]
