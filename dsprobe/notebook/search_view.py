"""Search results in the notebook: the heat map of a grid search with a button that takes the best
settings into a :class:`~dsprobe.notebook.tuner.Tuner`, and the best settings under each objective
side by side, each with its own button."""

from __future__ import annotations

import html
from typing import Any

from dsprobe.analysis.search import SearchResult
from dsprobe.notebook.controls import require_ipywidgets
from dsprobe.notebook.figures import figure_png
from dsprobe.notebook.plots import plot_heatmap


def search_panel(
    result: SearchResult,
    tuner: Any = None,
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


def objectives_panel(
    found: Any,
    tuner: Any = None,
    index: str = "pre_cluster_threshold",
    columns: str = "iou_threshold",
) -> Any:
    """An :class:`~dsprobe.analysis.operating.ObjectiveSearch` side by side: the best setting under
    each objective (table, with edge-of-grid warnings), a heat map of the chosen objective over
    ``index`` x ``columns``, and a button that takes the chosen objective's best setting into
    ``tuner``."""
    w = require_ipywidgets()
    best = found.best_table()
    labels = list(best.index)
    choose = w.Dropdown(
        options=labels, value=labels[0], description="objective", layout=w.Layout(width="380px")
    )
    image = w.Image(format="png")
    note = w.HTML()
    parts = [
        w.HTML(best.to_html(float_format=lambda v: f"{v:.3f}", classes="dsprobe-objectives")),
        choose,
        image,
        note,
    ]

    def show(_: Any = None) -> None:
        col = choose.value
        bp = found.best_params(col)
        can_pivot = index in found.params and columns in found.params
        if can_pivot:
            table = found.table.pivot_table(index=index, columns=columns, values=col, aggfunc="max")
            fig = plot_heatmap(
                table, title=f"{col} by {index} x {columns}", best=(bp[index], bp[columns])
            )
            image.value = figure_png(fig)
        warn = best.loc[col, "warning"]
        note.value = f"<b>best under {html.escape(col)}</b>: {html.escape(str(bp))}" + (
            f'<br><span style="color:#a60">&#9888; {html.escape(warn)}</span>' if warn else ""
        )

    choose.observe(show, "value")
    show()
    if tuner is not None:
        button = w.Button(
            description="use in tuner", button_style="success", layout=w.Layout(width="180px")
        )
        button.on_click(lambda _: tuner.set_postprocess(found.best(choose.value)))
        parts.append(button)
    box = w.VBox(parts)
    box.add_class("dsprobe-objectives-panel")
    box.dsprobe_choose = choose
    return box
