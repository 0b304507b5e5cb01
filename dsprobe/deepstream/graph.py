"""What the probe can learn from the GStreamer pipeline around it (no pyds needed).

Walked once when a probe is attached, never on the streaming thread:

* :func:`find_muxer`: the pipeline's nvstreammux and its output size. The classic nvstreammux has
  ``width`` / ``height`` properties; the new one (``USE_NEW_NVSTREAMMUX=yes``) has neither and does
  not scale, so each frame keeps its source size.
* :func:`upstream_elements`: the elements a probed pad's buffers came through, nearest first: where
  the frame surfaces were allocated (``nvbuf-memory-type`` of the nearest nvvideoconvert /
  nvmultistreamtiler / nvstreammux) and whether a tiler or demuxer changed the surface count.
* :func:`find_gies`: the nvinfer / nvinferserver elements with their ``config-file-path`` and the
  element properties that override the config (``unique-id``, ``output-tensor-meta``,
  ``input-tensor-meta``).

Every function returns what it could find and None / [] otherwise; it never raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: elements that allocate the frame surfaces downstream of them (nvbuf-memory-type)
SURFACE_ALLOCATORS = ("nvvideoconvert", "nvmultistreamtiler", "nvstreammux", "nvvidconv")
#: elements after which frame_meta.batch_id no longer indexes the buffer's surface list
SURFACE_REBATCHERS = ("nvmultistreamtiler", "nvstreamdemux", "nvstreamtiler")
GIE_FACTORIES = ("nvinfer", "nvinferserver")
NVBUF_MEM_NAMES = {
    0: "default",
    1: "cuda-pinned",
    2: "cuda-device",
    3: "cuda-unified",
    4: "surface-array",
}


@dataclass(frozen=True)
class MuxerInfo:
    """The pipeline's nvstreammux: ``size`` (width, height) of its output, None for the new mux."""

    name: str
    size: tuple[int, int] | None

    @property
    def new_mux(self) -> bool:
        return self.size is None


@dataclass(frozen=True)
class GieElement:
    """An nvinfer / nvinferserver element of the pipeline (properties None when unreadable)."""

    name: str
    factory: str
    config_path: str | None
    unique_id: int | None
    output_tensor_meta: bool | None
    input_tensor_meta: bool | None


def factory_name(el: Any) -> str:
    try:
        f = el.get_factory()
        return f.get_name() if f is not None else ""
    except Exception:
        return ""


def prop(el: Any, name: str) -> Any:
    """``el.get_property(name)`` or None when the element has no such property."""
    try:
        return el.get_property(name)
    except Exception:
        return None


def element_of(target: Any) -> Any:
    """The element of a pad (its parent), or ``target`` itself."""
    if hasattr(target, "add_probe"):
        try:
            return target.get_parent_element()
        except Exception:
            return None
    return target


def all_elements(target: Any) -> list:
    """Every element of the top-level bin that holds ``target`` (recursively)."""
    try:
        top = element_of(target)
        while top is not None and top.get_parent() is not None:
            top = top.get_parent()
        out = []
        it = top.iterate_recurse() if top is not None else None
        while it is not None:
            ok, el = it.next()
            if int(ok) != 1:  # Gst.IteratorResult.OK
                break
            out.append(el)
        return out
    except Exception:
        return []


def find_muxer(target: Any) -> MuxerInfo | None:
    """The nvstreammux of ``target``'s pipeline, or None if there is none (or it cannot be walked)."""
    for el in all_elements(target):
        if factory_name(el) == "nvstreammux":
            w, h = prop(el, "width"), prop(el, "height")
            size = (int(w), int(h)) if w is not None and h is not None else None
            return MuxerInfo(el.get_name(), size)
    return None


def find_gies(target: Any) -> list[GieElement]:
    """The nvinfer / nvinferserver elements of ``target``'s pipeline."""
    out = []
    for el in all_elements(target):
        fac = factory_name(el)
        if fac in GIE_FACTORIES:
            uid, otm, itm = (
                prop(el, "unique-id"),
                prop(el, "output-tensor-meta"),
                prop(el, "input-tensor-meta"),
            )
            out.append(
                GieElement(
                    el.get_name(),
                    fac,
                    prop(el, "config-file-path") or None,
                    None if uid is None else int(uid),
                    None if otm is None else bool(otm),
                    None if itm is None else bool(itm),
                )
            )
    return out


def upstream_elements(target: Any, limit: int = 64) -> list:
    """Elements upstream of ``target`` (a pad or an element), nearest first, following each element's
    static ``sink`` pad to its peer; stops at an element without one (e.g. nvstreammux)."""
    out = []
    try:
        el = element_of(target)
        if hasattr(target, "add_probe") and _is_sink(target):
            peer = target.get_peer()
            el = peer.get_parent_element() if peer is not None else None
        while el is not None and len(out) < limit:
            out.append(el)
            sink = el.get_static_pad("sink")
            peer = sink.get_peer() if sink is not None else None
            el = peer.get_parent_element() if peer is not None else None
    except Exception:
        pass
    return out


def _is_sink(pad: Any) -> bool:
    try:
        return int(pad.get_direction()) == 2  # GST_PAD_SINK
    except Exception:
        return getattr(pad, "name", "").startswith("sink")


@dataclass(frozen=True)
class SurfaceSource:
    """Where the frame surfaces at a probe come from: the allocating element and its
    ``nvbuf-memory-type`` (None when unknown), and the first element that re-batched them."""

    allocator: str | None
    memory_type: int | None
    rebatcher: str | None


def surface_source(target: Any) -> SurfaceSource:
    allocator = memory = rebatcher = None
    for el in upstream_elements(target):
        fac = factory_name(el)
        if fac in SURFACE_REBATCHERS and rebatcher is None:
            rebatcher = f"{el.get_name()} ({fac})"
        if fac in SURFACE_ALLOCATORS and allocator is None:
            allocator = f"{el.get_name()} ({fac})"
            m = prop(el, "nvbuf-memory-type")
            memory = None if m is None else int(m)
    return SurfaceSource(allocator, memory, rebatcher)
