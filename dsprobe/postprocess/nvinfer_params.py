"""The one table between nvinfer config keys and postprocess step params.

Each :class:`KeyParam` row says which nvinfer key (``[property]`` or ``[class-attrs-*]``) sets which
param of which registered steps. :meth:`Postprocess.from_nvinfer_config
<dsprobe.postprocess.pipeline.Postprocess.from_nvinfer_config>` builds its steps from it,
``dsprobe export-nvinfer`` (:mod:`dsprobe.analysis.export`) writes keys from it, and params by name
(:meth:`Postprocess.param_specs <dsprobe.postprocess.pipeline.Postprocess.param_specs>`) take ranges
and ownership from it. Adding a key is one row here (its parser lives in :mod:`dsprobe.nvinfer.keys`).

The cluster-mode map (:data:`CLUSTER_MODES`) is written here once too. nvinfer's semantics behind
each row are in ``docs/postprocess.md`` (from ``gstnvinfer_meta_utils.cpp`` and ``nvdsinfer_context_impl_output_parsing.cpp``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from dsprobe.nvinfer.config import (
    CLUSTER_DBSCAN,
    CLUSTER_DBSCAN_NMS,
    CLUSTER_GROUP_RECTANGLES,
    CLUSTER_NMS,
    CLUSTER_NONE,
    NvinferConfig,
)
from dsprobe.nvinfer.keys import CLASS_KEYS, PROPERTY_KEYS


@dataclass(frozen=True)
class KeyParam:
    """One nvinfer key and the step param it sets.

    * ``key``: the nvinfer config key (``nms-iou-threshold``); its section and the config field it
      fills come from :mod:`dsprobe.nvinfer.keys`.
    * ``param``: the step function's keyword param (``iou_threshold``).
    * ``steps``: the ``"kind:name"`` steps that take it (``"cluster:nms"``).
    * ``range``: ``(low, high)`` of sensible values (None = open) for sliders and searches.
    * ``only_if_set``: written (to a spec or a config) only when it differs from nvinfer's default
      (the object-filter keys: nvinfer runs its object checks anyway, a 0 key is "off").
    * ``unset``: the param value that means "key absent" (``topk`` -1: keep all; nvinfer's parser
      takes only ``topk >= 0``), never written to a config.
    """

    key: str
    param: str
    steps: tuple[str, ...]
    range: tuple[float | None, float | None] | None = None
    only_if_set: bool = False
    unset: Any = None

    @property
    def per_class(self) -> bool:
        """A ``[class-attrs-*]`` key (one value per class); else a ``[property]`` key."""
        return self.key in CLASS_KEYS

    @property
    def field(self) -> str:
        """The :class:`~dsprobe.nvinfer.config.NvinferConfig` / ``ClassAttrs`` field it fills
        (``pre.`` = a :class:`~dsprobe.nvinfer.config.Preprocessing` field)."""
        field = (CLASS_KEYS if self.per_class else PROPERTY_KEYS)[self.key][0]
        assert field is not None, self.key
        return field

    def config_value(self, cfg: NvinferConfig, num_classes: int) -> Any:
        """The key's value in ``cfg``: per class a list of ``num_classes`` values (a scalar when all
        agree); a list property as a list."""
        if self.per_class:
            vals = list(cfg.per_class(self.field, num_classes))
            return vals[0] if vals and all(v == vals[0] for v in vals) else vals
        obj, _, name = self.field.rpartition(".")
        value = getattr(cfg.preprocessing if obj == "pre" else cfg, name)
        return list(value) if isinstance(value, tuple) else value

    def is_set(self, value: Any) -> bool:
        """Whether ``value`` differs from the key's "off" value (0 / False / empty)."""
        vals = value if isinstance(value, (list, tuple)) and self.per_class else [value]
        return any(bool(v) for v in vals)


_NMS, _GR, _DBSCAN, _NONE = (
    "cluster:nms",
    "cluster:group_rectangles",
    "cluster:dbscan",
    "cluster:none",
)
_OBJ = ("filter:objects",)
_UNIT = (0.0, 1.0)

#: every nvinfer key dsprobe maps onto a step param, in the order a spec lists them
NVINFER_PARAMS: tuple[KeyParam, ...] = (
    KeyParam("pre-cluster-threshold", "pre_cluster_threshold", ("filter:threshold",), _UNIT),
    KeyParam("num-detected-classes", "num_classes", ("filter:threshold",), (0, None), True),
    KeyParam("group-threshold", "group_threshold", (_GR,), (0, None)),
    KeyParam("eps", "eps", (_GR, _DBSCAN), (0.0, None)),
    KeyParam("minBoxes", "min_boxes", (_DBSCAN,), (0, None)),
    KeyParam("dbscan-min-score", "min_score", (_DBSCAN,), _UNIT),
    KeyParam("nms-iou-threshold", "iou_threshold", (_NMS, _DBSCAN), _UNIT),
    KeyParam("post-cluster-threshold", "post_cluster_threshold", (_NMS, _GR, _DBSCAN), _UNIT),
    KeyParam("topk", "topk", (_NMS, _NONE, _DBSCAN), (-1, None), unset=-1),
    KeyParam("maintain-aspect-ratio", "maintain_aspect_ratio", ("scale:nvinfer",)),
    KeyParam("symmetric-padding", "symmetric_padding", ("scale:nvinfer",)),
    KeyParam("filter-out-class-ids", "filter_out_class_ids", _OBJ, only_if_set=True),
    KeyParam("detected-min-w", "detected_min_w", _OBJ, (0, None), only_if_set=True),
    KeyParam("detected-min-h", "detected_min_h", _OBJ, (0, None), only_if_set=True),
    KeyParam("detected-max-w", "detected_max_w", _OBJ, (0, None), only_if_set=True),
    KeyParam("detected-max-h", "detected_max_h", _OBJ, (0, None), only_if_set=True),
    KeyParam("roi-top-offset", "roi_top_offset", _OBJ, (0, None), only_if_set=True),
    KeyParam("roi-bottom-offset", "roi_bottom_offset", _OBJ, (0, None), only_if_set=True),
    KeyParam(
        "crop-objects-to-roi-boundary", "crop_objects_to_roi_boundary", _OBJ, only_if_set=True
    ),
)

#: nvinfer ``cluster-mode`` -> (cluster step name, the params that mode fixes)
CLUSTER_MODES: dict[int, tuple[str, dict[str, Any]]] = {
    CLUSTER_GROUP_RECTANGLES: ("group_rectangles", {}),
    CLUSTER_DBSCAN: ("dbscan", {"then_nms": False}),
    CLUSTER_NMS: ("nms", {}),
    CLUSTER_DBSCAN_NMS: ("dbscan", {"then_nms": True}),
    CLUSTER_NONE: ("none", {}),
}


def key_param(key: str) -> KeyParam:
    """The row of nvinfer ``key``; KeyError naming the mapped keys when it has none."""
    for row in NVINFER_PARAMS:
        if row.key == key:
            return row
    raise KeyError(
        f"nvinfer key {key!r} maps to no step param; mapped: {[r.key for r in NVINFER_PARAMS]}"
    )


def rows_for_step(kind: str, name: str) -> list[KeyParam]:
    """The rows whose param step ``kind:name`` takes, in table order."""
    step = f"{kind}:{name}"
    return [row for row in NVINFER_PARAMS if step in row.steps]


def row_for_param(kind: str, name: str, param: str) -> KeyParam | None:
    """The row that maps ``param`` of step ``kind:name`` (None: no nvinfer key sets it)."""
    return next((r for r in rows_for_step(kind, name) if r.param == param), None)


def cluster_mode_of(name: str, params: Mapping[str, Any]) -> int | None:
    """nvinfer's ``cluster-mode`` for cluster step ``name`` with ``params`` (None: nvinfer has none)."""
    for mode, (step_name, fixed) in CLUSTER_MODES.items():
        if step_name == name and all(bool(params.get(k, False)) == v for k, v in fixed.items()):
            return mode
    return None


def steps_from_config(
    cfg: NvinferConfig,
    decode: Mapping[str, Any],
    *,
    deepstream_version: float,
    opencv_build: bool,
) -> list[dict[str, Any]]:
    """The steps (``{"kind", "name", "params"}`` dicts) equivalent to ``cfg`` after the ``decode``
    step: ``filter:threshold -> cluster:<cluster-mode> -> scale:nvinfer -> filter:objects``, each
    step's params read through the table (object-filter keys only when set). ValueError for an
    unknown cluster-mode."""
    n = cfg.num_detected_classes or 1
    mode = cfg.cluster_mode
    if mode not in CLUSTER_MODES:
        raise ValueError(f"{cfg.path or 'config'}: unknown cluster-mode {mode}")
    cluster, fixed = CLUSTER_MODES[mode]
    extra: dict[str, dict[str, Any]] = {
        "cluster:group_rectangles": {"opencv_build": opencv_build},
        "cluster:dbscan": dict(fixed),
        "scale:nvinfer": {"deepstream_version": deepstream_version},
    }
    steps = [dict(decode)]
    for kind, name in (
        ("filter", "threshold"),
        ("cluster", cluster),
        ("scale", "nvinfer"),
        ("filter", "objects"),
    ):
        params: dict[str, Any] = {}
        for row in rows_for_step(kind, name):
            value = row.config_value(cfg, n)
            if not row.only_if_set or row.is_set(value):
                params[row.param] = value
        params.update(extra.get(f"{kind}:{name}", {}))
        steps.append({"kind": kind, "name": name, "params": params})
    return steps
