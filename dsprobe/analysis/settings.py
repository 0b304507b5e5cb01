"""A Postprocess's tunable params by name, wherever they live: ``get_param(pp, "iou_threshold")``,
``apply_params(pp, {"pre_cluster_threshold": 0.3}, class_id=2)``. Used by the tuner widgets and the
parameter search; object-filter params add nvinfer's frame-space ``filter:objects`` step when needed."""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import numpy as np

from dsprobe.postprocess.pipeline import Postprocess, Step
from dsprobe.postprocess.registry import get_step

#: params of nvinfer's frame-space object filter (``filter:objects``; added after the scale step when absent)
OBJECT_FILTER_PARAMS = (
    "detected_min_w",
    "detected_min_h",
    "detected_max_w",
    "detected_max_h",
    "roi_top_offset",
    "roi_bottom_offset",
)


def plain(value: Any) -> Any:
    """JSON-friendly python value (numpy scalars and arrays to python)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple, np.ndarray)):
        return [plain(v) for v in value]
    return value


def step_index(pp: Postprocess, kind: str, name: str | None = None) -> int | None:
    return next(
        (i for i, s in enumerate(pp.steps) if s.kind == kind and (name is None or s.name == name)),
        None,
    )


def step_defaults(step: Step, allow_import: bool) -> dict[str, Any]:
    """Keyword-only params of a step's function with their defaults."""
    fn = get_step(step.kind, step.name, allow_import=allow_import)  # type: ignore[arg-type]
    return {
        n: p.default
        for n, p in inspect.signature(fn).parameters.items()
        if p.kind == p.KEYWORD_ONLY
    }


def param_owner(pp: Postprocess, name: str) -> int | None:
    """Index of the step that holds param ``name`` (None for an object-filter param whose
    ``filter:objects`` step does not exist yet). Raises ValueError for a param no step takes."""
    if name == "pre_cluster_threshold":
        i = step_index(pp, "filter", "threshold")
        if i is None:
            raise ValueError(
                "pre_cluster_threshold: this postprocess has no 'filter:threshold' step"
            )
        return i
    if name in OBJECT_FILTER_PARAMS:
        return step_index(pp, "filter", "objects")
    for i, s in enumerate(pp.steps):
        if s.kind in ("cluster", "decode") and name in step_defaults(s, pp.allow_import):
            return i
    settable = ["pre_cluster_threshold", *OBJECT_FILTER_PARAMS]
    settable += [
        n
        for s in pp.steps
        if s.kind in ("cluster", "decode")
        for n in step_defaults(s, pp.allow_import)
    ]
    raise ValueError(
        f"no step of {pp} takes a param {name!r}; settable: {', '.join(dict.fromkeys(settable))}"
    )


def get_param(pp: Postprocess, name: str, class_id: int | None = None) -> Any:
    """Current value of param ``name`` (the step function's default when the spec leaves it out);
    with ``class_id`` the value for that class (per-class lists are indexed by class id)."""
    i = param_owner(pp, name)
    if i is None:
        value: Any = 0
    else:
        s = pp.steps[i]
        value = s.params.get(name, step_defaults(s, pp.allow_import).get(name))
    if class_id is not None and np.ndim(value) > 0:
        seq = list(value)
        if not 0 <= class_id < len(seq):
            raise ValueError(
                f"{name} has {len(seq)} per-class values; no value for class {class_id}"
            )
        return seq[class_id]
    return value


def num_classes_of(pp: Postprocess) -> int:
    return int(pp.num_classes or len(pp.labels))


def apply_params(
    pp: Postprocess, params: Mapping[str, Any], class_id: int | None = None
) -> Postprocess:
    """``pp`` with ``params`` set in the steps that own them (threshold filter, cluster step, decoder,
    object filter — added after the scale step when missing). With ``class_id`` each value is set for
    that class only (a scalar becomes a per-class list of ``num_classes`` values; a list whose values are
    all equal collapses back to a scalar)."""
    out = pp
    for name, value in params.items():
        value = plain(value)
        i = param_owner(out, name)
        if i is None:  # object filter params: add nvinfer's frame-space filter after scaling
            steps = [Step(s.kind, s.name, dict(s.params)) for s in out.steps]
            at = next(
                (k + 1 for k in range(len(steps) - 1, -1, -1) if steps[k].kind == "scale"),
                len(steps),
            )
            steps.insert(at, Step("filter", "objects", {}))
            out = Postprocess(
                steps,
                labels=out.labels,
                num_classes=out.num_classes,
                geometry=out.geometry,
                allow_import=out.allow_import,
            )
            i = at
        if class_id is not None:
            n = num_classes_of(out)
            if not 0 <= class_id < max(n, 1):
                raise ValueError(f"class {class_id} out of range: the postprocess has {n} classes")
            current = get_param(out, name)
            seq = list(current) if np.ndim(current) > 0 else [current] * n
            seq[class_id] = value
            value = seq[0] if all(v == seq[0] for v in seq) else seq
        out = out.with_params(i, **{name: value})
    return out
