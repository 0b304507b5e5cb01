"""What a postprocess spec (JSON, from anywhere) must look like before a Postprocess is built from it:
its shape (an object with ``format``, an integer ``version``, ``steps``: a list of ``{kind, name,
params}``, ``labels``, ``num_classes``, ``geometry`` with known keys), bounded sizes and nesting, and
every param value in range (finite numbers; thresholds and IoUs in [0, 1]; counts whole numbers).
:func:`check_spec` raises :class:`PostprocessError` naming the step and the param."""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Mapping

from dsprobe.nvinfer.ranges import MAX_CLASSES, MAX_DIM
from dsprobe.postprocess.registry import PostprocessError

MAX_STEPS = 64
MAX_DEPTH = 8
MAX_ITEMS = 1 << 20
STEP_KEYS = {"kind", "name", "params"}
GEOMETRY_KEYS = {
    "network_width": int,
    "network_height": int,
    "network_channels": int,
    "maintain_aspect_ratio": bool,
    "symmetric_padding": bool,
}


def _unit(v: float) -> str | None:
    return None if 0.0 <= v <= 1.0 else "must be in [0, 1]"


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be > 0"


def _nonneg(v: float) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _int_from(lo: int) -> Callable[[Any], str | None]:
    def check(v: Any) -> str | None:
        if not isinstance(v, numbers.Integral):
            return "must be a whole number"
        return None if v >= lo else f"must be >= {lo}"

    return check


#: param name -> check of one value (per-class lists and {class: value} maps are checked per value)
PARAM_RANGES: dict[str, Callable[[Any], str | None]] = {
    "iou_threshold": _unit,
    "nms_iou_threshold": _unit,
    "pre_cluster_threshold": _unit,
    "post_cluster_threshold": _unit,
    "score_threshold": _unit,
    "confidence_threshold": _unit,
    "dbscan_min_score": _unit,
    "classifier_threshold": _unit,
    "segmentation_threshold": _unit,
    "sigma": _positive,
    "eps": _nonneg,
    "topk": _int_from(-1),
    "min_boxes": _int_from(0),
    "group_threshold": _int_from(0),
    "num_classes": _int_from(0),
    "detected_min_w": _nonneg,
    "detected_min_h": _nonneg,
    "detected_max_w": _nonneg,
    "detected_max_h": _nonneg,
    "roi_top_offset": _nonneg,
    "roi_bottom_offset": _nonneg,
}


def check_spec(d: Any) -> None:
    """PostprocessError unless ``d`` is a well-formed spec whose values are all in range."""
    if not isinstance(d, Mapping):
        raise PostprocessError(f"a postprocess spec is a JSON object, got {type(d).__name__}")
    _bounded(d, "spec", 0, [0])
    version = d.get("version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise PostprocessError(f"spec version must be a whole number >= 1, got {version!r}")
    steps = d.get("steps")
    if not isinstance(steps, list) or not steps:
        raise PostprocessError("a postprocess spec needs 'steps': a non-empty list of steps")
    if len(steps) > MAX_STEPS:
        raise PostprocessError(
            f"a postprocess spec has at most {MAX_STEPS} steps, got {len(steps)}"
        )
    for i, step in enumerate(steps):
        _check_step(i, step)
    labels = d.get("labels", ())
    if labels is not None and (
        not isinstance(labels, (list, tuple))
        or len(labels) > MAX_CLASSES
        or not all(isinstance(x, str) for x in labels)
    ):
        raise PostprocessError(f"labels must be a list of at most {MAX_CLASSES} strings")
    n = d.get("num_classes", 0)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_CLASSES:
        raise PostprocessError(f"num_classes must be a whole number in 0..{MAX_CLASSES}, got {n!r}")
    _check_geometry(d.get("geometry"))


def _bounded(value: Any, where: str, depth: int, count: list[int]) -> None:
    count[0] += 1
    if depth > MAX_DEPTH or count[0] > MAX_ITEMS:
        raise PostprocessError(f"{where}: nested deeper than {MAX_DEPTH} or too large for a spec")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _bounded(v, f"{where}.{k}", depth + 1, count)
    elif isinstance(value, (list, tuple)):
        for k, v in enumerate(value):
            _bounded(v, f"{where}[{k}]", depth + 1, count)


def _check_step(i: int, step: Any) -> None:
    if not isinstance(step, Mapping):
        raise PostprocessError(
            f"step {i}: a step is an object with kind, name, params; got {step!r}"
        )
    unknown = sorted(set(step) - STEP_KEYS)
    if unknown:
        raise PostprocessError(f"step {i}: unknown keys {unknown}; a step has kind, name, params")
    kind, name = step.get("kind"), step.get("name")
    if not isinstance(kind, str) or not isinstance(name, str):
        raise PostprocessError(f"step {i}: kind and name must be text, got {kind!r}, {name!r}")
    params = step.get("params") or {}
    if not isinstance(params, Mapping):
        raise PostprocessError(f"step {i} ({kind} {name!r}): params must be an object")
    for param, value in params.items():
        err = _check_param(str(param), value)
        if err:
            raise PostprocessError(f"step {i} ({kind} {name!r}): param {param}={value!r} {err}")


def _check_param(name: str, value: Any) -> str | None:
    if isinstance(value, Mapping):  # {class id: value}
        for k, v in value.items():
            if not _class_key(k):
                return f"has key {k!r}; per-class keys are class ids"
            err = _check_param(name, v)
            if err:
                return f"(class {k}) {err}"
        return None
    if isinstance(value, (list, tuple)):  # one value per class, or a list-valued param
        if len(value) > MAX_CLASSES:
            return f"has more than {MAX_CLASSES} values"
        for k, v in enumerate(value):
            err = _check_param(name, v)
            if err:
                return f"(item {k}) {err}"
        return None
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    if not isinstance(value, numbers.Real):
        return "is not a number, text, list or map"
    if not math.isfinite(value):
        return "must be a finite number"
    if isinstance(value, numbers.Integral) and abs(value) > (1 << 53):
        return "is too large"
    check = PARAM_RANGES.get(name)
    return check(value) if check is not None else None


def _class_key(k: Any) -> bool:
    try:
        return 0 <= int(k) < MAX_CLASSES and str(int(k)) == str(k).strip()
    except (TypeError, ValueError):
        return False


def _check_geometry(g: Any) -> None:
    if g is None:
        return
    if not isinstance(g, Mapping):
        raise PostprocessError(f"geometry must be an object, got {g!r}")
    unknown = sorted(set(g) - set(GEOMETRY_KEYS))
    if unknown:
        raise PostprocessError(f"geometry: unknown keys {unknown}; known: {sorted(GEOMETRY_KEYS)}")
    for key, kind in GEOMETRY_KEYS.items():
        if key not in g:
            continue
        v = g[key]
        if kind is bool:
            if not isinstance(v, bool):
                raise PostprocessError(f"geometry: {key}={v!r} must be true or false")
        elif isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_DIM:
            raise PostprocessError(f"geometry: {key}={v!r} must be a whole number in 0..{MAX_DIM}")
