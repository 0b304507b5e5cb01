"""A TEST DOUBLE of pyds (DeepStream's Python bindings), used only by dsprobe's tests.

No machine here has DeepStream, so this stand-in mirrors the public bindings (deepstream_python_apps
``bindings/src``) including where they are unforgiving; docs/deepstream-audit.md lists each behaviour
with its upstream source, and tests/test_deepstream_double.py checks the double against that list:

* lists are GList nodes (``.data`` / ``.next``); structs come from ``Type.cast(capsule or int)``;
* ``NvDsInferTensorMeta.out_buf_ptrs_host`` is ONE capsule holding the address of a ``void*[]``;
  the j-th meta of one GIE in a batch points at slice j of one batch buffer per layer (nvinfer's
  ``hostBuffers[i] + numElements * elemSize * j``); buffers are overwritten after the probe (pool);
  ``GieOutput(host_copy=False)`` (``disable-output-host-copy=1``) leaves the host buffers stale;
* ``output_layers_info(j)`` returns a copy (pybind11 returns the struct by value);
* dtype codes FLOAT=0, HALF=1, INT8=2, INT32=3 are enum members, 4 / 5 are plain ints;
* char arrays (``obj_label``, ``result_label``) are copied WITHOUT a NUL and without a bounds check
  (``STRING_CHAR_ARRAY``): a short label over a longer one reads back with the old tail; writing 128+
  bytes overflows (modelled as :class:`Segfault`);
* ``text_params.display_text`` / ``font_params.font_name`` getters return an int address, read with
  :func:`get_string`;
* metas acquired from the pools are reused with stale fields after the batch is released;
* ``user_copyfunc`` / ``user_releasefunc`` fill ONE process-wide slot (the last registration wins) and
  an exception inside a callback aborts the process (modelled as :class:`Abort`, a BaseException);
* ``NvDsMetaType`` has the C values (USER 7, TENSOR_OUTPUT 12, START_USER 8193) and
  ``nvds_get_user_meta_type`` returns ``g_quark + 8193``;
* ``get_nvds_buf_surface``: RuntimeError unless surface 0 is RGBA/RGB; a device-memory surface is
  handed out anyway and reading it is a :class:`Segfault`; ``batch_id`` is not checked against the
  surface count (reading past it is a :class:`Segfault`); on Jetson ("surface_array" memory) the
  surface is mapped and ``unmap_nvds_buf_surface`` is required (it scribbles over the pixels);
  elsewhere unmap is a guarded no-op;
* ``NvDsFrameMeta.bInferDone`` is 0 unless a detector set it.

The Gst part lives in tests/gst_double.py. Passing tests against this double means the adapter
handles the API as published; the real check is a run on a device (docs/jetson.md).
"""

from __future__ import annotations

import ctypes
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
from gst_double import Bin, Buffer, Element, Gst, Pad, ProbeInfo, chain  # noqa: F401 (re-exported)
from pyds_double_meta import (  # noqa: F401 (the double's module namespace is pyds')
    _DTYPE,
    NVBUF_MEM_CUDA_PINNED,
    NVBUF_MEM_CUDA_UNIFIED,
    NVDS_USER_META,
    NVDSINFER_TENSOR_OUTPUT_META,
    Abort,
    Capsule,
    Fatal,
    GList,
    NvBbox_Coords,
    NvBufSurfaceMemType,
    NvDsBaseMeta,
    NvDsBatchMeta,
    NvDsClassifierMeta,
    NvDsComp_BboxInfo,
    NvDsDisplayMeta,
    NvDsFrameMeta,
    NvDsInferDataType,
    NvDsInferDims,
    NvDsInferLayerInfo,
    NvDsInferNetworkInfo,
    NvDsInferTensorMeta,
    NvDsLabelInfo,
    NvDsMetaType,
    NvDsObjectMeta,
    NvDsUserMeta,
    NvOSD_CircleParams,
    NvOSD_FontParams,
    NvOSD_RectParams,
    NvOSD_TextParams,
    Segfault,
    _capsule_for,
    _cast,
    _Castable,
    _CharArray,
    _CharField,
    _CharPtr,
    _Color,
    _glist,
    _ids,
    _new_string,
    _objects,
    _quarks,
    _strings,
    _Unsigned,
    get_string,
)

# ----------------------------------------------------------------------------- pools
_free: dict[type, list] = {}  # released metas, handed out again with their stale fields
_acquired: list = []  # acquired since the last release (this batch)


def _acquire(cls: type) -> Any:
    free = _free.setdefault(cls, [])
    obj = free.pop() if free else cls()
    _acquired.append(obj)
    return obj


def release_batch() -> None:
    """The batch's meta is released downstream: user metas with a release callback get it (through
    the ONE global slot); every pool meta goes back to its pool, fields untouched."""
    for obj in list(_acquired):
        if isinstance(obj, NvDsUserMeta) and obj._release:
            _invoke("release", obj)
        _free.setdefault(type(obj), []).append(obj)
    _acquired.clear()


def copy_user_meta(um: NvDsUserMeta) -> Any:
    """A downstream copy of ``um`` (e.g. nvds_copy_batch_metadata): the global copy slot is called."""
    return _invoke("copy", um) if um._copy else None


def nvds_acquire_obj_meta_from_pool(batch_meta: NvDsBatchMeta) -> NvDsObjectMeta:
    return _acquire(NvDsObjectMeta)


def nvds_acquire_display_meta_from_pool(batch_meta: NvDsBatchMeta) -> NvDsDisplayMeta:
    return _acquire(NvDsDisplayMeta)


def nvds_acquire_user_meta_from_pool(batch_meta: NvDsBatchMeta) -> NvDsUserMeta:
    return _acquire(NvDsUserMeta)


def nvds_acquire_classifier_meta_from_pool(batch_meta: NvDsBatchMeta) -> NvDsClassifierMeta:
    cm = _acquire(NvDsClassifierMeta)
    cm._labels = []  # the list head is reset by the pool; the struct fields are not
    cm.num_labels = 0
    return cm


def nvds_acquire_label_info_meta_from_pool(batch_meta: NvDsBatchMeta) -> NvDsLabelInfo:
    return _acquire(NvDsLabelInfo)


def nvds_add_obj_meta_to_frame(frame_meta, obj, parent) -> None:
    obj.parent = parent
    frame_meta._objects.append(obj)


def nvds_add_display_meta_to_frame(frame_meta, dm) -> None:
    frame_meta._display.append(dm)


def nvds_add_user_meta_to_obj(obj, um) -> None:
    obj._user.append(um)


def nvds_add_user_meta_to_frame(frame_meta, um) -> None:
    frame_meta._user.append(um)


def nvds_add_user_meta_to_batch(batch_meta, um) -> None:
    batch_meta._user.append(um)


def nvds_add_label_info_meta_to_classifier(cm, li) -> None:
    cm._labels.append(li)
    cm.num_labels += 1


def nvds_add_classifier_meta_to_object(om, cm) -> None:
    om._classifiers.append(cm)


def nvds_get_user_meta_type(desc: str) -> int:
    """``g_quark_from_string(desc) + NVDS_START_USER_META`` (an int since pyds 1.2)."""
    quark = _quarks.setdefault(desc, 100 + len(_quarks))
    return quark + int(NvDsMetaType.NVDS_START_USER_META)


# ----------------------------------------------------------------------------- user-meta callbacks
_slot: dict[str, Any] = {"copy": None, "release": None}
_gbuffers: dict[int, Any] = {}


def user_copyfunc(um: NvDsUserMeta, fn: Any) -> None:
    _slot["copy"] = fn  # ONE process-wide slot: the last registration wins
    um._copy = True


def user_releasefunc(um: NvDsUserMeta, fn: Any) -> None:
    _slot["release"] = fn
    um._release = True


def unset_callback_funcs() -> None:
    _slot.update(copy=None, release=None)


def _invoke(kind: str, um: NvDsUserMeta) -> Any:
    fn = _slot[kind]
    if fn is None:
        return None
    try:
        return fn(_capsule_for(um), None)
    except Exception as exc:  # pybind11::error_already_set escapes a C callback: terminate
        raise Abort(
            f"terminate called after throwing error_already_set in {kind} func: {exc!r}"
        ) from exc


def alloc_buffer(size: int) -> int:
    buf = ctypes.create_string_buffer(size)
    addr = ctypes.addressof(buf)
    _gbuffers[addr] = buf
    return addr


def free_gbuffer(capsule: Any) -> None:
    _gbuffers.pop(_capsule_address(capsule), None)


def _capsule_address(capsule: Any) -> int:
    if isinstance(capsule, Capsule):
        return capsule.address
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = (ctypes.py_object, ctypes.c_char_p)
    return get(capsule, None)


def get_ptr(obj: Any) -> int:
    """The C address behind a capsule, a real PyCapsule or a pyds struct object."""
    if isinstance(obj, Capsule):
        return obj.address
    if isinstance(obj, _Castable):
        return _capsule_for(obj).address
    if obj is None:
        raise TypeError("get_ptr(): incompatible function arguments (None)")
    return _capsule_address(obj)


# ----------------------------------------------------------------------------- batch meta, surfaces
_batch_metas: dict[int, NvDsBatchMeta] = {}


class _DeviceView(np.ndarray):
    """A numpy view over CUDA device memory: its shape is fine, touching its bytes is a SIGSEGV."""

    def _die(self, *a: Any, **k: Any) -> Any:
        raise Segfault("CPU read of CUDA device memory (nvbuf-memory-type is not unified/pinned)")

    __getitem__ = __setitem__ = view = copy = tobytes = __array__ = _die
    __array_function__ = __array_ufunc__ = _die


@dataclass
class _Surface:
    store: np.ndarray  # the pitched bytes
    view: np.ndarray  # (H, W, 4) strided view of store, as pyds returns
    pixels: np.ndarray  # what a (re)map shows
    mapped: bool = False


_surfaces: dict[tuple[int, int], _Surface] = {}
surface_format = "RGBA"
surface_memory = "unified"  # "unified" | "pinned" | "device" | "surface_array" (Jetson)
maps = {"map": 0, "unmap": 0}


def gst_buffer_get_nvds_batch_meta(buf_hash: int) -> NvDsBatchMeta | None:
    if not isinstance(buf_hash, int):
        raise TypeError("gst_buffer_get_nvds_batch_meta expects hash(gst_buffer), an int")
    return _batch_metas.get(buf_hash)


def get_nvds_LayerInfo(tensor_meta: NvDsInferTensorMeta, j: int) -> NvDsInferLayerInfo:
    info = tensor_meta._infos[j]
    info.buffer = Capsule(None, tensor_meta._ptr_array[j])
    return info


def get_nvds_buf_surface(buf_hash: int, batch_id: int) -> np.ndarray:
    """The pitched view of surface ``batch_id`` (no bounds check). Jetson: maps the surface (the
    pixels are there until ``unmap_nvds_buf_surface``); dGPU: a view of ``dataPtr`` as is."""
    if surface_format not in ("RGBA", "RGB"):
        raise RuntimeError(
            "get_nvds_buf_surface: Currently we only support RGBA/RGB color Format, "
            f"got {surface_format}"
        )
    surf = _surfaces.get((buf_hash, batch_id))
    if surf is None:
        raise Segfault(f"surfaceList[{batch_id}] read past the surfaces of the buffer")
    maps["map"] += 1
    if surface_memory == "device":
        return surf.view.view(_DeviceView)
    if surface_memory == "surface_array" and not surf.mapped:
        surf.store[:] = surf.pixels
        surf.mapped = True
    return surf.view


def unmap_nvds_buf_surface(buf_hash: int, batch_id: int) -> None:
    """NvBufSurfaceUnMap only if the surface is mapped (a no-op on dGPU)."""
    maps["unmap"] += 1
    surf = _surfaces.get((buf_hash, batch_id))
    if surf is not None and surf.mapped:
        surf.store[:] = 0xCD
        surf.mapped = False


def mapped_surfaces() -> int:
    """Surfaces mapped and never unmapped (a leak on Jetson)."""
    return sum(s.mapped for s in _surfaces.values())


def nvds_acquire_meta_lock(batch_meta: NvDsBatchMeta) -> None:
    batch_meta.locked += 1
    batch_meta.lock_count += 1


def nvds_release_meta_lock(batch_meta: NvDsBatchMeta) -> None:
    batch_meta.locked -= 1


# ----------------------------------------------------------------------------- building batches
@dataclass
class GieOutput:
    """One GIE's output layers. ``host_copy=False`` is ``disable-output-host-copy=1``: the host
    buffers exist but nvinfer never copies into them. ``element_sizes`` overrides the byte size of
    a dtype code on this 'device' (e.g. ``{4: 1}`` where code 4 is a 1-byte type)."""

    unique_id: int
    layers: dict[str, tuple[int, tuple[int, ...]]]  # name -> (dtype code, per-frame shape)
    network: NvDsInferNetworkInfo | None = None  # None: pyds < 1.1.1 (no network_info)
    infer_dims: bool = True  # False: pyds < 1.1.4 (layer infos have only ``dims``)
    host_copy: bool = True
    batch_size: int = 16
    element_sizes: dict[int, int] = field(default_factory=dict)
    infos: list[NvDsInferLayerInfo] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.infos = [
            NvDsInferLayerInfo(n, code, shape, i, self.infer_dims)
            for i, (n, (code, shape)) in enumerate(self.layers.items())
        ]

    def nbytes(self, info: NvDsInferLayerInfo) -> int:
        code = int(info.dataType)
        size = self.element_sizes.get(code, np.dtype(_DTYPE[code]).itemsize)
        return (
            info.inferDims.numElements * size if self.infer_dims else info.dims.numElements * size
        )


_MEMORY = {0: "device", 1: "pinned", 2: "device", 3: "unified"}


class Pipeline:
    """Builds batches with real buffers, pushes them through a Pad, then releases the batch: tensor
    buffers and surfaces are overwritten (pool reuse) and pool metas go back to their pools.

    With ``graph=True`` the pad is the src pad of a capsfilter in a Bin
    ``nvstreammux -> nvinfer -> nvvideoconvert -> capsfilter`` (``new_mux``: an nvstreammux without
    width/height; ``memory_type``: the nvbuf-memory-type of mux and converter, which also decides
    whether surfaces are device memory; ``tiler``: an nvmultistreamtiler before the converter;
    ``jetson``: surface-array memory that must be unmapped). ``graph=False``: a bare pad."""

    def __init__(
        self,
        muxer_size: tuple[int, int] = (1280, 720),
        pitch_pad: int = 64,
        *,
        graph: bool = True,
        new_mux: bool = False,
        memory_type: int = 3,
        tiler: bool = False,
        jetson: bool = False,
        gie_properties: dict | None = None,
        gie_factory: str = "nvinfer",
    ) -> None:
        global surface_memory
        self.muxer_size = muxer_size
        self.pitch_pad = pitch_pad
        self.bin = Bin("pipeline")
        self.pad = Pad()
        if graph:
            mux_props = {} if new_mux else {"width": muxer_size[0], "height": muxer_size[1]}
            mem = {} if jetson else {"nvbuf-memory-type": memory_type}
            els = [
                Element("mux", factory="nvstreammux", properties={**mux_props, **mem}),
                Element("pgie", factory=gie_factory, properties=dict(gie_properties or {})),
            ]
            if tiler:
                els.append(Element("tiler", factory="nvmultistreamtiler", properties=dict(mem)))
            els += [
                Element("conv", factory="nvvideoconvert", properties=dict(mem)),
                Element("rgba", factory="capsfilter"),
            ]
            chain(self.bin, *els)
            self.pad = els[-1].src
        surface_memory = "surface_array" if jetson else _MEMORY.get(memory_type, "device")
        self._live: list = []
        self._slots: dict[tuple[int, str], list] = {}  # (gie, layer) -> [buffer, next index]

    def _slot(self, gie: GieOutput, info: NvDsInferLayerInfo) -> int:
        nbytes = gie.nbytes(info)
        key = (id(gie), info.layerName)
        slot = self._slots.get(key)
        if slot is None or slot[1] >= gie.batch_size:  # a new inference batch
            buf = (ctypes.c_char * (nbytes * gie.batch_size))()
            slot = self._slots[key] = [buf, 0]
            self._live.append(buf)
        addr = ctypes.addressof(slot[0]) + nbytes * slot[1]
        slot[1] += 1
        return addr

    def tensor_meta(self, gie: GieOutput, arrays: dict[str, np.ndarray]) -> NvDsUserMeta:
        addresses = []
        for info in gie.infos:
            addr = self._slot(gie, info)
            if gie.host_copy:
                arr = np.ascontiguousarray(arrays[info.layerName], dtype=_DTYPE[int(info.dataType)])
                ctypes.memmove(addr, arr.ctypes.data, min(arr.nbytes, gie.nbytes(info)))
            addresses.append(addr)
        tm = NvDsInferTensorMeta(gie.unique_id, gie.infos, addresses, gie.network)
        return NvDsUserMeta(NvDsMetaType.NVDSINFER_TENSOR_OUTPUT_META, _capsule_for(tm))

    def surface(self, buf: Buffer, batch_id: int, rgb: np.ndarray) -> None:
        """A pitched RGBA surface view (pitch > width*4) holding ``rgb``."""
        h, w = rgb.shape[:2]
        pitch = w * 4 + self.pitch_pad
        store = np.zeros(h * pitch, np.uint8)
        view = np.lib.stride_tricks.as_strided(store, shape=(h, w, 4), strides=(pitch, 4, 1))
        view[:, :, :3] = rgb
        view[:, :, 3] = 255
        surf = _Surface(store, view, store.copy())
        if surface_memory == "surface_array":
            store[:] = 0xCD  # not mapped yet
        _surfaces[(hash(buf), batch_id)] = surf
        self._live += [surf.store, surf.pixels]

    def push(
        self, frames: list[NvDsFrameMeta], images: dict | None = None, batch_user: list = ()
    ) -> Buffer:
        """One batch through the pad; ``batch_user``: metas for ``batch_user_meta_list``."""
        buf = Buffer()
        _batch_metas[hash(buf)] = bm = NvDsBatchMeta(frames)
        bm._user.extend(batch_user)
        for bid, img in (images or {}).items():
            self.surface(buf, bid, img)
        self.pad.push(buf)
        for b in self._live:  # the buffers go back to nvinfer's pool and get overwritten
            if isinstance(b, np.ndarray):
                b[:] = 0xAB
            else:
                ctypes.memset(ctypes.addressof(b), 0xAB, ctypes.sizeof(b))
        self._live = []
        self._slots.clear()
        release_batch()
        return buf

    @staticmethod
    def frame(source_id, frame_num, batch_id, size, pts=None) -> NvDsFrameMeta:
        pts = frame_num * 33_333_333 if pts is None else pts
        return NvDsFrameMeta(source_id, frame_num, batch_id, pts, *size)

    @staticmethod
    def obj(rect, class_id=0, conf=0.9, object_id=7, component=1, label="car") -> NvDsObjectMeta:
        """An object as nvinfer attaches it (label copied with g_strlcpy, so NUL-terminated)."""
        o = NvDsObjectMeta()
        o.rect_params = NvOSD_RectParams(*rect)
        o.class_id, o.confidence, o.object_id = class_id, conf, object_id
        o.unique_component_id = component
        o.obj_label = label + "\0"
        return o


@contextmanager
def installed() -> Iterator[Any]:
    """Reset the double and make dsprobe.deepstream use it (and the Gst double) inside the block."""
    from dsprobe.deepstream import bindings

    reset()
    bindings.use_bindings(sys.modules[__name__], Gst)
    try:
        yield sys.modules[__name__]
    finally:
        bindings.use_bindings(None, None)


def reset() -> None:
    """Forget all batches, surfaces, pools and callbacks (between tests)."""
    global surface_format, surface_memory
    _batch_metas.clear()
    _surfaces.clear()
    surface_format, surface_memory = "RGBA", "unified"
    maps.update(map=0, unmap=0)
    _objects.clear()
    _free.clear()
    _acquired.clear()
    _gbuffers.clear()
    _strings.clear()
    _quarks.clear()
    unset_callback_funcs()
