"""The data half of the pyds TEST DOUBLE (tests/pyds_double.py): capsules, GLists, enums with the C
values, string fields as pyds binds them (char arrays without NUL, char* getters returning
addresses), unsigned struct members, and the meta structs. See tests/pyds_double.py."""

from __future__ import annotations

import ctypes
import enum
import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np

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
