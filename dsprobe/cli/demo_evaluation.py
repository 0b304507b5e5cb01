"""The demo report's evaluation section: errors of the tuned postprocess by TIDE type (per frame and
per run of frames), and the best settings under each objective side by side, with per-class
thresholds (see :mod:`dsprobe.analysis.objectives`, :mod:`dsprobe.analysis.errors`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def _md_table(df: Any, floatfmt: str = ".3f") -> list[str]:
    cols = [str(c) for c in df.columns]
    lines = [
        "| " + " | ".join([df.index.name or ""] + cols) + " |",
        "|" + " --- |" * (len(cols) + 1),
    ]
    for idx, row in df.iterrows():
        cells = [format(v, floatfmt) if isinstance(v, float) else str(v) for v in row.tolist()]
        lines.append("| " + " | ".join([str(idx)] + cells) + " |")
    return lines


def evaluation_section(
    rec: Any,
    tuned: Any,
    gt: Any,
    frames: Sequence[tuple[int, int]],
    found: Any,
    out: Path,
) -> list[str]:
    """Markdown lines (and ``errors_by_type.png`` in ``out`` when matplotlib is there); ``found``:
    the grid scored under every objective (:func:`~dsprobe.analysis.operating.search_objectives`)."""
    import pandas as pd

    from dsprobe.analysis.errors import ERROR_TYPES, error_runs, error_table
    from dsprobe.analysis.search import Reclusterer

    decoded = tuned.decode_recording(rec)
    det = Reclusterer(decoded).detections_frame(tuned, tuned.labels)
    errors = error_table(det, gt, frames)
    runs = error_runs(errors)
    per = pd.DataFrame(
        {
            "errors (frames)": errors["type"]
            .value_counts()
            .reindex(list(ERROR_TYPES), fill_value=0),
            "runs (objects)": runs["type"].value_counts().reindex(list(ERROR_TYPES), fill_value=0)
            if len(runs)
            else 0,
        }
    )
    per.index.name = "error type"
    lines = [
        "",
        "## Errors by type (tuned postprocess; TIDE: IoU 0.5 foreground, 0.1 background)",
        "",
        *_md_table(per, "d"),
    ]
    try:
        from dsprobe.notebook.errors_view import plot_error_breakdown

        plot_error_breakdown(errors, runs).savefig(out / "errors_by_type.png", dpi=80)
        lines += ["", "![errors by type](errors_by_type.png)"]
    except ImportError:
        pass
    best = found.best_table().drop(columns=["detections"])
    lines += [
        "",
        "## Best settings per objective (same grid; each row: that objective's best setting)",
        "",
        *_md_table(best),
        "",
        "`value` is the objective's own score; for a target objective (precision at a recall, recall "
        "at a precision, F1 within a false-positive budget) a negative value means no setting of the "
        "grid reached the target, and is by how much the best one fell short.",
    ]
    per_class, pp = found.per_class("f1")
    thr = ", ".join(f"{r.label} {r.threshold:g}" for r in per_class.table.itertuples())
    lines += ["", f"Per-class pre-cluster thresholds under F1 ([class-attrs-N]): {thr}."]
    lines += [f"- warning: {w}" for w in per_class.warnings]
    return lines
