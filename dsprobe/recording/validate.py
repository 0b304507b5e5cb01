"""Checks that keep a bad frame from ever reaching HDF5 half-written (run on the writer thread before
anything of the frame is buffered): every field's type and range against what the file stores
(docs/recording-format.md). :class:`InvalidFrame` names the frame and the field at fault; the frame is
dropped and counted, the recorder carries on. Layers in a non-native byte order are converted."""

from __future__ import annotations

import numbers
from dataclasses import replace
from typing import Any, Mapping

import numpy as np

from dsprobe.recording.schema import IMAGE_ENCODINGS
from dsprobe.records import Classification, FrameRecord, ImageRecord, ObjectRecord

INT32 = (-(1 << 31), (1 << 31) - 1)
UINT31 = (0, (1 << 31) - 1)
INT64 = (-(1 << 63), (1 << 63) - 1)
UINT64 = (0, (1 << 64) - 1)
#: GStreamer times are guint64 (GST_CLOCK_TIME_NONE = 2**64 - 1); they are stored as int64, -1 above
TIME_NS = (-(1 << 63), (1 << 64) - 1)
#: nvinfer's NVDSINFER_MAX_DIMS: a layer has at most this many axes
MAX_LAYER_RANK = 8
#: one layer of one frame or object may hold at most this many bytes
MAX_LAYER_BYTES = 1 << 30
MAX_LAYER_NAME_BYTES = 1024


class InvalidFrame(ValueError):
    """A frame that does not fit what the recording stores (the message says which field)."""


def check_frame(frame: Any) -> FrameRecord:
    """``frame`` checked field by field; returns it with its layers in native byte order.

    Raises InvalidFrame naming the field (``source 0, frame 12: objects[3].label: ...``)."""
    if (
        type(frame) is FrameRecord
        and _plain_frame_ok(frame)
        and frame.image is None
        and type(frame.objects) is list
        and not frame.objects
        and type(frame.detections) is list
        and _plain_layers_ok(frame.layers)
        and all(map(_plain_object, frame.detections))
    ):
        return frame  # the common case of a small frame, checked at C speed
    if not isinstance(frame, FrameRecord):
        raise InvalidFrame(f"not a FrameRecord: {type(frame).__name__}")
    where = _where(frame)
    if not _plain_frame_ok(frame):
        for name, lo_hi in _FRAME_INTS:
            _int(where, name, getattr(frame, name), lo_hi)
        _ints(where, "network_size", frame.network_size, 3)
        _ints(where, "frame_size", frame.frame_size, 2)
    layers = check_layers(where, "layers", frame.layers)
    objects = _objects(where, "objects", frame.objects, with_layers=True)
    detections = _objects(where, "detections", frame.detections, with_layers=False)
    _image(where, "image", frame.image)
    if layers is frame.layers and objects is frame.objects and detections is frame.detections:
        return frame
    return replace(frame, layers=layers, objects=objects, detections=detections)


def plain_frame(frame: Any) -> bool:
    """True for a FrameRecord whose own fields pass :func:`check_frame` at C speed (plain ints in
    range, sizes as tuples of plain ints) and that has no picture, objects or detections (empty
    lists); its layers are not looked at (the writer's fast path checks them against the layers it
    already has, see ``FrameRows.add_plain``)."""
    return (
        type(frame) is FrameRecord
        and frame.image is None
        and type(frame.objects) is list
        and not frame.objects
        and type(frame.detections) is list
        and not frame.detections
        and _plain_frame_ok(frame)
    )


_FRAME_INTS = (
    ("source_id", UINT31),
    ("frame_num", INT64),
    ("pts_ns", TIME_NS),
    ("ntp_timestamp", TIME_NS),
    ("unique_id", INT32),
    ("batch_id", INT32),
    ("pad_index", INT32),
)


def _plain_frame_ok(f: FrameRecord) -> bool:
    """The common case of the frame's own fields, checked at C speed: plain ints in range, sizes as
    tuples of plain ints (anything else goes through the field-by-field checks that name the field)."""
    n, s = f.network_size, f.frame_size
    return (
        type(f.source_id) is int
        and 0 <= f.source_id <= UINT31[1]
        and type(f.frame_num) is int
        and INT64[0] <= f.frame_num <= INT64[1]
        and type(f.pts_ns) is int
        and TIME_NS[0] <= f.pts_ns <= TIME_NS[1]
        and type(f.ntp_timestamp) is int
        and TIME_NS[0] <= f.ntp_timestamp <= TIME_NS[1]
        and type(f.unique_id) is int
        and INT32[0] <= f.unique_id <= INT32[1]
        and type(f.batch_id) is int
        and INT32[0] <= f.batch_id <= INT32[1]
        and type(f.pad_index) is int
        and INT32[0] <= f.pad_index <= INT32[1]
        and type(n) is tuple
        and len(n) == 3
        and type(n[0]) is int
        and type(n[1]) is int
        and type(n[2]) is int
        and 0 <= n[0] <= UINT31[1]
        and 0 <= n[1] <= UINT31[1]
        and 0 <= n[2] <= UINT31[1]
        and type(s) is tuple
        and len(s) == 2
        and type(s[0]) is int
        and type(s[1]) is int
        and 0 <= s[0] <= UINT31[1]
        and 0 <= s[1] <= UINT31[1]
    )


def _plain_layers_ok(layers: Any) -> bool:
    """The common case of a layer dict: short text names, native numeric arrays within bounds."""
    if type(layers) is not dict:
        return False
    for name, arr in layers.items():
        if type(name) is not str or len(name) > _PLAIN_NAME_CHARS or "\0" in name:
            return False
        if type(arr) is not np.ndarray:
            return False
        dt = arr.dtype
        if (
            dt.kind not in "fiub"
            or dt.itemsize > 8
            or not dt.isnative
            or arr.ndim > MAX_LAYER_RANK
            or arr.nbytes > MAX_LAYER_BYTES
        ):
            return False
    return True


#: names this short fit MAX_LAYER_NAME_BYTES whatever their characters (4 UTF-8 bytes at most each)
_PLAIN_NAME_CHARS = MAX_LAYER_NAME_BYTES // 4


def _plain_object(o: Any) -> bool:
    return type(o) is ObjectRecord and _plain_ok(o)


def _where(frame: FrameRecord) -> str:
    return f"source {frame.source_id!r}, frame {frame.frame_num!r}"


def _int(where: str, name: str, value: Any, lo_hi: tuple[int, int]) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InvalidFrame(f"{where}: {name}={value!r} is not an integer")
    lo, hi = lo_hi
    if not lo <= int(value) <= hi:
        raise InvalidFrame(f"{where}: {name}={value!r} is outside {lo}..{hi}")


def _ints(where: str, name: str, value: Any, n: int) -> None:
    if not isinstance(value, (tuple, list, np.ndarray)) or len(value) != n:
        raise InvalidFrame(f"{where}: {name} needs {n} integers, got {value!r}")
    for v in value:
        _int(where, name, v, UINT31)


def _real(where: str, name: str, value: Any) -> None:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise InvalidFrame(f"{where}: {name}={value!r} is not a number")


def _rect(where: str, name: str, rect: Any) -> None:
    if not isinstance(rect, (tuple, list, np.ndarray)) or len(rect) != 4:
        raise InvalidFrame(f"{where}: {name} needs (left, top, width, height), got {rect!r}")
    for v in rect:
        _real(where, name, v)


_PLAIN = (int, float)


def _plain_ok(o: ObjectRecord) -> bool:
    """The common case, checked at C speed: plain ints/floats in range, a text label, no layers."""
    r = o.rect
    return (
        type(r) is tuple
        and len(r) == 4
        and type(r[0]) in _PLAIN
        and type(r[1]) in _PLAIN
        and type(r[2]) in _PLAIN
        and type(r[3]) in _PLAIN
        and type(o.confidence) in _PLAIN
        and type(o.class_id) is int
        and INT32[0] <= o.class_id <= INT32[1]
        and type(o.object_id) is int
        and 0 <= o.object_id <= UINT64[1]
        and type(o.unique_component_id) is int
        and INT32[0] <= o.unique_component_id <= INT32[1]
        and type(o.parent_index) is int
        and -1 <= o.parent_index <= INT32[1]
        and type(o.parent_object_id) is int
        and 0 <= o.parent_object_id <= UINT64[1]
        and type(o.label) is str
        and "\0" not in o.label
        and not o.classifications
        and not o.layers
        and o.image is None
    )


def _objects(where: str, field: str, objs: Any, with_layers: bool) -> list[ObjectRecord]:
    if not isinstance(objs, (list, tuple)):
        raise InvalidFrame(f"{where}: {field} must be a list of ObjectRecord, got {objs!r}")
    out = objs
    for i, o in enumerate(objs):
        if type(o) is ObjectRecord and _plain_ok(o):
            continue
        at = f"{field}[{i}]"
        if not isinstance(o, ObjectRecord):
            raise InvalidFrame(f"{where}: {at} is not an ObjectRecord: {type(o).__name__}")
        _rect(where, f"{at}.rect", o.rect)
        _real(where, f"{at}.confidence", o.confidence)
        _int(where, f"{at}.class_id", o.class_id, INT32)
        _int(where, f"{at}.object_id", o.object_id, UINT64)
        _int(where, f"{at}.unique_component_id", o.unique_component_id, INT32)
        _int(where, f"{at}.parent_index", o.parent_index, (-1, INT32[1]))
        _int(where, f"{at}.parent_object_id", o.parent_object_id, UINT64)
        if not isinstance(o.label, str) or "\0" in o.label:
            raise InvalidFrame(f"{where}: {at}.label={o.label!r} is not text without NUL")
        _classifications(where, at, o.classifications)
        layers = check_layers(where, f"{at}.layers", o.layers) if with_layers else o.layers
        _image(where, f"{at}.image", o.image)
        if layers is not o.layers:
            if out is objs:
                out = list(objs)
            out[i] = replace(o, layers=layers)
    return out


def _classifications(where: str, at: str, items: Any) -> None:
    if not isinstance(items, (list, tuple)):
        raise InvalidFrame(f"{where}: {at}.classifications must be a list, got {items!r}")
    for j, c in enumerate(items):
        cat = f"{at}.classifications[{j}]"
        if not isinstance(c, Classification):
            raise InvalidFrame(f"{where}: {cat} is not a Classification: {type(c).__name__}")
        for name in ("unique_component_id", "attribute", "class_id"):
            _int(where, f"{cat}.{name}", getattr(c, name), INT32)
        _real(where, f"{cat}.confidence", c.confidence)
        if not isinstance(c.label, str) or "\0" in c.label:
            raise InvalidFrame(f"{where}: {cat}.label={c.label!r} is not text without NUL")


def check_layers(where: str, field: str, layers: Any) -> Mapping[str, np.ndarray]:
    """Layer names (text, no NUL) and arrays (numeric numpy, rank <= 8, <= 1 GiB); arrays in a
    non-native byte order come back converted (the mapping is copied only then)."""
    if not isinstance(layers, Mapping):
        raise InvalidFrame(f"{where}: {field} must be a dict of name -> array, got {layers!r}")
    out = layers
    for name, arr in layers.items():
        if (
            not isinstance(name, str)
            or "\0" in name
            or len(name.encode("utf-8", "surrogatepass")) > MAX_LAYER_NAME_BYTES
        ):
            raise InvalidFrame(f"{where}: {field}: layer name {name!r} is not text without NUL")
        if (
            not isinstance(arr, np.ndarray)
            or arr.dtype.kind not in "fiub"
            or arr.dtype.itemsize > 8
        ):
            raise InvalidFrame(
                f"{where}: {field}[{name!r}] is not a numeric numpy array "
                f"({type(arr).__name__} {getattr(arr, 'dtype', '')})"
            )
        if arr.ndim > MAX_LAYER_RANK or arr.nbytes > MAX_LAYER_BYTES:
            raise InvalidFrame(
                f"{where}: {field}[{name!r}] {arr.dtype}{list(arr.shape)} has more than "
                f"{MAX_LAYER_RANK} axes or {MAX_LAYER_BYTES} bytes"
            )
        if not arr.dtype.isnative:
            if out is layers:
                out = dict(layers)
            out[name] = arr.astype(arr.dtype.newbyteorder("="))
    return out


def _image(where: str, field: str, image: Any) -> None:
    if image is None:
        return
    if not isinstance(image, ImageRecord):
        raise InvalidFrame(f"{where}: {field} is not an ImageRecord: {type(image).__name__}")
    _rect(where, f"{field}.rect", image.rect)
    if image.encoding not in IMAGE_ENCODINGS:
        raise InvalidFrame(
            f"{where}: {field}.encoding {image.encoding!r} is not one of {IMAGE_ENCODINGS}"
        )
    data = image.data
    if image.encoding == "raw":
        ok = isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim in (2, 3)
        if not ok or (data.ndim == 3 and data.shape[2] not in (1, 3, 4)):
            raise InvalidFrame(
                f"{where}: {field}: a raw image must be HxW, HxWx1, HxWx3 or HxWx4 uint8, got "
                f"{type(data).__name__} {getattr(data, 'dtype', '')}{list(getattr(data, 'shape', []))}"
            )
    elif not isinstance(data, (bytes, bytearray, memoryview)) and not (
        isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 1
    ):
        raise InvalidFrame(f"{where}: {field}: {image.encoding} data must be bytes")
