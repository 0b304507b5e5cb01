"""The values nvinfer accepts for each config key (``gstnvinfer_property_parser.cpp`` and
``nvdsinfer_context.h``): :func:`check_value` raises ValueError for a value out of range, so the
config reader can name the file and line, and ``export-nvinfer`` can refuse to write it."""

from __future__ import annotations

import math
from typing import Any, Callable

#: more classes than any detector or classifier has; bounds per-class tables built from the config
MAX_CLASSES = 1 << 16
MAX_DIM = 1 << 16
MAX_RANK = 8
INT32_MAX = (1 << 31) - 1


def _one_of(*allowed: int) -> Callable[[Any], str | None]:
    return lambda v: None if v in allowed else f"must be one of {', '.join(map(str, allowed))}"


def _int_range(lo: int, hi: int) -> Callable[[Any], str | None]:
    def check(v: int) -> str | None:
        if v < lo:
            return f"must be >= {lo}"
        return None if v <= hi else f"must be <= {hi}"

    return check


def _unit(v: float) -> str | None:
    if not math.isfinite(v):
        return "must be a finite number"
    return None if 0.0 <= v <= 1.0 else "must be in [0, 1]"


def _finite_nonneg(v: float) -> str | None:
    if not math.isfinite(v):
        return "must be a finite number"
    return None if v >= 0 else "must be >= 0"


def _finite(v: float) -> str | None:
    return None if math.isfinite(v) else "must be a finite number"


def _each(check: Callable[[Any], str | None], max_len: int) -> Callable[[Any], str | None]:
    def run(values: tuple) -> str | None:
        if len(values) > max_len:
            return f"has {len(values)} values, at most {max_len}"
        for v in values:
            err = check(v)
            if err:
                return f"value {v!r} {err}"
        return None

    return run


_NONNEG = _int_range(0, INT32_MAX)
_CLASS_ID = _int_range(0, MAX_CLASSES - 1)

#: config key -> check of its parsed value (None: fine, else why not)
RANGES: dict[str, Callable[[Any], str | None]] = {
    "gie-unique-id": _int_range(0, INT32_MAX),
    "process-mode": _one_of(1, 2),
    "operate-on-gie-id": _int_range(-1, INT32_MAX),
    "operate-on-class-ids": _each(_CLASS_ID, MAX_CLASSES),
    "network-type": _one_of(0, 1, 2, 3, 100),
    "network-mode": _one_of(0, 1, 2, 3),
    "num-detected-classes": _int_range(0, MAX_CLASSES),
    "cluster-mode": _one_of(0, 1, 2, 3, 4),
    "filter-out-class-ids": _each(_CLASS_ID, MAX_CLASSES),
    "classifier-threshold": _unit,
    "segmentation-threshold": _unit,
    "input-object-min-width": _NONNEG,
    "input-object-min-height": _NONNEG,
    "input-object-max-width": _NONNEG,
    "input-object-max-height": _NONNEG,
    "batch-size": _int_range(1, 1 << 12),
    "interval": _NONNEG,
    "net-scale-factor": _finite_nonneg,
    "offsets": _each(_finite, 4),
    "model-color-format": _one_of(0, 1, 2),
    "network-input-order": _one_of(0, 1),
    "scaling-filter": _int_range(0, 6),
    "scaling-compute-hw": _one_of(0, 1, 2),
    "infer-dims": _each(_int_range(1, MAX_DIM), MAX_RANK),
    "uff-input-dims": _each(_int_range(0, MAX_DIM), MAX_RANK),
    "input-dims": _each(_int_range(0, MAX_DIM), MAX_RANK),
    # [class-attrs-*]
    "pre-cluster-threshold": _unit,
    "threshold": _unit,
    "post-cluster-threshold": _unit,
    "eps": _finite_nonneg,
    "group-threshold": _NONNEG,
    "minBoxes": _NONNEG,
    "dbscan-min-score": _unit,
    "nms-iou-threshold": _unit,
    "topk": _int_range(0, INT32_MAX),
    "roi-top-offset": _NONNEG,
    "roi-bottom-offset": _NONNEG,
    "detected-min-w": _NONNEG,
    "detected-min-h": _NONNEG,
    "detected-max-w": _NONNEG,
    "detected-max-h": _NONNEG,
}


def check_value(key: str, value: Any) -> None:
    """ValueError when ``value`` (already parsed) is not what nvinfer accepts for ``key``."""
    check = RANGES.get(key)
    err = check(value) if check is not None else None
    if err:
        raise ValueError(f"{key}={_show(value)} {err}")


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ";".join(map(str, value))
    return str(value)
