"""Running a :class:`~dsprobe.postprocess.gpu.plan.GpuPlan` on a batch of frames on the GPU.

:func:`run_device` keeps everything on the GPU (flat candidates, for benchmarks, the search and a live
probe that wants to stay on the device); :func:`run_batch` returns one
:class:`~dsprobe.detections.Detections` per frame, identical to ``pp.run(layers_of_frame, ctx)``.
Errors are the CPU path's, wrapped the same way (``PostprocessError: step i (kind 'name'): ...``).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from dsprobe.detections import Detections
from dsprobe.postprocess.gpu import cluster as ops
from dsprobe.postprocess.gpu.decode import Candidates, decode_batch
from dsprobe.postprocess.gpu.plan import GpuPlan
from dsprobe.postprocess.registry import PostprocessError, StepContext

_CAUGHT = (ValueError, KeyError, IndexError, TypeError)


def _step_error(pp: Any, i: int, exc: Exception, fused: bool = False) -> Exception:
    if isinstance(exc, PostprocessError):
        return exc
    s = pp.steps[i]
    where = (
        f"steps {i}-{i + 1} ({s.kind} {s.name!r} + filter 'objects')"
        if fused
        else f"step {i} ({s.kind} {s.name!r})"
    )
    return PostprocessError(f"{where}: {exc}")


def device_layers(layers: Mapping[str, Any]) -> dict[str, Any]:
    """Each ``(B, ...)`` layer as a CuPy array (host arrays are copied to the GPU; CuPy arrays, e.g.
    over nvinfer's device buffers, are used in place)."""
    import cupy

    return {n: cupy.asarray(a) for n, a in layers.items()}


def run_device(
    pp: Any,
    plan: GpuPlan,
    layers: Mapping[str, Any],
    contexts: Sequence[StepContext],
    stop: int | None = None,
    mappings: tuple | None = None,
) -> tuple[Candidates, str]:
    """Steps ``[0, stop)`` of ``pp`` on a batch: flat candidates on the GPU (frame, then the step's
    own order) and their space. All frames must share one network size (the decoder's geometry).
    ``mappings``: precomputed :func:`~dsprobe.postprocess.gpu.cluster.frame_mappings` for the scale."""
    end = len(pp.steps) if stop is None else stop
    ctx = contexts[0]
    try:
        c = decode_batch(plan.decoder, plan.decode_params, device_layers(layers), ctx)
    except _CAUGHT as exc:
        raise _step_error(pp, 0, exc) from exc
    if end <= 1:
        return c, "network"
    try:
        t = plan.threshold
        c = ops.threshold(
            c,
            t.get("pre_cluster_threshold", 0.2),
            t.get("num_classes", 0) or ctx.num_classes,
        )
    except _CAUGHT as exc:
        raise _step_error(pp, 1, exc) from exc
    if plan.cluster is not None and plan.cluster_at < end:
        p = plan.cluster_params or {}
        try:
            c = ops.cluster(
                c,
                plan.cluster,
                p.get("iou_threshold", 0.3),
                p.get("post_cluster_threshold", 0.0),
                p.get("topk", -1),
            )
        except _CAUGHT as exc:
            raise _step_error(pp, plan.cluster_at, exc) from exc
    if plan.scale != "nvinfer" or plan.scale_at >= end:
        return c, "frame" if plan.scale == "nvinfer" and plan.scale_at < end else "network"
    fused = plan.filters is not None and plan.filters_at < end
    sp = plan.scale_params or {}
    try:
        m = mappings or ops.frame_mappings(
            contexts, sp.get("maintain_aspect_ratio"), sp.get("symmetric_padding")
        )
        c = ops.scale_nvinfer(
            c,
            m,
            deepstream_version=sp.get("deepstream_version", 7.1),
            filters=plan.filters if fused else None,
        )
    except _CAUGHT as exc:
        raise _step_error(pp, plan.scale_at, exc, fused) from exc
    return c, "frame"


def to_host(c: Candidates) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``boxes, scores, class_ids, frame`` as numpy arrays."""
    return c.boxes.get(), c.scores.get(), c.class_ids.get(), c.frame.get()


def split_frames(c: Candidates, batch: int, space: str) -> list[Detections]:
    """One Detections per frame of the batch (``c`` is ordered by frame)."""
    boxes, scores, classes, frame = to_host(c)
    bounds = np.searchsorted(frame, np.arange(batch + 1))
    return [
        Detections(boxes[a:b], scores[a:b], classes[a:b], space)  # type: ignore[arg-type]
        for a, b in zip(bounds[:-1], bounds[1:])
    ]


def groups_by_network_size(contexts: Sequence[StepContext]) -> list[np.ndarray]:
    """Frame positions grouped by network size (a batch decodes at one geometry), in first-seen order."""
    keys = [tuple(c.network_size) for c in contexts]
    order = dict.fromkeys(keys)
    k = np.array([list(order).index(x) for x in keys]) if len(order) > 1 else None
    if k is None:
        return [np.arange(len(contexts))]
    return [np.flatnonzero(k == i) for i in range(len(order))]


def run_batch(
    pp: Any,
    plan: GpuPlan,
    layers: Mapping[str, Any],
    contexts: Sequence[StepContext],
    stop: int | None = None,
) -> list[Detections]:
    """One Detections per frame, identical to ``pp.run({n: layers[n][i] ...}, contexts[i])``."""
    out: list[Detections | None] = [None] * len(contexts)
    for pos in groups_by_network_size(contexts):
        if len(pos) == len(contexts):
            sub, ctxs = layers, contexts
        else:
            sub = {n: a[pos] for n, a in layers.items()}
            ctxs = [contexts[i] for i in pos]
        c, space = run_device(pp, plan, sub, ctxs, stop)
        for i, d in zip(pos, split_frames(c, len(pos), space)):
            out[i] = d
    return out  # type: ignore[return-value]
