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
import enum
import itertools
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np
from gst_double import Bin, Buffer, Element, Gst, Pad, ProbeInfo, chain  # noqa: F401 (re-exported)

# ----------------------------------------------------------------------------- fatal errors


class Fatal(BaseException):
    """The real process would die here (no ``except Exception`` in a probe can catch it)."""


class Segfault(Fatal):
    """SIGSEGV: reading device memory, past the surface list, or past a char array."""


class Abort(Fatal):
    """std::terminate (exit 134): a Python exception escaped a callback invoked from C."""


# ----------------------------------------------------------------------------- capsules and lists
_objects: dict[int, Any] = {}  # capsule address -> the struct it points at
_ids = itertools.count(1)


class Capsule:
    """Stands for a PyCapsule wrapping a C pointer (pybind11 void*); ``address`` is the pointer."""

    def __init__(self, obj: Any = None, address: int | None = None) -> None:
        self.address = address if address is not None else next(_ids) * 64
        if obj is not None:
            _objects[self.address] = obj


def _capsule_for(obj: Any) -> Capsule:
    cap = getattr(obj, "_capsule", None)
    if cap is None:
        cap = Capsule(obj)
        obj._capsule = cap
    return cap


def _cast(data: Any) -> Any:
    address = data.address if isinstance(data, Capsule) else data
    if isinstance(address, bool) or not isinstance(address, int):
        raise TypeError(f"cast() expects a capsule or an int address, got {type(data).__name__}")
    if address not in _objects:
        raise ValueError(
            f"cast(): nothing at address {address:#x} (the double's stand-in for a bad pointer)"
        )
    return _objects[address]


class GList:
    def __init__(self, data: Any, nxt: "GList | None" = None) -> None:
        self.data = data
        self.next = nxt
        self.prev = None


def _glist(items: list) -> GList | None:
    head = None
    for item in reversed(items):
        head = GList(_capsule_for(item), head)
    return head


# ----------------------------------------------------------------------------- enums
class NvDsMetaType(enum.IntEnum):
    """The C values of nvdsmeta.h's NvDsMetaType."""

    NVDS_CLASSIFIER_META = 5
    NVDS_LABEL_INFO_META = 6
    NVDS_USER_META = 7
    NVDSINFER_TENSOR_OUTPUT_META = 12
    NVDSINFER_SEGMENTATION_META = 13
    NVDS_GST_CUSTOM_META = 4096
    NVDS_START_USER_META = 8193

    @classmethod
    def _missing_(cls, value: object) -> "NvDsMetaType":  # pybind11 enums accept any int
        obj = int.__new__(cls, value)
        obj._name_, obj._value_ = f"USER_META_{value}", value
        return obj


NVDSINFER_TENSOR_OUTPUT_META = NvDsMetaType.NVDSINFER_TENSOR_OUTPUT_META
NVDS_USER_META = NvDsMetaType.NVDS_USER_META


class NvDsInferDataType(enum.IntEnum):  # pyds 1.2 binds only these four
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3


class NvBufSurfaceMemType(enum.IntEnum):
    NVBUF_MEM_DEFAULT = 0
    NVBUF_MEM_CUDA_PINNED = 1
    NVBUF_MEM_CUDA_DEVICE = 2
    NVBUF_MEM_CUDA_UNIFIED = 3
    NVBUF_MEM_SURFACE_ARRAY = 4


NVBUF_MEM_CUDA_PINNED = NvBufSurfaceMemType.NVBUF_MEM_CUDA_PINNED
NVBUF_MEM_CUDA_UNIFIED = NvBufSurfaceMemType.NVBUF_MEM_CUDA_UNIFIED

_DTYPE = {0: np.float32, 1: np.float16, 2: np.int8, 3: np.int32, 4: np.int64, 5: np.uint8}
_quarks: dict[str, int] = {}


# ----------------------------------------------------------------------------- string fields
class _CharArray:
    """``char[128]`` bound with pyds' STRING_CHAR_ARRAY: ``str.copy(field, len)``, no NUL, no bounds
    check; the getter is ``std::string(field)`` (up to the first NUL)."""

    def __init__(self) -> None:
        self.data = bytearray(128)

    def set(self, value: str) -> None:
        b = value.encode("utf-8")
        if len(b) > 128:
            raise Segfault(f"char[128] overflowed by a {len(b)}-byte string")
        self.data[: len(b)] = b

    def get(self) -> str:
        return bytes(self.data).split(b"\0", 1)[0].decode("utf-8")  # UnicodeDecodeError as pybind11


_strings: dict[int, str] = {}


def _new_string(value: str | None) -> int:
    if value is None:
        return 0
    addr = next(_ids) * 64
    _strings[addr] = str(value)
    return addr


def get_string(addr: int) -> str:
    """pyds.get_string: the C string at ``addr``."""
    if addr not in _strings:
        raise Segfault(f"get_string({addr!r}): not a live C string")
    return _strings[addr]


class _CharPtr:
    """A ``char*`` bound with STRING_FREE_EXISTING: the setter frees and callocs, the getter returns
    the address (an int)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = f"_{name}_addr"

    def __get__(self, obj: Any, owner: type) -> int:
        return getattr(obj, self.attr, 0)

    def __set__(self, obj: Any, value: str) -> None:
        _strings.pop(getattr(obj, self.attr, 0), None)
        setattr(obj, self.attr, _new_string(value))


class _CharField:
    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = f"_{name}_chars"

    def _arr(self, obj: Any) -> _CharArray:
        if self.attr not in obj.__dict__:
            obj.__dict__[self.attr] = _CharArray()
        return obj.__dict__[self.attr]

    def __get__(self, obj: Any, owner: type) -> str:
        return self._arr(obj).get()

    def __set__(self, obj: Any, value: str) -> None:
        self._arr(obj).set(value)


class _Unsigned:
    """An ``unsigned int`` struct member: pybind11 rejects negatives and floats with TypeError."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.attr = f"_{name}_u"

    def __get__(self, obj: Any, owner: type) -> int:
        return obj.__dict__.get(self.attr, 0)

    def __set__(self, obj: Any, value: Any) -> None:
        if isinstance(value, float) or not isinstance(value, int) or value < 0:
            raise TypeError(f"(): incompatible function arguments: unsigned int, got {value!r}")
        obj.__dict__[self.attr] = value


# ----------------------------------------------------------------------------- structs
class _Castable:
    @classmethod
    def cast(cls, data: Any) -> Any:
        obj = _cast(data)
        if not isinstance(obj, cls):  # stricter than pyds, which reinterprets blindly
            raise TypeError(f"{cls.__name__}.cast: capsule holds a {type(obj).__name__}")
        return obj


class NvDsInferDims:
    def __init__(self, shape: tuple[int, ...]) -> None:
        self.numDims = len(shape)
        self.numElements = int(np.prod(shape)) if shape else 1
        self.d = np.zeros(8, np.uint32)
        self.d[: len(shape)] = shape


class NvDsInferLayerInfo:
    """``infer_dims=False`` is pyds < 1.1.4, which binds only ``dims``."""

    def __init__(self, name: str, code: int, shape: tuple, binding: int, infer_dims=True) -> None:
        self.layerName = name
        self.dataType = code if code > 3 else NvDsInferDataType(code)
        if infer_dims:
            self.inferDims = NvDsInferDims(shape)
        self.dims = NvDsInferDims(shape)
        self.bindingIndex = binding
        self.isInput = 0
        self.buffer = None  # stale by design: only get_nvds_LayerInfo fills it

    def _copy(self) -> "NvDsInferLayerInfo":
        new = object.__new__(NvDsInferLayerInfo)
        new.__dict__.update(self.__dict__)
        return new


@dataclass
class NvDsInferNetworkInfo:
    width: int
    height: int
    channels: int


class NvDsInferTensorMeta(_Castable):
    def __init__(self, unique_id, layer_infos, addresses, network) -> None:
        self.unique_id = unique_id
        self.num_output_layers = len(layer_infos)
        self._infos = [i._copy() for i in layer_infos]  # g_memdup'd per meta (DS 6.2+)
        self._ptr_array = (ctypes.c_void_p * len(addresses))(*addresses)
        self.out_buf_ptrs_host = Capsule(self._ptr_array, ctypes.addressof(self._ptr_array))
        self.out_buf_ptrs_dev = Capsule(None)
        self.gpu_id = 0
        self.priv_data = Capsule(None)
        if network is not None:
            self.network_info = network

    def output_layers_info(self, j: int) -> NvDsInferLayerInfo:
        return self._infos[j]._copy()  # by value


class NvDsBaseMeta:
    def __init__(self, meta_type: int = 0) -> None:
        self.meta_type = meta_type
        self.batch_meta = None
        self.uContext = None


class NvDsUserMeta(_Castable):
    def __init__(self, meta_type: int = 0, data: Any = None) -> None:
        self.base_meta = NvDsBaseMeta(meta_type)
        self.user_meta_data = data
        self._copy = self._release = False  # C trampolines set by user_copyfunc / user_releasefunc


class _Color:
    def __init__(self) -> None:
        self.red = self.green = self.blue = self.alpha = 0.0

    def set(self, r: float, g: float, b: float, a: float) -> None:
        self.red, self.green, self.blue, self.alpha = r, g, b, a


class NvOSD_RectParams:
    border_width = _Unsigned()

    def __init__(self, left=0.0, top=0.0, width=0.0, height=0.0) -> None:
        self.left, self.top, self.width, self.height = left, top, width, height
        self.border_color = _Color()
        self.has_bg_color = 0
        self.bg_color = _Color()


class NvBbox_Coords:
    def __init__(self) -> None:
        self.left = self.top = self.width = self.height = 0.0


class NvDsComp_BboxInfo:
    def __init__(self) -> None:
        self.org_bbox_coords = NvBbox_Coords()


class NvOSD_FontParams:
    font_name = _CharPtr()
    font_size = _Unsigned()

    def __init__(self) -> None:
        self.font_color = _Color()


class NvOSD_TextParams:
    display_text = _CharPtr()
    x_offset = _Unsigned()
    y_offset = _Unsigned()

    def __init__(self) -> None:
        self.font_params = NvOSD_FontParams()
        self.set_bg_clr = 0
        self.text_bg_clr = _Color()


class NvDsLabelInfo(_Castable):
    result_label = _CharField()

    def __init__(self) -> None:
        self.num_classes = 0
        self.result_class_id = 0
        self.label_id = 0
        self.result_prob = 0.0
        self.pResult_label = None


class NvDsClassifierMeta(_Castable):
    def __init__(self) -> None:
        self.num_labels = 0
        self.unique_component_id = 0
        self._labels: list[NvDsLabelInfo] = []

    @property
    def label_info_list(self) -> GList | None:
        return _glist(self._labels)


class NvDsObjectMeta(_Castable):
    obj_label = _CharField()

    def __init__(self) -> None:
        self.parent = None
        self.unique_component_id = 0
        self.class_id = 0
        self.object_id = 0xFFFFFFFFFFFFFFFF
        self.confidence = 0.0
        self.tracker_confidence = 0.0
        self.rect_params = NvOSD_RectParams()
        self.detector_bbox_info = NvDsComp_BboxInfo()
        self.tracker_bbox_info = NvDsComp_BboxInfo()
        self.text_params = NvOSD_TextParams()
        self._user: list = []
        self._classifiers: list[NvDsClassifierMeta] = []

    @property
    def obj_user_meta_list(self) -> GList | None:
        return _glist(self._user)

    @property
    def classifier_meta_list(self) -> GList | None:
        return _glist(self._classifiers)


class NvOSD_CircleParams:
    xc = _Unsigned()
    yc = _Unsigned()
    radius = _Unsigned()

    def __init__(self) -> None:
        self.circle_color = _Color()
        self.has_bg_color = 0
        self.bg_color = _Color()


class NvDsDisplayMeta(_Castable):
    def __init__(self) -> None:
        self.num_circles = 0
        self.circle_params = [NvOSD_CircleParams() for _ in range(16)]


class NvDsFrameMeta(_Castable):
    def __init__(self, source_id, frame_num, batch_id, pts, width, height) -> None:
        self.source_id = source_id
        self.pad_index = source_id
        self.batch_id = batch_id
        self.frame_num = frame_num
        self.buf_pts = pts
        self.ntp_timestamp = 0
        self.source_frame_width = width
        self.source_frame_height = height
        self.bInferDone = 0  # nvstreammux leaves it 0; a detector's attach_metadata sets it
        self._objects: list[NvDsObjectMeta] = []
        self._user: list[NvDsUserMeta] = []
        self._display: list[NvDsDisplayMeta] = []

    @property
    def obj_meta_list(self) -> GList | None:
        return _glist(self._objects)

    @property
    def frame_user_meta_list(self) -> GList | None:
        return _glist(self._user)

    @property
    def num_obj_meta(self) -> int:
        return len(self._objects)


class NvDsBatchMeta(_Castable):
    def __init__(self, frames: list[NvDsFrameMeta]) -> None:
        self._frames = frames
        self._user: list[NvDsUserMeta] = []
        self.num_frames_in_batch = len(frames)
        self.max_frames_in_batch = len(frames)
        self.locked = 0
        self.lock_count = 0

    @property
    def frame_meta_list(self) -> GList | None:
        return _glist(self._frames)

    @property
    def batch_user_meta_list(self) -> GList | None:
        return _glist(self._user)


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
