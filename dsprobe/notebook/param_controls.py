"""Widgets for step params derived from their signatures (:meth:`Postprocess.param_specs
<dsprobe.postprocess.pipeline.Postprocess.param_specs>`): ``bool`` -> checkbox, ``int`` / ``float``
-> slider when the annotation gives a :class:`~dsprobe.Range` with both ends (else a number box),
``Literal[...]`` -> dropdown. Per-class params follow the tuner's class selector. Used by the Tuner
for the params of the user's own steps."""

from __future__ import annotations

from typing import Any

import numpy as np

from dsprobe.notebook.browser import require_ipywidgets
from dsprobe.postprocess.params import ParamSpec
from dsprobe.postprocess.registry import step_names


def step_options(kind: str, current: str | None) -> list[tuple[str, str]]:
    """Dropdown options for a step kind: the registered names, and ``current`` (the user's function,
    ``"module:function"``) labelled as yours when it is not one of them."""
    names = step_names(kind)  # type: ignore[arg-type]
    options = [(n, n) for n in names]
    if current is not None and current not in names:
        options.append((f"{current.rpartition(':')[2]} (yours)", current))
    return options


def with_option(options: Any, value: str | None) -> list:
    """Dropdown ``options`` plus ``value`` (the user's function) when it is not one of them yet."""
    options = list(options)
    if value is not None and value not in [v for _, v in options]:
        options.append((f"{value.rpartition(':')[2]} (yours)", value))
    return options


def param_control(key: str, spec: ParamSpec, value: Any) -> Any | None:
    """A widget for param ``key`` showing ``value``; None for params no widget fits (text, lists)."""
    w = require_ipywidgets()
    label = key + (" (per class)" if spec.per_class else "")
    common = dict(
        description=label,
        tooltip=spec.doc or f"{spec.step_kind} {spec.step_name}: {spec.name}",
        style={"description_width": "140px"},
        layout=w.Layout(width="420px"),
    )
    value = shown(value)
    if spec.type == "bool":
        return w.Checkbox(value=bool(value), indent=False, **common)
    if spec.type == "choice":
        return w.Dropdown(options=list(spec.choices), value=value, **common)
    if spec.type not in ("int", "float") or value is None:
        return None
    rng = spec.range
    if rng is not None and rng.low is not None and rng.high is not None:
        if spec.type == "int":
            return w.IntSlider(
                min=int(rng.low),
                max=int(rng.high),
                step=int(rng.step or 1),
                value=int(value),
                continuous_update=False,
                **common,
            )
        return w.FloatSlider(
            min=float(rng.low),
            max=float(rng.high),
            step=float(rng.step or (rng.high - rng.low) / 100),
            value=float(value),
            continuous_update=False,
            readout_format=".3g",
            **common,
        )
    box = w.IntText if spec.type == "int" else w.FloatText
    return box(value=value, **common)


def shown(value: Any) -> Any:
    """What a control shows for a value: class 0's for a per-class list (all classes chosen)."""
    return list(value)[0] if np.ndim(value) > 0 else value
