"""Helpers shared by the decoders: param checks with clear errors, box conversions, best-class selection.

Every check raises ValueError naming the decoder (``"decode yolov8"``), the param and what was expected,
so a decoder called directly (not through a Postprocess, which checks types when it is built) still
fails clearly.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from dsprobe.detections import Detections
from dsprobe.postprocess.layers import expect, find_layer

Layers = Mapping[str, np.ndarray]
#: per-class value: a scalar for every class, a list indexed by class id, or ``{class id: value}``
#: (JSON keys are strings) with ``"default"`` for the classes not listed
PerClassParam = float | Sequence[float] | Mapping[str, float]


def _bad(step: str, name: str, value: Any, expected: str) -> ValueError:
    return ValueError(
        f"{step}: param {name!r} = {value!r} ({type(value).__name__}) is not valid; expected {expected}"
    )


def check_number(
    step: str, name: str, value: Any, *, low: float | None = None, high: float | None = None
) -> float:
    """A real number (not bool) within ``[low, high]``."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )
    if (
        ok
        and math.isfinite(value)
        and (low is None or value >= low)
        and (high is None or value <= high)
    ):
        return float(value)
    rng = (
        ""
        if low is None and high is None
        else f" in [{'-inf' if low is None else low}, {'inf' if high is None else high}]"
    )
    raise _bad(step, name, value, f"a number{rng}")


def check_int(step: str, name: str, value: Any, *, low: int | None = None) -> int:
    """An integer (not bool) ``>= low``."""
    if (
        isinstance(value, (int, np.integer))
        and not isinstance(value, (bool, np.bool_))
        and (low is None or value >= low)
    ):
        return int(value)
    raise _bad(step, name, value, "an integer" + ("" if low is None else f" >= {low}"))


def check_bool(step: str, name: str, value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise _bad(step, name, value, "true or false")


def check_choice(step: str, name: str, value: Any, options: Sequence[Any]) -> Any:
    if (
        value in options
        and not isinstance(value, (bool, np.bool_))
        or (value is None and None in options)
    ):
        return value
    raise _bad(step, name, value, "one of " + ", ".join(repr(o) for o in options))


def check_layer_name(step: str, name: str, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise _bad(step, name, value, "a layer name (string) or null")


def per_class_values(
    step: str, name: str, value: Any, num_classes: int, default: float = 0.2
) -> np.ndarray:
    """``(num_classes,)`` float32 values of a per-class param (scalar, list or dict, see
    :data:`PerClassParam`); dict entries missing fall back to ``value["default"]`` or ``default``."""
    if isinstance(value, Mapping):
        out = np.full(
            num_classes, check_number(step, name, value.get("default", default)), np.float32
        )
        for k, v in value.items():
            if k == "default":
                continue
            try:
                c = int(k)
            except (TypeError, ValueError):
                raise _bad(step, name, value, "class ids (or 'default') as keys") from None
            if 0 <= c < num_classes:
                out[c] = check_number(step, f"{name}[{k}]", v)
        return out
    if np.ndim(value) == 0:
        return np.full(num_classes, check_number(step, name, value), np.float32)
    if isinstance(value, (str, bytes)):
        raise _bad(step, name, value, "a number, a list of numbers or {class id: number}")
    vals = [check_number(step, f"{name}[{i}]", v) for i, v in enumerate(value)]
    if len(vals) < num_classes:
        raise ValueError(
            f"{step}: param {name!r} has {len(vals)} per-class values, expected {num_classes} "
            "(one per class parsed)"
        )
    return np.asarray(vals[:num_classes], np.float32)


def layer_2d(
    layers: Layers, name: str | None, step: str, param: str, what: str
) -> tuple[str, np.ndarray]:
    """The named layer (or the only 2-D one) as a 2-D float32 array, batch axis dropped."""
    check_layer_name(step, param, name)
    lname, raw = find_layer(layers, name, ndim=None if name else 2, step=step)
    a = expect(raw, 2, step, lname, what)
    return lname, a if a.dtype == np.float32 else a.astype(np.float32)


def orient(
    a: np.ndarray,
    layout: str,
    step: str,
    layer: str,
    what: str,
    *,
    channels: int | None = None,
    min_channels: int = 1,
    native: str = "channels_last",
) -> np.ndarray:
    """``a`` as ``(anchors, channels)`` (a transposed view when the layer is channels-first).

    ``layout``: "channels_last" keeps ``a``, "channels_first" transposes it, "auto" takes the axis of
    length ``channels`` as the channels when that is known, else the longer axis as the anchors (a
    square layer: the decoder's ``native`` layout) unless that leaves fewer than ``min_channels``
    channels. ValueError when the channel count does not fit."""
    check_choice(step, "layout", layout, ("auto", "channels_first", "channels_last"))
    first = layout == "channels_first"
    if layout == "auto":
        if channels is not None:
            first = a.shape[1] != channels and a.shape[0] == channels
        else:
            first = (
                a.shape[1] > a.shape[0] if a.shape[0] != a.shape[1] else native == "channels_first"
            )
            if (a.shape[0] if first else a.shape[1]) < min_channels:
                first = not first
    v = a.T if first else a
    if v.shape[1] < min_channels or (channels is not None and v.shape[1] != channels):
        raise ValueError(
            f"{step}: layer {layer!r} has shape {list(a.shape)}, expected {what}"
            + ("" if layout == "auto" else f" (layout={layout!r})")
        )
    return v


def cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    """(N, 4) centre x, centre y, width, height -> x1, y1, x2, y2 (float32, C order)."""
    c = (
        b if b.dtype == np.float32 else b.astype(np.float32)
    ).T  # coordinate rows: contiguous after a
    out = np.empty((c.shape[1], 4), np.float32)  # channels-first gather
    half = c[2:4] * np.float32(0.5)
    np.subtract(c[:2], half, out=out.T[:2])
    np.add(c[:2], half, out=out.T[2:])
    return out


def candidate_channels(
    v: np.ndarray, rows: np.ndarray, start: int, stop: int | None = None
) -> np.ndarray:
    """``v[rows, start:stop]`` of an ``(anchors, channels)`` matrix. For a transposed view of a
    channels-first layer the gather runs channel by channel (contiguous anchors): the same values,
    read from far fewer cache lines."""
    if v.strides[0] == v.itemsize and v.shape[1] > 1:
        return v.T[start:stop, rows].T
    return v[rows, start:stop]


def to_xyxy(b: np.ndarray, box_format: str, step: str) -> np.ndarray:
    """(N, 4) boxes in ``box_format`` ("cxcywh", "xyxy", "yxyx", "xywh" = left, top, width, height)
    -> x1, y1, x2, y2 float32."""
    check_choice(step, "box_format", box_format, ("cxcywh", "xyxy", "yxyx", "xywh"))
    b = np.asarray(b, np.float32).reshape(-1, 4)
    if box_format == "cxcywh":
        return cxcywh_to_xyxy(b)
    if box_format == "yxyx":
        return b[:, [1, 0, 3, 2]]
    if box_format == "xywh":
        return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
    return np.ascontiguousarray(b)


def best_class(
    scores: np.ndarray, score_threshold: float, multi_label: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, class ids, scores)`` of the candidates in an ``(anchors, classes)`` score matrix
    (float32; a transposed view is fine).

    Single label: score = max over classes, class = the first argmax, kept when ``score >=
    score_threshold``. The max streams over the whole tensor once (for a channels-first layer numpy
    reduces its contiguous class rows); the argmax reads only the kept anchors' class scores.
    ``multi_label``: every (anchor, class) pair with ``score >= score_threshold``, ordered by anchor
    then class (Ultralytics' ``multi_label=True``)."""
    thr = np.float32(score_threshold)
    if multi_label:
        rows, cls = np.nonzero(scores >= thr)
        return rows, cls.astype(np.int32), scores[rows, cls]
    best = scores.max(axis=1)
    rows = np.flatnonzero(best >= thr)
    cls = scores[rows].argmax(axis=1).astype(np.int32)
    return rows, cls, best[rows]


def whole_input(ctx_size: tuple[int, int], n: int) -> np.ndarray:
    """``n`` boxes covering the whole network input ``(0, 0, W, H)``."""
    w, h = ctx_size
    return np.tile(np.array([0, 0, w, h], np.float32), (n, 1))


def empty(**extra: np.ndarray | None) -> Detections:
    """No detections in network space (with empty optional arrays where given)."""
    d = Detections.empty("network")
    return Detections(d.boxes, d.scores, d.class_ids, "network", **extra) if extra else d
