"""Settings of a GIE config that make recording or the live postprocess fail or lie, with the fix.

Pure Python (no pyds): used by ``dsprobe doctor`` and by the probes when they are attached. Each
:class:`Finding` names the config file, the key and its value. Sources (DeepStream 6.2 plugin
sources): ``gstnvinfer.cpp`` (tensor meta is attached only when ``!classifier_async_mode``, and
per ROI with ``input-tensor-meta``), ``nvdsinfer_context_impl.cpp`` (``disable-output-host-copy``
allocates the host buffers but skips the device-to-host copy), ``gstnvinfer_meta_utils.cpp``
(``unique_component_id`` = gie-unique-id, which an SGIE's ``operate-on-gie-id`` must name).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from dsprobe.nvinfer.nvinferserver import is_nvinferserver_text

ERROR, WARNING, INFO = "error", "warning", "info"


@dataclass(frozen=True)
class Finding:
    """One problem: ``level`` (error: records nothing or garbage; warning: partly wrong or
    surprising; info: advice), where (``source`` file, ``key``, ``value``), what goes wrong and
    the fix."""

    level: str
    source: str
    key: str
    value: str
    problem: str
    fix: str

    def __str__(self) -> str:
        where = f"{self.source}: {self.key}={self.value}" if self.key else self.source
        return f"{self.level.upper()} {where}\n  {self.problem}\n  fix: {self.fix}"


def _flag(cfg: Any, key: str) -> bool:
    raw = str(cfg.properties.get(key, "0")).strip().lower()
    return raw in ("1", "true", "yes")


def config_findings(cfg: Any, *, live: bool = False) -> list[Finding]:
    """Findings for one GIE config (an NvinferConfig, also for nvinferserver configs).

    ``live``: the config feeds ``attach_postprocess`` (tensors turned into objects in the probe)
    rather than only the recorder."""
    src = cfg.path or f"gie-unique-id {cfg.gie_unique_id}"
    server = is_nvinferserver_text(cfg.text)
    out: list[Finding] = []
    if not cfg.output_tensor_meta:
        key = "output_control.output_tensor_meta" if server else "output-tensor-meta"
        out.append(
            Finding(
                WARNING,
                src,
                key,
                "false" if server else "0",
                "nvinfer attaches no NvDsInferTensorMeta: nothing is recorded and the live postprocess "
                "sees no tensors (unless the element property output-tensor-meta is set)",
                f"set {'output_control { output_tensor_meta: true }' if server else 'output-tensor-meta=1'}"
                " (or the element property output-tensor-meta=true)",
            )
        )
    if _flag(cfg, "disable-output-host-copy"):
        out.append(
            Finding(
                ERROR,
                src,
                "disable-output-host-copy",
                "1",
                "the output host buffers exist but are never filled: the tensor meta's host pointers "
                "hold stale or zero data, so recordings and the live postprocess would be garbage; "
                "dsprobe refuses this GIE's tensors",
                "set disable-output-host-copy=0",
            )
        )
    if cfg.process_mode == 2 and _flag(cfg, "classifier-async-mode"):
        out.append(
            Finding(
                ERROR,
                src,
                "classifier-async-mode",
                "1",
                "an asynchronous SGIE classifier attaches no tensor meta (and its results arrive on "
                "later frames): nothing of this SGIE is recorded and a live classifier postprocess "
                "never runs",
                "set classifier-async-mode=0 while recording or running dsprobe's postprocess",
            )
        )
    if _flag(cfg, "input-tensor-from-meta"):
        out.append(
            Finding(
                ERROR,
                src,
                "input-tensor-from-meta",
                "1",
                "with nvdspreprocess input tensors nvinfer attaches tensor meta to ROI meta (and one "
                "batch-level meta), which pyds 1.2 cannot walk: dsprobe records nothing from this GIE",
                "record with the GIE reading frames itself (input-tensor-from-meta=0, no "
                "nvdspreprocess), then tune; the element property input-tensor-meta has the same effect",
            )
        )
    if cfg.process_mode == 2 and (cfg.input_object_min_width or cfg.input_object_min_height):
        out.append(
            Finding(
                INFO,
                src,
                "input-object-min-width/height",
                f"{cfg.input_object_min_width}x{cfg.input_object_min_height}",
                "the SGIE skips smaller objects (and classes outside operate-on-class-ids): they have "
                "no tensor meta and no record",
                "expected; lower the minimum to record small objects too",
            )
        )
    if live and cfg.network_type != 100 and cfg.output_tensor_meta:
        out.append(
            Finding(
                INFO,
                src,
                "network-type",
                str(cfg.network_type),
                "nvinfer also runs its own parser: its objects and dsprobe's live objects both end up "
                "on the frame",
                "set network-type=100 for the GIE whose output dsprobe's postprocess replaces",
            )
        )
    return out


def pipeline_findings(configs: Mapping[int, Any]) -> list[Finding]:
    """Findings across GIEs: an SGIE's ``operate-on-gie-id`` naming no GIE of the set."""
    out = []
    ids = set(configs)
    for uid, cfg in configs.items():
        target = cfg.operate_on_gie_id
        if cfg.process_mode == 2 and target not in (-1, None) and target not in ids:
            out.append(
                Finding(
                    WARNING,
                    cfg.path or f"gie-unique-id {uid}",
                    "operate-on-gie-id",
                    str(target),
                    f"no GIE given has gie-unique-id {target} (ids: {sorted(ids)}): the SGIE infers on "
                    "objects whose unique_component_id equals it, so it may never run. Objects added by "
                    "attach_postprocess carry the PGIE's id unless component_id= says otherwise",
                    "make operate-on-gie-id name the PGIE's gie-unique-id (or attach_postprocess's "
                    "component_id)",
                )
            )
    return out


def platform_findings(pyds_version: str | None, numpy_version: str) -> list[Finding]:
    """pyds 1.2 is built against numpy 1.x (its README asks for numpy 1.26)."""
    out = []
    if pyds_version is None:
        out.append(
            Finding(
                WARNING,
                "python",
                "pyds",
                "missing",
                "DeepStream's Python bindings are not importable here: attach_recorder / "
                "attach_postprocess raise ImportError",
                "install the pyds wheel of your DeepStream version (docs/jetson.md, Install)",
            )
        )
    elif pyds_version.startswith("1.") and int(numpy_version.split(".")[0]) >= 2:
        out.append(
            Finding(
                ERROR,
                "python",
                "numpy",
                numpy_version,
                f"pyds {pyds_version} is built against numpy 1.x; with numpy 2 its array returns break",
                'pip3 install "numpy<2" (numpy 1.26, as deepstream_python_apps asks)',
            )
        )
    return out


def surface_findings(memory_type: int | None, allocator: str | None, jetson: bool) -> list[Finding]:
    """dGPU frame pixels are CPU-readable only in CUDA unified (3) or pinned (1) memory."""
    if jetson or memory_type in (1, 3):
        return []
    where = allocator or "the element before the probe"
    return [
        Finding(
            WARNING,
            where,
            "nvbuf-memory-type",
            "unknown" if memory_type is None else str(memory_type),
            "on dGPU get_nvds_buf_surface hands numpy the surface pointer as is: a CPU read of CUDA "
            "device memory is a segfault. dsprobe records no images here",
            f"set nvbuf-memory-type=3 (CUDA unified; 1 = pinned on WSL) on {where} and on "
            "nvstreammux, or pass attach_recorder(..., cpu_surfaces=True) if you know it is",
        )
    ]


def format_findings(findings: Iterable[Finding]) -> str:
    return "\n".join(str(f) for f in findings)
