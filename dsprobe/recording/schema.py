"""The dsprobe recording layout (documented in docs/recording-format.md). Version 1.

Every table is a group of 1-D/2-D datasets of equal length, resizable along axis 0 and written in
blocks by the writer thread; only complete blocks followed by a flush are ever on disk.
"""

from __future__ import annotations

import numpy as np

FORMAT_NAME = "dsprobe-recording"
SCHEMA_VERSION = 1

UNTRACKED = np.uint64(0xFFFFFFFFFFFFFFFF)

#: /frames: one row per FrameRecord. Columns: name -> (dtype, per-row shape)
FRAME_COLUMNS: dict[str, tuple[str, tuple[int, ...]]] = {
    "source_id": ("int32", ()),
    "frame_num": ("int64", ()),
    "pts_ns": ("int64", ()),
    "ntp_timestamp": ("int64", ()),
    "unique_id": ("int32", ()),
    "batch_id": ("int32", ()),
    "pad_index": ("int32", ()),
    "network_size": ("int32", (3,)),   # width, height, channels
    "frame_size": ("int32", (2,)),     # width, height (nvstreammux output)
    "layer_row": ("int64", ()),        # row in /layers/<unique_id>/<name>, -1: no frame-level layers
    "image_row": ("int64", ()),        # row in /images, -1: no image
    "object_start": ("int64", ()),     # first row in /objects
    "object_count": ("int32", ()),
    "detection_start": ("int64", ()),  # first row in /detections
    "detection_count": ("int32", ()),
}

#: /objects (SGIE objects with their tensors) and /detections (NvDsObjectMeta already on the frame)
OBJECT_COLUMNS: dict[str, tuple[str, tuple[int, ...]]] = {
    "frame_row": ("int64", ()),
    "rect": ("float32", (4,)),          # left, top, width, height in frame pixels
    "class_id": ("int32", ()),
    "confidence": ("float32", ()),
    "object_id": ("uint64", ()),
    "unique_component_id": ("int32", ()),
    "parent_index": ("int32", ()),      # index within the same frame's list, -1 none
    "parent_object_id": ("uint64", ()),
    "label": ("S128", ()),              # NvDsObjectMeta.obj_label is char[128]
    "layer_row": ("int64", ()),         # row in /object_layers/<unique_id>/<name>, -1 none
    "image_row": ("int64", ()),         # crop image row in /images, -1 none
}

#: /images: one row per stored picture
IMAGE_COLUMNS: dict[str, tuple[str, tuple[int, ...]]] = {
    "rect": ("float32", (4,)),          # the frame rectangle the picture shows (frame pixels)
    "shape": ("int32", (3,)),           # height, width, channels of the decoded picture
    "encoding": ("uint8", ()),          # 0 raw RGB, 1 JPEG, 2 PNG
}
IMAGE_ENCODINGS = ("raw", "jpeg", "png")

SUPPORTED_DTYPES = ("float32", "float16", "int8", "int32", "int64", "uint8")
