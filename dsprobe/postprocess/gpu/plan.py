"""Which Postprocess chains the GPU backend runs, read from the spec (pure Python, no CuPy).

The GPU runs nvinfer's own chain, the one :meth:`Postprocess.from_nvinfer_config` builds::

    decode (yolov8 | yolov5 | yolox | xyxy_score_class | detectnet_v2)
      -> filter:threshold
      [-> cluster:nms | cluster:none | cluster:group_rectangles (opencv_build=false: NMS 0.5, top-20)]
      [-> scale:nvinfer [-> filter:objects] | scale:none]

Anything else (other decoders, ``multi_label=true``, user functions, extra steps) is reported by
:func:`unsupported_reason` and runs on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: decoders with a GPU kernel
GPU_DECODERS = ("yolov8", "yolov5", "yolox", "xyxy_score_class", "detectnet_v2")


class UnsupportedOnGpu(ValueError):
    """A step (or param) the GPU backend does not implement; the message names it."""


@dataclass(frozen=True)
class GpuPlan:
    """The steps of a Postprocess as the GPU runs them; ``*_at``: the step index (for ``stop``)."""

    decoder: str
    decode_params: dict
    threshold: dict
    cluster: str | None = None  # "nms" | "none"
    cluster_params: dict | None = None
    cluster_at: int = -1
    scale: str | None = None  # "nvinfer" | "none"
    scale_params: dict | None = None
    scale_at: int = -1
    filters: dict | None = None  # filter:objects params fused with scale:nvinfer
    filters_at: int = -1


def _cluster(name: str, params: dict, where: str) -> tuple[str, dict]:
    if name == "nms":
        return "nms", params
    if name == "none":
        return "none", {"topk": params.get("topk", -1)}
    if name == "group_rectangles":
        if params.get("opencv_build", False):
            raise UnsupportedOnGpu(
                f"{where}: opencv_build=true (cv::groupRectangles) has no GPU kernel"
            )
        post = params.get("post_cluster_threshold", 0.0)
        return "nms", {"iou_threshold": 0.5, "post_cluster_threshold": post, "topk": 20}
    raise UnsupportedOnGpu(
        f"{where}: cluster {name!r} has no GPU kernel (nms, none, group_rectangles)"
    )


def plan_of(pp: Any) -> GpuPlan:
    """The :class:`GpuPlan` of ``pp``; :class:`UnsupportedOnGpu` names the first step it cannot run."""
    steps = list(pp.steps)
    d = steps[0]
    if d.name not in GPU_DECODERS:
        raise UnsupportedOnGpu(
            f"step 0: decoder {d.name!r} has no GPU kernel ({', '.join(GPU_DECODERS)})"
        )
    if d.params.get("multi_label", False):
        raise UnsupportedOnGpu(f"step 0 (decode {d.name!r}): multi_label=true has no GPU kernel")
    if len(steps) < 2 or (steps[1].kind, steps[1].name) != ("filter", "threshold"):
        raise UnsupportedOnGpu(
            "step 1: the GPU runs decode -> filter:threshold -> ...; got "
            + (f"{steps[1].kind}:{steps[1].name}" if len(steps) > 1 else "nothing")
        )
    kw: dict[str, Any] = {}
    i = 2
    if i < len(steps) and steps[i].kind == "cluster":
        kw["cluster"], kw["cluster_params"] = _cluster(
            steps[i].name, dict(steps[i].params), f"step {i}"
        )
        kw["cluster_at"] = i
        i += 1
    if i < len(steps) and steps[i].kind == "scale" and steps[i].name in ("nvinfer", "none"):
        kw.update(scale=steps[i].name, scale_params=dict(steps[i].params), scale_at=i)
        i += 1
        if (
            kw["scale"] == "nvinfer"
            and i < len(steps)
            and (steps[i].kind, steps[i].name) == ("filter", "objects")
        ):
            kw.update(filters=dict(steps[i].params), filters_at=i)
            i += 1
    if i < len(steps):
        s = steps[i]
        raise UnsupportedOnGpu(f"step {i} ({s.kind} {s.name!r}) has no GPU kernel at that place")
    return GpuPlan(d.name, dict(d.params), dict(steps[1].params), **kw)


def unsupported_reason(pp: Any) -> str:
    """Why ``pp`` cannot run on the GPU, or ``""`` when it can."""
    try:
        plan_of(pp)
    except UnsupportedOnGpu as exc:
        return f"{pp}: {exc}"
    return ""
