"""Checks a probe runs once when it is attached (never on the streaming thread).

The GIE configs come from the Recorder (``nvinfer_config=``) and from the pipeline's nvinfer /
nvinferserver elements (``config-file-path``); a config that cannot be read is skipped silently
here (``dsprobe doctor`` reports it).
"""

from __future__ import annotations

from typing import Any

from dsprobe.deepstream.checks import ERROR, config_findings, surface_findings
from dsprobe.deepstream.graph import find_gies, find_muxer, surface_source


def gie_configs(target: Any, known: dict | None = None) -> dict[int, Any]:
    """``{gie-unique-id: config}``: ``known`` plus the configs of the pipeline's GIE elements
    (an element's ``unique-id`` property overrides the config's gie-unique-id)."""
    from dsprobe.nvinfer.config import load_nvinfer_config

    out = dict(known or {})
    for gie in find_gies(target):
        if not gie.config_path:
            continue
        try:
            cfg = load_nvinfer_config(gie.config_path)
        except Exception:
            continue
        uid = gie.unique_id if gie.unique_id not in (None, 0) else cfg.gie_unique_id
        if gie.output_tensor_meta:
            cfg = _with(cfg, output_tensor_meta=True)
        if gie.input_tensor_meta:
            cfg = _with(cfg, properties={**cfg.properties, "input-tensor-from-meta": "1"})
        out.setdefault(int(uid), cfg)
    return out


def _with(cfg: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(cfg, **changes)


def apply_config_findings(probe: Any, configs: dict[int, Any]) -> None:
    """Warn about each config finding; refuse the tensors of GIEs whose host copy is disabled."""
    for uid, cfg in configs.items():
        for f in config_findings(cfg):
            if f.key == "output-tensor-meta" or f.key.startswith("output_control"):
                continue  # the element property may set it; the no-tensor-meta warning covers it
            probe.stats.warn_once(
                f"config:{uid}:{f.key}", f"{f.source}: {f.key}={f.value}: {f.problem}; fix: {f.fix}"
            )
            if f.level == ERROR and f.key == "disable-output-host-copy":
                probe.tensors.refuse(uid, f"gie-unique-id {uid} not read: {f.problem}")


def check_recorder_attach(probe: Any, target: Any) -> None:
    if probe.options.muxer_size is None:
        probe.sizes.use_muxer(find_muxer(target))
    apply_config_findings(probe, gie_configs(target, getattr(probe.recorder, "configs", None)))
    if not (probe.images or probe.object_crops) or not probe.surfaces.enabled:
        return
    src = surface_source(target)
    if src.rebatcher is not None:
        probe.surfaces.disable(
            "surface-count",
            f"{src.rebatcher} upstream of the probe: frame_meta.batch_id no longer indexes the "
            "buffer's surfaces (pyds does not check), so no images are recorded; probe before it",
        )
    elif not probe.jetson and probe.options.cpu_surfaces is not True:
        found = surface_findings(src.memory_type, src.allocator, jetson=False)
        if found:
            f = found[0]
            probe.surfaces.disable("surface-memory", f"{f.problem}; fix: {f.fix}")


def check_postprocess_attach(probe: Any, target: Any) -> None:
    if probe.options.muxer_size is None:
        probe.sizes.use_muxer(find_muxer(target))
    apply_config_findings(probe, gie_configs(target))
