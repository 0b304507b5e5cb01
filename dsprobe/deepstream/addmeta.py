"""Adding DeepStream metadata from Python the way nvinfer and NVIDIA's Python samples do.

Every function takes ``pyds`` (the bindings module) and metas from the pools, and writes every field
a reused pool element could still hold from its last use (pool elements are not cleared):

* :func:`add_object`: an NvDsObjectMeta as nvinfer's ``attach_metadata_detector``
  (``gstnvinfer_meta_utils.cpp``) and ``deepstream_ssd_parser.py`` fill it: rect, detector bbox,
  class, confidence, untracked id, NUL-terminated ``obj_label``, and OSD text with offsets, font and
  background.
* :func:`add_classifier_meta`: an NvDsClassifierMeta with one NvDsLabelInfo per attribute on an
  existing object, as nvinfer's ``attach_metadata_classifier`` does for an SGIE classifier.
* :func:`draw_circles`: display-meta circles, clamped to the frame (the fields are unsigned).
* :class:`VectorUserMeta`: a float vector as object user meta (``{int32 dim; float32 v[dim]}``).

``STRING_CHAR_ARRAY`` fields (``obj_label``, ``result_label``) are ``char[128]`` copied by pyds
without a terminator or a bounds check (``bind_string_property_definitions.h``), so labels are cut
to 127 UTF-8 bytes (never inside a character) and a NUL is appended.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from dsprobe.detections import classifier_label
from dsprobe.records import UNTRACKED_OBJECT_ID

log = logging.getLogger("dsprobe.deepstream")

LABEL_BYTES = 127  # char[128] less the NUL
MAX_DISPLAY_ELEMENTS = 16  # MAX_ELEMENTS_IN_DISPLAY_META (nvdsmeta.h)
VECTOR_META_TYPE = "DSPROBE.VECTOR.USER_META"


def c_label(label: str) -> str:
    """``label`` cut to at most 127 UTF-8 bytes on a character boundary, plus the NUL that pyds'
    char-array setter does not write (so a shorter label never shows a reused element's tail)."""
    return label.encode("utf-8")[:LABEL_BYTES].decode("utf-8", "ignore") + "\0"


@dataclass(frozen=True)
class ObjectStyle:
    """How added objects look in nvdsosd (defaults as nvinfer / deepstream_ssd_parser.py draw them).

    ``draw=False``: no border and no text (the objects are still there for trackers and SGIEs).
    Colours are (r, g, b, a) in [0, 1]; ``font_size`` in points; offsets in frame pixels."""

    draw: bool = True
    border_width: int = 2
    border_color: tuple[float, float, float, float] = (0.0, 1.0, 0.0, 1.0)
    font_name: str = "Serif"
    font_size: int = 10
    font_color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    text_bg_color: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 1.0)


def add_object(
    pyds: Any,
    batch_meta: Any,
    frame_meta: Any,
    rect: tuple[float, float, float, float],
    class_id: int,
    confidence: float,
    label: str,
    *,
    component_id: int,
    parent: Any = None,
    style: ObjectStyle = ObjectStyle(),
) -> Any:
    """Acquire an NvDsObjectMeta, fill it and add it to ``frame_meta`` (under ``parent`` if given).

    ``rect``: (left, top, width, height) in frame (nvstreammux output) pixels. Returns the object
    (already added) so callers can attach user meta to it."""
    left, top, width, height = (float(v) for v in rect)
    om = pyds.nvds_acquire_obj_meta_from_pool(batch_meta)
    om.unique_component_id = int(component_id)
    om.class_id = int(class_id)
    om.confidence = float(confidence)
    om.object_id = UNTRACKED_OBJECT_ID
    r = om.rect_params
    r.left, r.top, r.width, r.height = left, top, width, height
    bb = om.detector_bbox_info.org_bbox_coords
    bb.left, bb.top, bb.width, bb.height = left, top, width, height
    r.border_width = int(style.border_width) if style.draw else 0
    r.border_color.set(*style.border_color)
    r.has_bg_color = 0
    om.obj_label = c_label(label)
    _text(om.text_params, f"{label} {confidence:.2f}" if style.draw else "", left, top, style)
    pyds.nvds_add_obj_meta_to_frame(frame_meta, om, parent)
    return om


def _text(tp: Any, text: str, left: float, top: float, style: ObjectStyle) -> None:
    """OSD text above the box's top-left corner (nvinfer: ``y_offset = top - 10``, clamped at 0)."""
    tp.display_text = text  # pyds frees the old string and copies this one
    tp.x_offset = max(0, int(left))
    tp.y_offset = max(0, int(top) - 10)
    fp = tp.font_params
    fp.font_name = style.font_name
    fp.font_size = int(style.font_size) if text else 0
    fp.font_color.set(*style.font_color)
    tp.set_bg_clr = 1 if text else 0
    tp.text_bg_clr.set(*style.text_bg_color)


@dataclass(frozen=True)
class ClassifierResult:
    """One attribute of a classifier's output for one object (nvinfer's ``NvDsInferAttribute``).

    ``attribute``: the output layer's index (``NvDsLabelInfo.label_id``); ``class_id``: the best class
    (``result_class_id``); ``confidence``: its probability (``result_prob``); ``label``: its name
    (``result_label``, "" when unknown)."""

    attribute: int
    class_id: int
    confidence: float
    label: str = ""


def classifier_results(dets: Any, labels: Sequence[str] = ()) -> list[ClassifierResult]:
    """The rows of a classifier postprocess's Detections (decode ``classifier``: one row per attribute
    that passed, ``vectors[:, 0]`` = attribute index; without vectors the row index) as results.

    ``labels`` are classifier label-file lines, one per attribute, classes separated by ``;`` (the
    nvinfer format: ``labels[attribute].split(";")[class_id]``)."""
    out = []
    for i in range(len(dets)):
        attr = int(dets.vectors[i, 0]) if dets.vectors is not None and dets.vectors.size else i
        cid = int(dets.class_ids[i])
        out.append(
            ClassifierResult(attr, cid, float(dets.scores[i]), classifier_label(labels, attr, cid))
        )
    return out


def add_classifier_meta(
    pyds: Any,
    batch_meta: Any,
    obj_meta: Any,
    results: Sequence[ClassifierResult],
    *,
    component_id: int,
) -> Any:
    """Attach ``results`` to the existing object ``obj_meta`` as ONE NvDsClassifierMeta (its
    ``unique_component_id`` = ``component_id``, the classifier's gie-unique-id) holding one
    NvDsLabelInfo per result, as nvinfer does for an SGIE classifier. Nothing is attached for an
    empty list (nvinfer attaches no classifier meta when no attribute passed). Returns the meta or
    None."""
    if not results:
        return None
    cm = pyds.nvds_acquire_classifier_meta_from_pool(batch_meta)
    cm.unique_component_id = int(component_id)
    for res in results:
        li = pyds.nvds_acquire_label_info_meta_from_pool(batch_meta)
        li.label_id = int(res.attribute)
        li.result_class_id = int(res.class_id)
        li.result_prob = float(res.confidence)
        li.num_classes = 0
        li.result_label = c_label(res.label)
        pyds.nvds_add_label_info_meta_to_classifier(cm, li)
    pyds.nvds_add_classifier_meta_to_object(obj_meta, cm)
    return cm


def draw_circles(
    pyds: Any,
    batch_meta: Any,
    frame_meta: Any,
    points: Sequence[tuple[float, float]],
    frame_size: tuple[int, int],
    radius: int = 3,
) -> None:
    """Circles at ``points`` (frame pixels), 16 per display meta. ``xc``/``yc`` are unsigned in C
    (``nvll_osd_struct.h``), so points are clamped into ``[0, w-1] x [0, h-1]`` first."""
    w, h = max(1, int(frame_size[0])), max(1, int(frame_size[1]))
    for start in range(0, len(points), MAX_DISPLAY_ELEMENTS):
        dm = pyds.nvds_acquire_display_meta_from_pool(batch_meta)
        chunk = points[start : start + MAX_DISPLAY_ELEMENTS]
        for k, (x, y) in enumerate(chunk):
            cp = dm.circle_params[k]
            cp.xc = min(max(int(x), 0), w - 1)
            cp.yc = min(max(int(y), 0), h - 1)
            cp.radius = int(radius)
            cp.circle_color.set(1.0, 0.2, 0.2, 1.0)
            cp.has_bg_color = 0
        dm.num_circles = len(chunk)
        pyds.nvds_add_display_meta_to_frame(frame_meta, dm)


# --------------------------------------------------------------------------- vectors as user meta
def _pack_vector(pyds: Any, vec: np.ndarray) -> Any:
    """A g_malloc'd ``{int32 dim; float32 v[dim]}`` block wrapped in a capsule for user_meta_data."""
    v = np.ascontiguousarray(vec, np.float32).reshape(-1)
    payload = np.concatenate([np.array([v.size], np.int32).view(np.float32), v]).tobytes()
    addr = pyds.alloc_buffer(len(payload))
    ctypes.memmove(addr, payload, len(payload))
    new_capsule = ctypes.pythonapi.PyCapsule_New
    new_capsule.restype = ctypes.py_object
    new_capsule.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)
    return new_capsule(addr, None, None)


def read_vector_user_meta(pyds: Any, user_meta: Any) -> np.ndarray:
    """Downstream: the float32 vector dsprobe attached as user meta (``{int32 dim; float32 v[dim]}``).

    Find it on ``obj_meta.obj_user_meta_list`` with ``int(um.base_meta.meta_type) ==
    pyds.nvds_get_user_meta_type("DSPROBE.VECTOR.USER_META")``."""
    addr = pyds.get_ptr(user_meta.user_meta_data)
    dim = ctypes.c_int32.from_address(addr).value
    return np.array((ctypes.c_float * dim).from_address(addr + 4), dtype=np.float32)


class VectorUserMeta:
    """Attaches vectors as object user meta with Python copy/release callbacks.

    pyds keeps ONE copy and ONE release callback for the whole process (``utils.hpp``
    ``function_storage``; the last registration wins) and an exception escaping one aborts the app.
    So the callbacks here never raise (errors go to ``on_error(kind, exc)``, default: counted in
    ``errors`` and logged once) and act only
    on metas of dsprobe's own meta type: if other code in the process registers its own callbacks
    afterwards, dsprobe's vectors leak (their release is not called) instead of crashing. Call
    ``pyds.unset_callback_funcs()`` before exit (a pyds requirement).
    """

    def __init__(
        self, pyds: Any, on_error: Callable[[str, BaseException], None] | None = None
    ) -> None:
        self.pyds = pyds
        self.on_error = on_error
        self.meta_type = int(pyds.nvds_get_user_meta_type(VECTOR_META_TYPE))
        self.errors = 0
        enum = getattr(pyds, "NvDsMetaType", None)
        # assigning a plain int to base_meta.meta_type raises TypeError in pyds: wrap it
        self._typed = enum(self.meta_type) if callable(enum) else self.meta_type

    def attach(self, batch_meta: Any, obj_meta: Any, vec: np.ndarray) -> None:
        pyds = self.pyds
        um = pyds.nvds_acquire_user_meta_from_pool(batch_meta)
        um.user_meta_data = _pack_vector(pyds, vec)
        um.base_meta.meta_type = self._typed
        pyds.user_copyfunc(um, self.copy)
        pyds.user_releasefunc(um, self.release)
        pyds.nvds_add_user_meta_to_obj(obj_meta, um)

    def _ours(self, data: Any) -> Any:
        um = self.pyds.NvDsUserMeta.cast(data)
        if int(um.base_meta.meta_type) != self.meta_type or um.user_meta_data is None:
            return None
        return um

    def copy(self, data: Any, user_data: Any) -> Any:
        """pyds copy callback: a new block for a copied meta (None for foreign metas or on error)."""
        try:
            um = self._ours(data)
            return (
                None
                if um is None
                else _pack_vector(self.pyds, read_vector_user_meta(self.pyds, um))
            )
        except Exception as exc:  # never let it escape into C (std::terminate)
            self._error("copy", exc)
            return None

    def release(self, data: Any, user_data: Any) -> None:
        """pyds release callback: frees dsprobe's block (foreign metas are left alone)."""
        try:
            um = self._ours(data)
            if um is not None:
                self.pyds.free_gbuffer(um.user_meta_data)
        except Exception as exc:
            self._error("release", exc)

    def _error(self, kind: str, exc: BaseException) -> None:
        self.errors += 1
        if self.on_error is not None:
            self.on_error(f"vector-{kind}-callback", exc)
        elif self.errors == 1:
            log.error("dsprobe vector user meta %s callback failed: %s (counted)", kind, exc)
