"""A TEST DOUBLE of pyds (DeepStream's Python bindings) and of the bits of Gst the probes use.

This is a stand-in, used only by dsprobe's tests, because no machine here has DeepStream. It mirrors
the API described in docs/pyds-notes.md, including its hazards, so the adapter is
tested against them:

* lists are GList nodes with ``.data`` / ``.next``; structs are reached with ``Type.cast(data)``;
* ``NvDsInferTensorMeta.out_buf_ptrs_host`` is ONE capsule holding the address of a real C
  ``void*[]`` whose entries point at real ctypes buffers (``pyds.get_ptr`` gives the address);
* ``output_layers_info(j)`` returns layer infos SHARED by every frame's meta of one GIE, and
  ``get_nvds_LayerInfo`` writes ``.buffer`` into that shared struct, as nvinfer/pyds do;
* ``NvDsInferDims.d`` is a uint32 array of length 8; dtype codes FLOAT=0, HALF=1, INT8=2, INT32=3
  (INT64=4 / UINT8=5 have no enum members);
* tensor buffers belong to a pool: :meth:`Pipeline.push` overwrites them after the probe returns, so
  a probe that kept views instead of copies records garbage;
* ``get_nvds_buf_surface`` returns a pitched (non-contiguous) RGBA view, raises RuntimeError for
  other formats, and must be unmapped on "Jetson": unmapping scribbles over the pixels (a copy made
  after it is caught) and the double counts maps/unmaps;
* object meta comes from a pool, ``obj_label`` is limited to 128 bytes;
* ``Type.cast`` accepts a capsule or an int address; ``get_ptr`` gives the address of a capsule or
  of a struct object; ``GieOutput(network=None)`` / ``infer_dims=False`` are pyds < 1.1.1 / < 1.1.4.

The Gst part (``Gst.PadProbeReturn``, ``Pad.add_probe``, ``ProbeInfo.get_buffer``, ``Element``) is
only what the probes touch. Nothing here is DeepStream: passing these tests means the adapter handles
the API *as documented*; the real check is a run on a device (docs/jetson.md).
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
    """pyds' ``Type.cast`` overloads: a capsule (void*) or an int address."""
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
    NVDS_USER_META = 0x1000
    NVDSINFER_TENSOR_OUTPUT_META = 12
    NVDSINFER_SEGMENTATION_META = 13
    NVDS_START_USER_META = 4096

    @classmethod
    def _missing_(
        cls, value: object
    ) -> "NvDsMetaType":  # pybind11 enums accept any int (custom meta types)
        obj = int.__new__(cls, value)
        obj._name_, obj._value_ = f"USER_META_{value}", value
        return obj


NVDSINFER_TENSOR_OUTPUT_META = NvDsMetaType.NVDSINFER_TENSOR_OUTPUT_META


class NvDsInferDataType(enum.IntEnum):  # pyds 1.2 binds only these four
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3


_CTYPE = {0: np.float32, 1: np.float16, 2: np.int8, 3: np.int32, 4: np.int64, 5: np.uint8}


# ----------------------------------------------------------------------------- structs
class _Castable:
    @classmethod
    def cast(cls, data: Any) -> Any:
        obj = _cast(data)
        if not isinstance(obj, cls):
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

    def __init__(
        self,
        name: str,
        dtype_code: int,
        shape: tuple[int, ...],
        binding: int,
        infer_dims: bool = True,
    ) -> None:
        self.layerName = name
        self.dataType = dtype_code if dtype_code > 3 else NvDsInferDataType(dtype_code)
        if infer_dims:
            self.inferDims = NvDsInferDims(shape)
        self.dims = NvDsInferDims(shape)
        self.bindingIndex = binding
        self.isInput = 0
        self.buffer = None  # stale by design: only get_nvds_LayerInfo fills it


@dataclass
class NvDsInferNetworkInfo:
    width: int
    height: int
    channels: int


class NvDsInferTensorMeta(_Castable):
    def __init__(
        self,
        unique_id: int,
        layer_infos: list[NvDsInferLayerInfo],
        buffers: list[Any],
        network: NvDsInferNetworkInfo | None,
    ) -> None:
        self.unique_id = unique_id
        self.num_output_layers = len(layer_infos)
        self._infos = layer_infos  # shared across frames of one GIE
        self._ptr_array = (ctypes.c_void_p * len(buffers))(*[ctypes.addressof(b) for b in buffers])
        self.out_buf_ptrs_host = Capsule(self._ptr_array, ctypes.addressof(self._ptr_array))
        self.out_buf_ptrs_dev = Capsule(None)
        self.gpu_id = 0
        self.priv_data = Capsule(None)
        if network is not None:
            self.network_info = network

    def output_layers_info(self, j: int) -> NvDsInferLayerInfo:
        return self._infos[j]


class NvDsBaseMeta:
    def __init__(self, meta_type: int) -> None:
        self.meta_type = meta_type
        self.batch_meta = None
        self.uContext = None


class NvDsUserMeta(_Castable):
    def __init__(self, meta_type: int = 0, data: Any = None) -> None:
        self.base_meta = NvDsBaseMeta(meta_type)
        self.user_meta_data = data
        self.copy_fn = None
        self.release_fn = None


class _Color:
    def __init__(self) -> None:
        self.red = self.green = self.blue = self.alpha = 0.0

    def set(self, r: float, g: float, b: float, a: float) -> None:
        self.red, self.green, self.blue, self.alpha = r, g, b, a


class NvOSD_RectParams:
    def __init__(self, left=0.0, top=0.0, width=0.0, height=0.0) -> None:
        self.left, self.top, self.width, self.height = left, top, width, height
        self.border_width = 0
        self.border_color = _Color()
        self.has_bg_color = 0
        self.bg_color = _Color()


class NvBbox_Coords:
    def __init__(self) -> None:
        self.left = self.top = self.width = self.height = 0.0


class NvDsComp_BboxInfo:
    def __init__(self) -> None:
        self.org_bbox_coords = NvBbox_Coords()


class _TextParams:
    def __init__(self) -> None:
        self.display_text = None


class NvDsObjectMeta(_Castable):
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
        self.text_params = _TextParams()
        self._label = b""
        self._user: list = []
        self.classifier_meta_list = None

    @property
    def obj_label(self) -> str:
        return self._label.decode("utf-8", "replace")

    @obj_label.setter
    def obj_label(self, value: str) -> None:
        b = value.encode("utf-8")
        if len(b) >= 128:  # the real setter would overflow char[128]
            raise AssertionError(f"obj_label of {len(b)} bytes overflows char[128]")
        self._label = b

    @property
    def obj_user_meta_list(self) -> GList | None:
        return _glist(self._user)


class _CircleParams:
    def __init__(self) -> None:
        self.xc = self.yc = self.radius = 0
        self.circle_color = _Color()


class NvDsDisplayMeta(_Castable):
    def __init__(self) -> None:
        self.num_circles = 0
        self.circle_params = [_CircleParams() for _ in range(16)]


class NvDsFrameMeta(_Castable):
    def __init__(
        self, source_id: int, frame_num: int, batch_id: int, pts: int, width: int, height: int
    ) -> None:
        self.source_id = source_id
        self.pad_index = source_id
        self.batch_id = batch_id
        self.frame_num = frame_num
        self.buf_pts = pts
        self.ntp_timestamp = 0
        self.source_frame_width = width
        self.source_frame_height = height
        self.bInferDone = 1
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
        self.num_frames_in_batch = len(frames)
        self.max_frames_in_batch = len(frames)
        self.locked = 0
        self.lock_count = 0

    @property
    def frame_meta_list(self) -> GList | None:
        return _glist(self._frames)


# ----------------------------------------------------------------------------- functions
_batch_metas: dict[int, NvDsBatchMeta] = {}


@dataclass
class _Surface:
    store: np.ndarray  # the pitched bytes
    view: np.ndarray  # (H, W, 4) strided view of store, as pyds returns
    pixels: np.ndarray  # what a (re)map shows
    unmapped: bool = False


_surfaces: dict[tuple[int, int], _Surface] = {}
surface_format = "RGBA"
maps = {"map": 0, "unmap": 0}
_gbuffers: dict[int, Any] = {}


def gst_buffer_get_nvds_batch_meta(buf_hash: int) -> NvDsBatchMeta | None:
    if not isinstance(buf_hash, int):
        raise TypeError("gst_buffer_get_nvds_batch_meta expects hash(gst_buffer), an int")
    return _batch_metas.get(buf_hash)


def get_nvds_LayerInfo(tensor_meta: NvDsInferTensorMeta, j: int) -> NvDsInferLayerInfo:
    info = tensor_meta._infos[j]
    info.buffer = Capsule(None, tensor_meta._ptr_array[j])  # mutates the SHARED struct
    return info


def get_nvds_buf_surface(buf_hash: int, batch_id: int) -> np.ndarray:
    """The pitched view of frame ``batch_id``; like the Jetson mapping, the pixels are there only
    between this call and ``unmap_nvds_buf_surface`` (which scribbles over them)."""
    if surface_format not in ("RGBA", "RGB"):
        raise RuntimeError(
            f"get_nvds_buf_surface: Currently we only support RGBA/RGB color Format, got {surface_format}"
        )
    maps["map"] += 1
    surf = _surfaces[(buf_hash, batch_id)]
    if surf.unmapped:  # mapped again: the pixels are back
        surf.store[:] = surf.pixels
        surf.unmapped = False
    return surf.view


def unmap_nvds_buf_surface(buf_hash: int, batch_id: int) -> None:
    maps["unmap"] += 1
    surf = _surfaces[(buf_hash, batch_id)]
    surf.store[:] = 0xCD
    surf.unmapped = True


def nvds_acquire_meta_lock(batch_meta: NvDsBatchMeta) -> None:
    batch_meta.locked += 1
    batch_meta.lock_count += 1


def nvds_release_meta_lock(batch_meta: NvDsBatchMeta) -> None:
    batch_meta.locked -= 1


def nvds_acquire_obj_meta_from_pool(batch_meta: NvDsBatchMeta) -> NvDsObjectMeta:
    return NvDsObjectMeta()


def nvds_add_obj_meta_to_frame(
    frame_meta: NvDsFrameMeta, obj: NvDsObjectMeta, parent: NvDsObjectMeta | None
) -> None:
    obj.parent = parent
    frame_meta._objects.append(obj)


def nvds_acquire_display_meta_from_pool(batch_meta: NvDsBatchMeta) -> NvDsDisplayMeta:
    return NvDsDisplayMeta()


def nvds_add_display_meta_to_frame(frame_meta: NvDsFrameMeta, dm: NvDsDisplayMeta) -> None:
    frame_meta._display.append(dm)


def nvds_acquire_user_meta_from_pool(batch_meta: NvDsBatchMeta) -> NvDsUserMeta:
    return NvDsUserMeta()


def nvds_add_user_meta_to_obj(obj: NvDsObjectMeta, um: NvDsUserMeta) -> None:
    obj._user.append(um)


def nvds_get_user_meta_type(desc: str) -> int:
    return 4096 + (abs(hash(desc)) % 1000)


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
    """The C address behind a capsule, a real PyCapsule or a pyds struct object (as pyds' get_ptr)."""
    if isinstance(obj, Capsule):
        return obj.address
    if isinstance(obj, _Castable):
        return _capsule_for(obj).address
    return _capsule_address(obj)


def user_copyfunc(um: NvDsUserMeta, fn: Any) -> None:
    um.copy_fn = fn


def user_releasefunc(um: NvDsUserMeta, fn: Any) -> None:
    um.release_fn = fn


# ----------------------------------------------------------------------------- Gst double
class Gst:
    class PadProbeReturn(enum.IntEnum):
        OK = 1
        DROP = 0

    class PadProbeType(enum.IntFlag):
        BUFFER = 16


class Buffer:
    """A GstBuffer stand-in: ``hash(buffer)`` is its 'address'."""

    def __init__(self) -> None:
        self.address = next(_ids) * 4096

    def __hash__(self) -> int:
        return self.address


class ProbeInfo:
    def __init__(self, buf: Buffer) -> None:
        self._buf = buf

    def get_buffer(self) -> Buffer:
        return self._buf


class Pad:
    def __init__(self) -> None:
        self.probes: dict[int, Any] = {}
        self._n = itertools.count(1)

    def add_probe(self, kind: Any, callback: Any, user_data: Any) -> int:
        pid = next(self._n)
        self.probes[pid] = (callback, user_data)
        return pid

    def remove_probe(self, pid: int) -> None:
        self.probes.pop(pid)

    def push(self, buf: Buffer) -> list:
        return [cb(self, ProbeInfo(buf), ud) for cb, ud in list(self.probes.values())]


class Element:
    """A Gst.Element stand-in with one static ``src`` pad (what ``attach_*(element)`` probes)."""

    def __init__(self, name: str, pad: Pad | None = None) -> None:
        self.name = name
        self.src = pad if pad is not None else Pad()

    def get_name(self) -> str:
        return self.name

    def get_static_pad(self, name: str) -> Pad | None:
        return self.src if name == "src" else None


# ----------------------------------------------------------------------------- building batches
@dataclass
class GieOutput:
    """One GIE's output layer definitions; layer infos are shared by every meta it produces."""

    unique_id: int
    layers: dict[str, tuple[int, tuple[int, ...]]]  # name -> (dtype code, per-frame shape)
    network: NvDsInferNetworkInfo | None = None  # None: pyds < 1.1.1 (no network_info)
    infer_dims: bool = True  # False: pyds < 1.1.4 (layer infos have only ``dims``)
    infos: list[NvDsInferLayerInfo] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.infos = [
            NvDsInferLayerInfo(n, code, shape, i, self.infer_dims)
            for i, (n, (code, shape)) in enumerate(self.layers.items())
        ]


class Pipeline:
    """Builds batches with real buffers, pushes them through a Pad, then recycles the buffers."""

    def __init__(self, muxer_size: tuple[int, int] = (1280, 720), pitch_pad: int = 64) -> None:
        self.pad = Pad()
        self.muxer_size = muxer_size
        self.pitch_pad = pitch_pad
        self._live: list = []

    def tensor_meta(self, gie: GieOutput, arrays: dict[str, np.ndarray]) -> NvDsUserMeta:
        buffers = []
        for info in gie.infos:
            code = int(info.dataType)
            arr = np.ascontiguousarray(arrays[info.layerName], dtype=_CTYPE[code])
            buf = (ctypes.c_char * arr.nbytes).from_buffer_copy(arr.tobytes())
            buffers.append(buf)
        self._live.extend(buffers)
        tm = NvDsInferTensorMeta(gie.unique_id, gie.infos, buffers, gie.network)
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
        _surfaces[(hash(buf), batch_id)] = surf
        self._live += [surf.store, surf.pixels]

    def push(
        self, frames: list[NvDsFrameMeta], images: dict[int, np.ndarray] | None = None
    ) -> Buffer:
        buf = Buffer()
        _batch_metas[hash(buf)] = NvDsBatchMeta(frames)
        for bid, img in (images or {}).items():
            self.surface(buf, bid, img)
        self.pad.push(buf)
        # the buffers go back to nvinfer's pool and get overwritten
        for b in self._live:
            if isinstance(b, np.ndarray):
                b[:] = 0xAB
            else:
                ctypes.memset(ctypes.addressof(b), 0xAB, ctypes.sizeof(b))
        self._live = []
        return buf

    @staticmethod
    def frame(
        source_id: int, frame_num: int, batch_id: int, size: tuple[int, int], pts: int | None = None
    ) -> NvDsFrameMeta:
        return NvDsFrameMeta(
            source_id, frame_num, batch_id, frame_num * 33_333_333 if pts is None else pts, *size
        )

    @staticmethod
    def obj(
        rect: tuple[float, float, float, float],
        class_id: int = 0,
        conf: float = 0.9,
        object_id: int = 7,
        component: int = 1,
        label: str = "car",
    ) -> NvDsObjectMeta:
        o = NvDsObjectMeta()
        o.rect_params = NvOSD_RectParams(*rect)
        o.class_id, o.confidence, o.object_id, o.unique_component_id = (
            class_id,
            conf,
            object_id,
            component,
        )
        o.obj_label = label
        return o


@contextmanager
def installed() -> Iterator[Any]:
    """Reset the double and make dsprobe.deepstream use it (and this module's Gst) inside the block."""
    from dsprobe.deepstream import bindings

    reset()
    bindings.use_bindings(sys.modules[__name__], Gst)
    try:
        yield sys.modules[__name__]
    finally:
        bindings.use_bindings(None, None)


def reset() -> None:
    """Forget all batches/surfaces (between tests)."""
    global surface_format
    _batch_metas.clear()
    _surfaces.clear()
    surface_format = "RGBA"
    maps.update(map=0, unmap=0)
    _objects.clear()
