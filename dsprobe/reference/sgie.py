"""Which objects a secondary GIE (process-mode=2) infers on, as nvinfer's ``should_infer_object``
decides (docs/nvinfer-semantics.md §1.7), for objects that no tracker has seen.

* ``operate-on-gie-id``: only objects whose ``unique_component_id`` is that GIE (-1: any).
* ``input-object-min-width/height``: skip when the rect is smaller, the minimum being raised to
  nvinfer's built-in floor (16 px in DeepStream 6.x sources, 1 px in 9.x; ``deepstream_version``).
* ``input-object-max-width/height``: skip when larger (0: no limit).
* ``operate-on-class-ids``: only those classes (empty: all).

nvinfer's re-inference rules for tracked objects (area grown by 20 %, ``secondary-reinfer-interval``)
need a tracker's object ids; the reference recorder has no tracker, so every selected object is
inferred on every frame, as nvinfer does for untracked objects.
"""

from __future__ import annotations

from typing import Sequence

from dsprobe.nvinfer.config import NvinferConfig
from dsprobe.records import ObjectRecord


def min_object_floor(deepstream_version: float) -> int:
    """nvinfer's MIN_INPUT_OBJECT_WIDTH/HEIGHT: 16 in the 6.x sources, 1 from 9.0."""
    return 1 if deepstream_version >= 9.0 else 16


def should_infer(obj: ObjectRecord, cfg: NvinferConfig, deepstream_version: float = 7.1) -> bool:
    """True when an SGIE configured by ``cfg`` infers on ``obj`` (rect in frame pixels)."""
    if cfg.operate_on_gie_id > -1 and obj.unique_component_id != cfg.operate_on_gie_id:
        return False
    _, _, w, h = obj.rect
    floor = min_object_floor(deepstream_version)
    if w < max(cfg.input_object_min_width, floor) or h < max(cfg.input_object_min_height, floor):
        return False
    if cfg.input_object_max_width > 0 and w > cfg.input_object_max_width:
        return False
    if cfg.input_object_max_height > 0 and h > cfg.input_object_max_height:
        return False
    if cfg.operate_on_class_ids and obj.class_id not in cfg.operate_on_class_ids:
        return False
    return True


def select_objects(
    objects: Sequence[ObjectRecord], cfg: NvinferConfig, deepstream_version: float = 7.1
) -> list[int]:
    """Indices of ``objects`` the SGIE infers on, in metadata order."""
    return [i for i, o in enumerate(objects) if should_infer(o, cfg, deepstream_version)]
