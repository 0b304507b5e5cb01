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

from dsprobe.detections import Detections
from dsprobe.postprocess.decoders.base import (
    Layers,
    check_bool,
    check_layer_name,
    check_number,
    empty,
    whole_input,
)
from dsprobe.postprocess.layers import find_layer
from dsprobe.postprocess.registry import StepContext, register


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


def _attribute_labels(
    labels: Sequence[str] | Sequence[Sequence[str]] | None, index: int
) -> Sequence[str]:
    """nvinfer classifier labels: line ``index`` of the labels file, split on ``;``."""
    if not labels or index >= len(labels):
        return ()
    line = labels[index]
    return line.split(";") if isinstance(line, str) else line


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
    thr = np.float32(check_number(step, "classifier_threshold", classifier_threshold))
    check_bool(step, "softmax", softmax)
    if layer_names is not None and (
        isinstance(layer_names, str) or not all(isinstance(n, str) for n in layer_names)
    ):
        raise ValueError(
            f"{step}: param 'layer_names' = {layer_names!r} is not valid; expected a list of layer "
            "names"
        )
    names = list(layer_names) if layer_names is not None else list(layers)
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
            names_ = _attribute_labels(labels, index)
            out.append(
                Attribute(
                    index, lname, best, float(conf), names_[best] if best < len(names_) else None
                )
            )
    return out


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
        n = np.float32(np.linalg.norm(v.astype(np.float64)))
        v = v / n if n > 0 else v
    return Detections(whole_input(ctx.network_size, 1), [1.0], [0], "network", vectors=v)
