"""The dsprobe recording layout, version 1 (documented in docs/recording-format.md).

Every table is an HDF5 group of column datasets of equal length, resizable along axis 0 and appended
in blocks by the writer thread. Layer datasets are ``(rows, *per_frame_shape)`` with the layer's true
dtype; their HDF5 link names are the layer names percent-encoded (``/`` is legal in ONNX names), the
true name is the dataset's ``layer_name`` attribute.
"""

from __future__ import annotations

import math
from typing import Any, Mapping
from urllib.parse import quote, unquote

import numpy as np

FORMAT_NAME = "dsprobe-recording"
SCHEMA_VERSION = 1

#: /frames: one row per FrameRecord. Columns: name -> (dtype, per-row shape)
FRAME_COLUMNS: dict[str, tuple[str, tuple[int, ...]]] = {
    "source_id": ("int32", ()),
    "frame_num": ("int64", ()),
    "pts_ns": ("int64", ()),
    "ntp_timestamp": ("int64", ()),
    "unique_id": ("int32", ()),
    "batch_id": ("int32", ()),
    "pad_index": ("int32", ()),
    "network_size": ("int32", (3,)),  # width, height, channels (network pixels)
    "frame_size": ("int32", (2,)),  # width, height of the nvstreammux output (frame pixels)
    "recv_time_ns": (
        "int64",
        (),
    ),  # host wall clock (time.time_ns) when record() accepted the frame
    "layer_row": ("int64", ()),  # row in /layers/<unique_id>/*, -1: no frame-level layers
    "image_row": ("int64", ()),  # row in /images, -1: no image
    "object_start": ("int64", ()),  # first row in /objects
    "object_count": ("int32", ()),
    "detection_start": ("int64", ()),  # first row in /detections
    "detection_count": ("int32", ()),
}

#: /objects (SGIE objects with their tensors) and /detections (NvDsObjectMeta already on the frame)
OBJECT_COLUMNS: dict[str, tuple[str, tuple[int, ...]]] = {
    "frame_row": ("int64", ()),
    "rect": ("float32", (4,)),  # left, top, width, height in frame pixels
    "class_id": ("int32", ()),
    "confidence": ("float32", ()),
    "object_id": ("uint64", ()),
    "unique_component_id": ("int32", ()),
    "parent_index": ("int32", ()),  # index within the same frame's list, -1 none
    "parent_object_id": ("uint64", ()),
    "label": ("S128", ()),  # UTF-8; NvDsObjectMeta.obj_label is char[128]
    "layer_row": ("int64", ()),  # row in /object_layers/<unique_id>/*, -1 none
    "image_row": ("int64", ()),  # crop image row in /images, -1 none
}

#: /classifications: one row per NvDsLabelInfo on an object of /objects (table 0) or /detections
#: (table 1), in frame order; absent in files written before dsprobe recorded classifier meta.
CLASSIFICATION_COLUMNS: dict[str, tuple[str, tuple[int, ...]]] = {
    "frame_row": ("int64", ()),
    "table": ("uint8", ()),  # 0: /objects, 1: /detections
    "object_index": ("int32", ()),  # index within that frame's objects / detections
    "unique_component_id": ("int32", ()),  # the classifier's gie-unique-id
    "attribute": ("int32", ()),  # NvDsLabelInfo.label_id (output layer index)
    "class_id": ("int32", ()),  # result_class_id
    "confidence": ("float32", ()),  # result_prob
    "label": ("S128", ()),  # result_label, UTF-8
}
CLASSIFICATION_TABLES = ("objects", "detections")

#: /images: one row per stored picture; its bytes are /images/data[offset:offset + nbytes] (1-D uint8)
IMAGE_COLUMNS: dict[str, tuple[str, tuple[int, ...]]] = {
    "frame_row": ("int64", ()),
    "offset": ("int64", ()),
    "nbytes": ("int64", ()),
    "rect": ("float32", (4,)),  # the frame rectangle the picture shows (frame pixels)
    "shape": ("int32", (3,)),  # height, width, channels of the decoded picture
    "encoding": ("uint8", ()),  # index into IMAGE_ENCODINGS
}
IMAGE_ENCODINGS = ("raw", "jpeg", "png")

#: Layer dtypes nvinfer produces (NvDsInferDataType FLOAT, HALF, INT8, INT32, INT64, UINT8); other numeric
#: numpy dtypes are stored as they are too.
SUPPORTED_DTYPES = ("float32", "float16", "int8", "int32", "int64", "uint8")

#: Target bytes per chunk for layer datasets; a frame bigger than this gets a chunk of its own.
CHUNK_BYTES = 1 << 20

#: Chunk length of the 1-D image byte store /images/data.
IMAGE_CHUNK_BYTES = 1 << 20

#: Compression choices: name -> (description, needs hdf5plugin)
COMPRESSIONS = {
    None: "none (default): fastest, any HDF5 reader",
    "lzf": "byte-shuffle + LZF: fast, h5py-only filter",
    "gzip": "byte-shuffle + deflate level 1: any HDF5 reader, slow to write",
    "blosc-lz4": "Blosc LZ4 + bit-shuffle: fast and small, readers need `import hdf5plugin`",
    "blosc-zstd": "Blosc Zstd + bit-shuffle: smaller, readers need `import hdf5plugin`",
}


def hdf5_name(layer_name: str) -> str:
    """HDF5 link name for a layer: percent-encoded so ``/`` and ``.`` names are safe; reversible."""
    q = quote(layer_name, safe="")
    if q in (".", ".."):
        return q.replace(".", "%2E")
    return q or "%"  # "%" alone never comes out of quote(): it stands for the empty name


def layer_name_of(h5name: str) -> str:
    """Inverse of :func:`hdf5_name` (used only when a dataset lacks its ``layer_name`` attribute)."""
    return "" if h5name == "%" else unquote(h5name)


def compression_options(compression: str | None, itemsize: int = 4) -> dict[str, Any]:
    """``create_dataset`` keyword arguments for a compression name (see :data:`COMPRESSIONS`)."""
    if compression in (None, "none"):
        return {}
    if compression == "lzf":
        return {"compression": "lzf", "shuffle": itemsize > 1}
    if compression == "gzip" or (isinstance(compression, str) and compression.startswith("gzip-")):
        level = 1 if compression == "gzip" else int(compression.split("-", 1)[1])
        return {"compression": "gzip", "compression_opts": level, "shuffle": itemsize > 1}
    if compression in ("blosc-lz4", "blosc-zstd"):
        try:
            import hdf5plugin
        except ImportError as exc:
            raise ValueError(
                f"compression={compression!r} needs hdf5plugin: pip install hdf5plugin"
            ) from exc
        cname = compression.split("-", 1)[1]
        return dict(
            hdf5plugin.Blosc(
                cname=cname, clevel=5 if cname == "lz4" else 3, shuffle=hdf5plugin.Blosc.BITSHUFFLE
            )
        )
    raise ValueError(
        f"compression must be one of {[c for c in COMPRESSIONS]} or 'gzip-1'..'gzip-9', "
        f"got {compression!r}"
    )


def layer_chunks(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...] | None:
    """Chunk shape for a ``(rows, *shape)`` layer dataset: whole frames, about :data:`CHUNK_BYTES` per chunk
    (at most 256 frames, so a recording of a few frames of a tiny layer stays small)."""
    row_bytes = math.prod(shape) * np.dtype(dtype).itemsize
    if row_bytes == 0:
        return None
    return (int(min(256, max(1, CHUNK_BYTES // row_bytes))), *shape)


def table_chunks(dtype: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Chunk shape for a table column: about 16 KiB (16..1024 rows), so a short segment stays small."""
    row_bytes = math.prod(shape) * np.dtype(dtype).itemsize
    return (int(min(1024, max(16, (16 << 10) // row_bytes))), *shape)


def jsonable(value: Any) -> Any:
    """JSON-ready copy of ``value``: numpy scalars/arrays to Python, tuples to lists, other objects to str."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
