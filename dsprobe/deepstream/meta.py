"""Walking DeepStream metadata and copying tensor output out of it (docs/pyds-notes.md).

Everything returned is an owned copy: nvinfer's output buffers go back to its pool once the
buffer's meta is released, so nothing here keeps a view past the probe.
"""

from __future__ import annotations

import ctypes
from typing import Any, Callable, Collection, Iterator

import numpy as np

from dsprobe.deepstream.surface import Alloc
from dsprobe.records import Classification

#: NvDsInferDataType integer -> numpy dtype. 0-3 are pyds' enum members; INT64=4 (DeepStream 7.1
#: nvdsinfer.h) and UINT8=5 (9.1) are not bound by pyds 1.2, so they are mapped on the integer value
#: and checked at run time against the pointer spacing (dsprobe.deepstream.tensors).
DATA_TYPES = {
    0: np.dtype(np.float32),
    1: np.dtype(np.float16),
    2: np.dtype(np.int8),
    3: np.dtype(np.int32),
    4: np.dtype(np.int64),
    5: np.dtype(np.uint8),
}


class MetaError(ValueError):
    """Tensor meta that cannot be read (unknown data type, null buffer); names the layer."""


def iter_list(glist: Any) -> Iterator[Any]:
    """The ``.data`` of each node of a pyds GList; advances before yielding so callers may ``continue``."""
    node = glist
    while node is not None:
        data = node.data
        node = node.next
        yield data


def frame_metas(pyds: Any, batch_meta: Any) -> Iterator[Any]:
    """NvDsFrameMeta of every frame in the batch (``batch_meta.frame_meta_list``)."""
    for data in iter_list(batch_meta.frame_meta_list):
        yield pyds.NvDsFrameMeta.cast(data)


def object_metas(pyds: Any, frame_meta: Any) -> Iterator[Any]:
    """NvDsObjectMeta on a frame (``frame_meta.obj_meta_list``), in list order."""
    for data in iter_list(frame_meta.obj_meta_list):
        yield pyds.NvDsObjectMeta.cast(data)


def tensor_metas(
    pyds: Any, user_meta_list: Any, unique_ids: Collection[int] | None = None
) -> Iterator[Any]:
    """NvDsInferTensorMeta entries of a frame_user_meta_list (PGIE) or obj_user_meta_list (SGIE),
    only those of the GIEs in ``unique_ids`` (gie-unique-id) when given."""
    tensor_type = int(pyds.NvDsMetaType.NVDSINFER_TENSOR_OUTPUT_META)
    for data in iter_list(user_meta_list):
        um = pyds.NvDsUserMeta.cast(data)
        if int(um.base_meta.meta_type) == tensor_type:
            tm = pyds.NvDsInferTensorMeta.cast(um.user_meta_data)
            if unique_ids is None or int(tm.unique_id) in unique_ids:
                yield tm


def parent_indices(pyds: Any, objects: list[Any]) -> list[int]:
    """For each object of ``objects`` (one frame's NvDsObjectMeta, in list order) the index of its
    ``parent`` in that list, -1 for none or a parent not on the list. Matched by C address."""
    parents = [om.parent for om in objects]
    if all(p is None for p in parents):
        return [-1] * len(objects)
    index = {pyds.get_ptr(om): i for i, om in enumerate(objects)}
    return [-1 if p is None else index.get(pyds.get_ptr(p), -1) for p in parents]


def layer_dims(info: Any) -> tuple[int, ...]:
    """Per-frame dims of an NvDsInferLayerInfo (``inferDims``, or ``dims`` before pyds 1.1.4)."""
    dims = info.inferDims if hasattr(info, "inferDims") else info.dims
    return tuple(int(v) for v in np.asarray(dims.d)[: int(dims.numDims)])


def read_tensor_meta(
    pyds: Any,
    tensor_meta: Any,
    names: Collection[str] | None = None,
    check: Callable[[int, str, int], bool] | None = None,
    alloc: Alloc | None = None,
) -> dict[str, np.ndarray]:
    """Copies of every output layer (name -> array with its true dtype and per-frame shape).

    Reads the host pointer array ``out_buf_ptrs_host`` (one capsule holding a ``void*[]``) directly,
    not ``get_nvds_LayerInfo``, which writes into nvinfer's layer-info array (shared by all frames
    before DeepStream 6.2). ``check(unique_id, layer, dtype code)`` may veto a layer before its bytes
    are touched (returns False: the layer is left out). ``alloc(shape, dtype)`` (a recorder's
    ``frame_memory``) gives where to copy each layer (None: a fresh array).
    """
    n = int(tensor_meta.num_output_layers)
    ptrs = (ctypes.c_void_p * n).from_address(pyds.get_ptr(tensor_meta.out_buf_ptrs_host))
    out: dict[str, np.ndarray] = {}
    for i in range(n):
        info = tensor_meta.output_layers_info(i)
        name = str(info.layerName)
        if names is not None and name not in names:
            continue
        code = int(info.dataType)
        dtype = DATA_TYPES.get(code)
        if dtype is None:
            raise MetaError(f"layer {name!r}: unknown NvDsInferDataType {code}")
        if check is not None and not check(int(tensor_meta.unique_id), name, code):
            continue
        shape = layer_dims(info)
        addr = ptrs[i]
        if not addr:
            raise MetaError(f"layer {name!r}: host buffer pointer is NULL")
        count = int(np.prod(shape)) if shape else 1
        raw = (ctypes.c_char * (count * dtype.itemsize)).from_address(addr)
        src = np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)
        dst = alloc(src.shape, dtype) if alloc is not None else None
        if dst is None:
            out[name] = src.copy()
        else:
            np.copyto(dst, src)
            out[name] = dst
    return out


def network_size(tensor_meta: Any) -> tuple[int, int, int]:
    """(width, height, channels) from ``network_info`` (pyds >= 1.1.1), else zeros."""
    ni = getattr(tensor_meta, "network_info", None)
    if ni is None:
        return (0, 0, 0)
    return (int(ni.width), int(ni.height), int(ni.channels))


def rect_of(obj_meta: Any) -> tuple[float, float, float, float]:
    """``rect_params`` as (left, top, width, height) in frame (nvstreammux output) pixels."""
    r = obj_meta.rect_params
    return (float(r.left), float(r.top), float(r.width), float(r.height))


def classifications(pyds: Any, obj_meta: Any) -> list[Classification]:
    """The NvDsClassifierMeta / NvDsLabelInfo on an object (``obj_meta.classifier_meta_list``), one
    :class:`Classification` per label info, in list order (what nvinfer's SGIE classifiers attach)."""
    out = []
    for cdata in iter_list(obj_meta.classifier_meta_list):
        cm = pyds.NvDsClassifierMeta.cast(cdata)
        comp = int(cm.unique_component_id)
        for ldata in iter_list(cm.label_info_list):
            li = pyds.NvDsLabelInfo.cast(ldata)
            out.append(
                Classification(
                    unique_component_id=comp,
                    attribute=int(li.label_id),
                    class_id=int(li.result_class_id),
                    confidence=float(li.result_prob),
                    label=str(li.result_label or ""),
                )
            )
    return out
