"""Finding output layers by name, substring or shape, with errors that list what exists."""

from __future__ import annotations

from typing import Mapping

import numpy as np


class LayerNotFoundError(KeyError):
    """No layer matched; the message lists every layer with its shape."""

    def __str__(self) -> str:
        return str(self.args[0])


def describe(layers: Mapping[str, np.ndarray]) -> str:
    return ", ".join(f"{k!r} {v.dtype}{list(v.shape)}" for k, v in layers.items()) or "(no layers)"


def find_layer(layers: Mapping[str, np.ndarray], name: str | None = None, *, contains: str | None = None,
               ndim: int | None = None, step: str = "decode") -> tuple[str, np.ndarray]:
    """The layer named ``name`` (exact), else the only one whose name contains ``contains``, else
    (with neither given) the only layer — optionally the only one with ``ndim`` dims after dropping
    a leading batch axis of 1. Raises LayerNotFoundError naming ``step`` and listing the layers."""
    if name is not None:
        if name in layers:
            return name, layers[name]
        what = f"layer {name!r}"
    elif contains is not None:
        hits = [k for k in layers if contains in k]
        if len(hits) == 1:
            return hits[0], layers[hits[0]]
        what = f"one layer whose name contains {contains!r} (found {len(hits)})"
    else:
        cands = [k for k, v in layers.items() if ndim is None or strip_batch(v, ndim).ndim == ndim]
        if len(cands) == 1:
            return cands[0], layers[cands[0]]
        what = f"a single {ndim}-D layer (found {len(cands)})" if ndim else f"a single layer (found {len(layers)})"
    raise LayerNotFoundError(f"{step}: could not find {what}; the recorded layers are {describe(layers)}")


def strip_batch(arr: np.ndarray, ndim: int) -> np.ndarray:
    """Drop leading axes of length 1 until ``arr`` has ``ndim`` dims (engines may report a batch of 1)."""
    a = np.asarray(arr)
    while a.ndim > ndim and a.shape[0] == 1:
        a = a[0]
    return a


def expect(arr: np.ndarray, ndim: int, step: str, layer: str, what: str) -> np.ndarray:
    """``strip_batch`` then check the number of dims; ValueError naming step, layer and expectation."""
    a = strip_batch(arr, ndim)
    if a.ndim != ndim:
        raise ValueError(f"{step}: layer {layer!r} has shape {list(np.shape(arr))}, expected {what}")
    return a
