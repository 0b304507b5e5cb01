"""Heads without boxes: classifiers (nvinfer network-type=1) and embedding / vector heads.

A classifier or embedding SGIE runs on each object's crop, so its "detections" are about the whole
network input. Design choice: the registered decoders still return :class:`Detections` (so they go
through the same Postprocess, live probe and recording replay as detectors), one row per result with
box ``(0, 0, W, H)`` = the whole input in network pixels (scaled to the object's rect by the scale
step); :func:`classify` gives the same classifier result as a list of :class:`Attribute`, nvinfer's
``NvDsInferAttribute``, for notebooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dsprobe.detections import Detections, classifier_label
from dsprobe.postprocess.decoders.base import (
    Layers,
    check_bool,
    check_layer_name,
    check_number,
    empty,
    whole_input,
)
from dsprobe.postprocess.layers import find_layer
from dsprobe.postprocess.registry import ObjectBatch, StepContext, batch_over_objects, register


@dataclass(frozen=True)
class Attribute:
    """One classifier output layer's result (nvinfer's ``NvDsInferAttribute``).

    ``index``: attribute index = position of the output layer; ``class_id``: the attribute value
    (best class); ``confidence``: its probability; ``label``: ``labels[index][class_id]`` when known."""

    index: int
    layer: str
    class_id: int
    confidence: float
    label: str | None = None


def _softmax_no_shift(x: np.ndarray) -> np.ndarray:
    """TAO ``NvDsInferClassiferParseNonSoftmax``: ``exp(x) / sum(exp(x))`` without subtracting the max
    (a float sum: it overflows to inf for large logits, giving 0 probabilities, as in C++)."""
    with np.errstate(over="ignore", invalid="ignore"):
        e = np.exp(x.astype(np.float64))
        return (e / np.float32(e.sum())).astype(np.float32)


def _classifier_params(
    layers: Layers,
    layer_names: Sequence[str] | None,
    classifier_threshold: float,
    softmax: bool,
    step: str,
) -> tuple[np.float32, list[str]]:
    """The checked threshold (float32) and the attribute layers' names, in attribute order."""
    thr = np.float32(check_number(step, "classifier_threshold", classifier_threshold))
    check_bool(step, "softmax", softmax)
    if layer_names is not None and (
        isinstance(layer_names, str) or not all(isinstance(n, str) for n in layer_names)
    ):
        raise ValueError(
            f"{step}: param 'layer_names' = {layer_names!r} is not valid; expected a list of layer "
            "names"
        )
    return thr, list(layer_names) if layer_names is not None else list(layers)


def classify(
    layers: Layers,
    *,
    layer_names: Sequence[str] | None = None,
    classifier_threshold: float = 0.0,
    softmax: bool = False,
    labels: Sequence[str] | Sequence[Sequence[str]] | None = None,
    step: str = "classify",
) -> list[Attribute]:
    """nvinfer's classifier parser (``parseAttributesFromSoftmaxLayers``, ``docs/nvinfer-semantics.md`` §6.1):
    each output layer is one attribute; its best class is kept when its probability is
    ``> classifier_threshold`` and ``> 0`` (strict, first index on ties). nvinfer applies no softmax:
    the model must output probabilities. ``softmax=True`` reproduces TAO's
    ``NvDsInferClassiferParseNonSoftmax`` for logit outputs (``exp(x) / sum exp``, no max subtraction).

    ``layer_names``: the output layers in engine order (default: every layer, in recorded order).
    ``labels``: the labels file lines (``"red;green;blue"``) or lists, one per attribute."""
    thr, names = _classifier_params(layers, layer_names, classifier_threshold, softmax, step)
    out = []
    for index, name in enumerate(names):
        lname, arr = find_layer(layers, name, step=step)
        p = np.asarray(arr, np.float32).reshape(-1)
        if softmax:
            p = _softmax_no_shift(p)
        if not p.size:
            continue
        best = int(np.argmax(p))  # first maximum, like the strict '>' running max
        conf = p[best]
        if conf > thr and conf > 0:
            out.append(
                Attribute(
                    index,
                    lname,
                    best,
                    float(conf),
                    classifier_label(labels or (), index, best) or None,
                )
            )
    return out


def decode_classifier_objects(
    layers: Layers,
    objects: ObjectBatch,
    *,
    layer_names: Sequence[str] | None = None,
    classifier_threshold: float = 0.0,
    softmax: bool = False,
) -> tuple[Detections, np.ndarray]:
    """:func:`decode_classifier` for N objects at once (``layers``: the objects on the first axis):
    ``(Detections, owner)``, the rows of object ``k`` equal to its per-object call bit for bit (the
    same float32 / float64 arithmetic per row, the same first-maximum rule)."""
    step = "decode classifier"
    thr, names = _classifier_params(layers, layer_names, classifier_threshold, softmax, step)
    n = len(objects)
    index, best, conf = [], [], []
    for i, name in enumerate(names):
        _, arr = find_layer(layers, name, step=step)
        p = np.asarray(arr, np.float32).reshape(n, -1) if n else np.zeros((0, 0), np.float32)
        if softmax:
            with np.errstate(over="ignore", invalid="ignore"):
                e = np.exp(p.astype(np.float64))
                # e.sum() of one row is numpy's pairwise sum of that row: the same along axis 1
                total = e.sum(axis=1).astype(np.float32).astype(np.float64)
                p = (e / total[:, None]).astype(np.float32)
        if not p.shape[1]:
            continue  # an empty layer: no attribute, as per object
        b = p.argmax(axis=1)  # the first maximum of each row
        index.append(i)
        best.append(b)
        conf.append(p[np.arange(n), b])
    if not index:
        return empty(vectors=np.zeros((0, 1), np.float32)), np.zeros(0, np.int64)
    c = np.stack(conf, axis=1)  # (N, attributes): row-major order = each object's attribute order
    owner, col = np.nonzero((c > thr) & (c > 0))
    if not len(owner):
        return empty(vectors=np.zeros((0, 1), np.float32)), owner
    return Detections(
        whole_input(objects.context.network_size, len(owner)),
        c[owner, col],
        np.stack(best, axis=1)[owner, col],
        "network",
        vectors=np.asarray(index, np.float32)[col].reshape(-1, 1),
    ), owner


@batch_over_objects(decode_classifier_objects)
@register("decode", "classifier")
def decode_classifier(
    layers: Layers,
    ctx: StepContext,
    *,
    layer_names: Sequence[str] | None = None,
    classifier_threshold: float = 0.0,
    softmax: bool = False,
) -> Detections:
    """nvinfer's classifier rule (see :func:`classify`) as Detections: one row per attribute that passed,
    box = the whole network input ``(0, 0, W, H)``, ``class_id`` = the attribute value (best class),
    ``score`` = its probability, ``vectors[:, 0]`` = the attribute index (output layer position)."""
    attrs = classify(
        layers,
        layer_names=layer_names,
        classifier_threshold=classifier_threshold,
        softmax=softmax,
        step="decode classifier",
    )
    if not attrs:
        return empty(vectors=np.zeros((0, 1), np.float32))
    return Detections(
        whole_input(ctx.network_size, len(attrs)),
        [a.confidence for a in attrs],
        [a.class_id for a in attrs],
        "network",
        vectors=np.array([[a.index] for a in attrs], np.float32),
    )


def row_norms(v: np.ndarray) -> np.ndarray:
    """L2 norm of each row of a 2-D float64 array, each one the BLAS dot product of its row (what
    ``np.linalg.norm`` computes for one vector), so a row's norm is the same in a block of any size."""
    return np.sqrt(np.matmul(v[:, None, :], v[:, :, None])[:, 0, 0])


def decode_embedding_objects(
    layers: Layers, objects: ObjectBatch, *, layer: str | None = None, l2_normalize: bool = True
) -> tuple[Detections, np.ndarray]:
    """:func:`decode_embedding` for N objects at once (``layers``: the objects on the first axis):
    one row per object, ``(Detections, owner = 0 .. N-1)``, bit for bit the per-object rows."""
    step = "decode embedding"
    check_layer_name(step, "layer", layer)
    check_bool(step, "l2_normalize", l2_normalize)
    _, arr = find_layer(layers, layer, step=step)
    n = len(objects)
    v = np.asarray(arr, np.float32).reshape(n, -1)
    if l2_normalize and n:
        norm = np.empty(n, np.float32)
        rows = max(1, (1 << 20) // max(v.shape[1], 1))  # float64 copies of about 8 MB, reused
        buf = np.empty((min(n, rows), v.shape[1]), np.float64)
        for a in range(0, n, rows):
            b = buf[: min(rows, n - a)]
            np.copyto(b, v[a : a + len(b)])
            norm[a : a + len(b)] = row_norms(b)
        # x / 1 is x: a zero (or NaN) row is kept as it is, as per object
        v = v / np.where(norm > 0, norm, np.float32(1))[:, None]
    return Detections(
        whole_input(objects.context.network_size, n),
        np.ones(n, np.float32),
        np.zeros(n, np.int32),
        "network",
        vectors=v,
    ), np.arange(n)


@batch_over_objects(decode_embedding_objects)
@register("decode", "embedding")
def decode_embedding(
    layers: Layers, ctx: StepContext, *, layer: str | None = None, l2_normalize: bool = True
) -> Detections:
    """A vector head (re-identification / face embedding, e.g. 128-d): one row, box = the whole network
    input ``(0, 0, W, H)``, score 1, class 0, ``vectors`` ``(1, D)`` float32 (every value of the layer,
    flattened), divided by its L2 norm when ``l2_normalize`` (a zero vector stays zero).
    ``layer``: default the only layer."""
    step = "decode embedding"
    check_layer_name(step, "layer", layer)
    check_bool(step, "l2_normalize", l2_normalize)
    _, arr = find_layer(layers, layer, step=step)
    v = np.asarray(arr, np.float32).reshape(1, -1)
    if l2_normalize:
        n = row_norms(v.astype(np.float64)).astype(np.float32)[0]
        v = v / n if n > 0 else v
    return Detections(whole_input(ctx.network_size, 1), [1.0], [0], "network", vectors=v)
