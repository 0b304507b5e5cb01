"""``attach_postprocess``: run a tuned Postprocess in the pipeline and add NvDsObjectMeta.

For each frame (PGIE tensor meta) or object (SGIE tensor meta) of the chosen GIE, the SAME
:class:`dsprobe.Postprocess` the notebook used turns the copied tensors into frame-pixel detections,
which are added from the meta pools (docs/pyds-notes.md §4): rect in muxer pixels, class id, confidence,
label (< 128 bytes), untracked object id, ``unique_component_id`` for a downstream SGIE's
``operate-on-gie-id``, parent for SGIE detections. Optional: keypoints as display meta circles, and
per-object vectors (embeddings) as user meta readable with :func:`read_vector_user_meta`.
"""

from __future__ import annotations

import ctypes
from typing import Any, Iterable

import numpy as np

from dsprobe.deepstream.meta import (
    network_size,
    object_metas,
    read_tensor_meta,
    rect_of,
    tensor_metas,
)
from dsprobe.deepstream.probe import PadProbe, ProbeHandle, ProbeStats, attach, find_muxer_size
from dsprobe.detections import Detections
from dsprobe.records import UNTRACKED_OBJECT_ID

VECTOR_META_TYPE = "DSPROBE.VECTOR.USER_META"
LABEL_BYTES = 127  # obj_label is char[128]; pyds copies without a terminator or bounds check
MAX_DISPLAY_ELEMENTS = 16  # MAX_ELEMENTS_IN_DISPLAY_META


class _Frame:
    """What Postprocess.context needs for one frame (network size from the tensor meta)."""

    def __init__(self, net: tuple[int, int, int], frame_size: tuple[int, int]) -> None:
        self.network_size = net
        self.frame_size = frame_size


def _pack_vector(pyds: Any, vec: np.ndarray) -> Any:
    """A g_malloc'd ``{int32 dim; float32 v[dim]}`` block wrapped in a capsule for user_meta_data."""
    v = np.ascontiguousarray(vec, np.float32)
    payload = np.concatenate([np.array([v.size], np.int32).view(np.float32), v]).tobytes()
    addr = pyds.alloc_buffer(len(payload))
    ctypes.memmove(addr, payload, len(payload))
    new_capsule = ctypes.pythonapi.PyCapsule_New
    new_capsule.restype = ctypes.py_object
    new_capsule.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)
    return new_capsule(addr, None, None)


def read_vector_user_meta(pyds: Any, user_meta: Any) -> np.ndarray:
    """Downstream: the float32 vector dsprobe attached as user meta (``{int32 dim; float32 v[dim]}``)."""
    addr = pyds.get_ptr(user_meta.user_meta_data)
    dim = ctypes.c_int32.from_address(addr).value
    return np.array((ctypes.c_float * dim).from_address(addr + 4), dtype=np.float32)


def _release_vector(pyds: Any) -> Any:
    def release(data: Any, user_data: Any) -> None:
        um = pyds.NvDsUserMeta.cast(data)
        pyds.free_gbuffer(um.user_meta_data)

    return release


def _copy_vector(pyds: Any) -> Any:
    def copy(data: Any, user_data: Any) -> Any:
        um = pyds.NvDsUserMeta.cast(data)
        return _pack_vector(pyds, read_vector_user_meta(pyds, um))

    return copy


class PostprocessProbe(PadProbe):
    """The live postprocess pad-probe callback (testable without GStreamer)."""

    lock_meta = True  # it adds object meta

    def __init__(
        self,
        postprocess: Any,
        *,
        unique_id: int | None = None,
        component_id: int | None = None,
        muxer_size: tuple[int, int] | None = None,
        labels: Iterable[str] | None = None,
        draw: bool = True,
        keypoints: bool = False,
        vectors: bool = False,
    ) -> None:
        if not hasattr(postprocess, "run"):
            from dsprobe.postprocess import Postprocess

            postprocess = Postprocess.load(postprocess)
        self.pp = postprocess
        self.unique_id = unique_id
        self.component_id = component_id
        self.muxer_size = muxer_size
        self.labels = list(labels) if labels is not None else list(postprocess.labels)
        self.draw = draw
        self.keypoints = keypoints
        self.vectors = vectors
        self.stats = ProbeStats()
        self.objects_added = 0
        self._vector_meta: tuple[Any, Any, Any] | None = (
            None  # (meta type, copy func, release func)
        )

    def _frame(self, pyds: Any, buf_hash: int, batch_meta: Any, fm: Any) -> None:
        size = self.muxer_size or (int(fm.source_frame_width), int(fm.source_frame_height))
        uids = None if self.unique_id is None else (self.unique_id,)
        for tm in tensor_metas(pyds, fm.frame_user_meta_list, uids):
            self.stats.tensor_metas += 1
            ctx = self.pp.context(_Frame(network_size(tm), size))
            dets = self.pp.run(read_tensor_meta(pyds, tm), ctx)
            self._add(pyds, batch_meta, fm, dets, None, int(tm.unique_id))
        for om in list(object_metas(pyds, fm)):
            for tm in tensor_metas(pyds, om.obj_user_meta_list, uids):
                self.stats.tensor_metas += 1
                ctx = self.pp.context(_Frame(network_size(tm), size), crop_rect=rect_of(om))
                dets = self.pp.run(read_tensor_meta(pyds, tm), ctx)
                self._add(pyds, batch_meta, fm, dets, om, int(tm.unique_id))

    def _add(
        self, pyds: Any, batch_meta: Any, fm: Any, dets: Detections, parent: Any, gie_id: int
    ) -> None:
        comp = self.component_id if self.component_id is not None else gie_id
        circles = []
        for i in range(len(dets)):
            x1, y1, x2, y2 = (float(v) for v in dets.boxes[i])
            c = int(dets.class_ids[i])
            om = pyds.nvds_acquire_obj_meta_from_pool(batch_meta)
            om.unique_component_id = comp
            om.class_id = c
            om.confidence = float(dets.scores[i])
            om.object_id = UNTRACKED_OBJECT_ID
            r = om.rect_params
            r.left, r.top, r.width, r.height = x1, y1, x2 - x1, y2 - y1
            bb = om.detector_bbox_info.org_bbox_coords
            bb.left, bb.top, bb.width, bb.height = x1, y1, x2 - x1, y2 - y1
            r.border_width = 2 if self.draw else 0
            r.border_color.set(0.0, 1.0, 0.0, 1.0)
            r.has_bg_color = 0
            label = self.labels[c] if 0 <= c < len(self.labels) else str(c)
            om.obj_label = label.encode("utf-8")[:LABEL_BYTES].decode("utf-8", "ignore")
            if self.draw:
                om.text_params.display_text = f"{label} {float(dets.scores[i]):.2f}"
            if self.vectors and dets.vectors is not None:
                self._attach_vector(pyds, batch_meta, om, dets.vectors[i])
            pyds.nvds_add_obj_meta_to_frame(fm, om, parent)
            self.objects_added += 1
            if self.keypoints and dets.keypoints is not None:
                circles += [(float(x), float(y)) for x, y, v in dets.keypoints[i] if v > 0.5]
        if circles:
            self._draw_circles(pyds, batch_meta, fm, circles)

    def _attach_vector(self, pyds: Any, batch_meta: Any, om: Any, vec: np.ndarray) -> None:
        if self._vector_meta is None:  # once: the meta type and the copy/release callbacks
            pyds.user_copyfunc  # noqa: B018 - attribute check: fails early on bindings without callbacks
            meta_type = pyds.nvds_get_user_meta_type(VECTOR_META_TYPE)
            if hasattr(pyds, "NvDsMetaType") and callable(pyds.NvDsMetaType):
                meta_type = pyds.NvDsMetaType(meta_type)
            self._vector_meta = (meta_type, _copy_vector(pyds), _release_vector(pyds))
        meta_type, copy, release = self._vector_meta
        um = pyds.nvds_acquire_user_meta_from_pool(batch_meta)
        um.user_meta_data = _pack_vector(pyds, vec)
        um.base_meta.meta_type = meta_type
        pyds.user_copyfunc(um, copy)
        pyds.user_releasefunc(um, release)
        pyds.nvds_add_user_meta_to_obj(om, um)

    def _draw_circles(
        self, pyds: Any, batch_meta: Any, fm: Any, points: list[tuple[float, float]]
    ) -> None:
        for start in range(0, len(points), MAX_DISPLAY_ELEMENTS):
            dm = pyds.nvds_acquire_display_meta_from_pool(batch_meta)
            chunk = points[start : start + MAX_DISPLAY_ELEMENTS]
            for k, (x, y) in enumerate(chunk):
                cp = dm.circle_params[k]
                cp.xc, cp.yc, cp.radius = int(x), int(y), 3
                cp.circle_color.set(1.0, 0.2, 0.2, 1.0)
            dm.num_circles = len(chunk)
            pyds.nvds_add_display_meta_to_frame(fm, dm)


def attach_postprocess(target: Any, postprocess: Any, **options: Any) -> ProbeHandle:
    """Run ``postprocess`` (a Postprocess or a spec path) on the tensor meta upstream of ``target``.

    ``target``: the nvinfer element (probe on its src pad; put it upstream of the tracker and of any
    SGIE that should see the objects) or a Gst.Pad. Options: ``unique_id`` (GIE whose tensors to use),
    ``component_id`` (``unique_component_id`` of the added objects; default the GIE's id, which is what
    a downstream SGIE's ``operate-on-gie-id`` names), ``muxer_size`` (found from the pipeline's
    nvstreammux when possible), ``labels``, ``draw``, ``keypoints``, ``vectors``.
    Call ``pyds.unset_callback_funcs()`` before exit when ``vectors=True`` (pyds requirement).
    """
    if options.get("muxer_size") is None:
        options["muxer_size"] = find_muxer_size(target)
    return attach(target, PostprocessProbe(postprocess, **options))
