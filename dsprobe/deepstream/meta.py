"""Walking DeepStream metadata and copying tensor output out of it (docs/pyds-notes.md §1, §2).

Everything returned is an owned copy: nvinfer's output buffers go back to its pool once the
buffer's meta is released, so nothing here keeps a view past the probe.
"""

from __future__ import annotations

import ctypes
from typing import Any, Collection, Iterator

import numpy as np

#: NvDsInferDataType integer -> numpy dtype (INT64=4 and UINT8=5 exist only in newer C headers;
#: pyds 1.2 has no enum members for them, so map on the integer value)
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
    pyds: Any, tensor_meta: Any, names: set[str] | None = None
) -> dict[str, np.ndarray]:
    """Copies of every output layer (name -> array with its true dtype and per-frame shape).

    Reads the host pointer array ``out_buf_ptrs_host`` (one capsule holding a ``void*[]``) directly,
    not ``get_nvds_LayerInfo``, which writes into nvinfer's layer-info array shared by all frames.
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
        shape = layer_dims(info)
        addr = ptrs[i]
        if not addr:
            raise MetaError(f"layer {name!r}: host buffer is NULL (disable-output-host-copy set?)")
        count = int(np.prod(shape)) if shape else 1
        raw = (ctypes.c_char * (count * dtype.itemsize)).from_address(addr)
        out[name] = np.frombuffer(raw, dtype=dtype, count=count).reshape(shape).copy()
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
