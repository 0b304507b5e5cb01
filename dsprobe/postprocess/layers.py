"""Finding output layers by name, substring or shape, with errors that list what exists.

Recorded layers are per-frame arrays keyed by the engine's layer name. Engines report dims with or
without a leading batch axis of 1, so every shape check here first drops leading axes of length 1
(:func:`strip_batch`) down to the dims the caller expects.

A shape *pattern* is a tuple whose entries are an int (that length) or ``None`` (any length), e.g.
``(None, 4)`` for a ``(K, 4)`` box layer.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

ShapePattern = Sequence["int | None"]


class LayerNotFoundError(KeyError, ValueError):
    """No layer (or more than one) matched; the message lists every layer with its dtype and shape.

    A KeyError (a missing key) and a ValueError (bad input), so callers catching either see it."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def describe(layers: Mapping[str, np.ndarray]) -> str:
    """``'name' dtype[dims], ...`` for every layer (what an error message lists)."""
    return (
        ", ".join(f"{k!r} {np.asarray(v).dtype}{list(np.shape(v))}" for k, v in layers.items())
        or "(no layers)"
    )


def strip_batch(arr: np.ndarray, ndim: int) -> np.ndarray:
    """Drop leading axes of length 1 until ``arr`` has ``ndim`` dims (engines may report a batch of 1)."""
    a = np.asarray(arr)
    while a.ndim > ndim and a.shape[0] == 1:
        a = a[0]
    return a


def matches(arr: np.ndarray, shape: ShapePattern) -> bool:
    """Whether ``arr`` (leading batch axes of 1 dropped) fits the shape pattern."""
    a = strip_batch(arr, len(shape))
    return a.ndim == len(shape) and all(p is None or p == s for p, s in zip(shape, a.shape))


def _pattern(shape: ShapePattern) -> str:
    return (
        "("
        + ", ".join("*" if p is None else str(p) for p in shape)
        + (",)" if len(shape) == 1 else ")")
    )


def find_layer(
    layers: Mapping[str, np.ndarray],
    name: str | None = None,
    *,
    contains: str | None = None,
    shape: ShapePattern | None = None,
    ndim: int | None = None,
    exclude: Sequence[str] = (),
    step: str = "decode",
) -> tuple[str, np.ndarray]:
    """``(name, array)`` of one output layer.

    * ``name``: that exact layer, else the only one named ``name:<n>`` (TensorFlow's
      ``"num_detections:0"``), else the only layer whose name contains ``name``. Other criteria are
      ignored (check the shape with :func:`expect`).
    * otherwise the only layer (not in ``exclude``) that satisfies every criterion given:
      ``contains`` (substring, nvinfer's ``"cov"`` / ``"bbox"`` rule), ``shape`` (pattern, see the
      module doc), ``ndim`` (dims after dropping a leading batch axis of 1; when several layers fit and
      every layer starts with an axis of 1, the ones with exactly that batch axis win); with none
      given, the only layer.

    Raises :class:`LayerNotFoundError` naming ``step``, what was looked for and every recorded layer."""
    if name is not None:
        if name in layers:
            return name, layers[name]
        hits = [k for k in layers if k.rpartition(":")[0] == name]  # TensorFlow's "name:0"
        hits = hits or [k for k in layers if name in k]
        if len(hits) == 1:
            return hits[0], layers[hits[0]]
        what = f"layer {name!r}" + (
            f" (found {len(hits)} layers whose name contains it)" if hits else ""
        )
    else:
        cands = [k for k in layers if k not in exclude]
        if contains is not None:
            cands = [k for k in cands if contains in k]
        if shape is not None:
            cands = [k for k in cands if matches(layers[k], shape)]
        if ndim is not None:
            cands = [k for k in cands if strip_batch(layers[k], ndim).ndim == ndim]
            if len(cands) > 1 and all(np.ndim(v) and np.shape(v)[0] == 1 for v in layers.values()):
                # every layer has a leading 1: the engine reports a batch axis, so (1, 116, 8400) is 2-D
                cands = [k for k in cands if np.ndim(layers[k]) == ndim + 1] or cands
        if len(cands) == 1:
            return cands[0], layers[cands[0]]
        what = (
            ("one" if contains is not None else "a single")
            + (f" {ndim}-D" if ndim is not None else "")
            + " layer"
            + (f" whose name contains {contains!r}" if contains is not None else "")
            + (f" of shape {_pattern(shape)}" if shape is not None else "")
            + f" (found {len(cands)})"
        )
    raise LayerNotFoundError(
        f"{step}: could not find {what}; the recorded layers are {describe(layers)}"
    )


def expect(
    arr: np.ndarray, shape: int | ShapePattern, step: str, layer: str, what: str
) -> np.ndarray:
    """:func:`strip_batch` then check the dims (an int: their number; a tuple: a shape pattern).

    Raises ValueError naming ``step``, the layer, its shape and ``what`` was expected."""
    pattern = (None,) * shape if isinstance(shape, int) else tuple(shape)
    a = strip_batch(arr, len(pattern))
    if not matches(a, pattern):
        raise ValueError(
            f"{step}: layer {layer!r} has shape {list(np.shape(arr))}, expected {what}"
        )
    return a
