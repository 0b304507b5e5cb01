"""One recorded frame, read lazily: :class:`FrameView` (``Recording[row]``).

Tensors, the picture and the object tables of a frame are read from its segment on first access,
only for that row.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from dsprobe.detections import Detections
from dsprobe.recording import images as imgs
from dsprobe.recording.schema import IMAGE_ENCODINGS, OBJECT_COLUMNS
from dsprobe.recording.segment_reader import SegmentReader
from dsprobe.records import FrameRecord, ImageRecord, ObjectRecord, Rect


class FrameView:
    """Lazy view of one recorded frame: row ``local_row`` of the file ``segment``, which is row ``row``
    of ``Recording.frames``; tensors, pictures and objects are read on first access."""

    def __init__(self, segment: SegmentReader, local_row: int, row: int) -> None:
        self.row = row
        self._seg = segment
        self._local_row = local_row
        self._r = {c: v[local_row] for c, v in segment.frames.items()}
        r = self._r
        self.source_id = int(r["source_id"])
        self.frame_num = int(r["frame_num"])
        self.pts_ns = int(r["pts_ns"])
        self.ntp_timestamp = int(r["ntp_timestamp"])
        self.unique_id = int(r["unique_id"])
        self.batch_id = int(r["batch_id"])
        self.pad_index = int(r["pad_index"])
        self.network_size = tuple(int(v) for v in r["network_size"])
        self.frame_size = tuple(int(v) for v in r["frame_size"])

    def _layers(self, group: str, row: int) -> dict[str, np.ndarray]:
        if row < 0:
            return {}
        return {
            name: self._seg.read(f"layer {name!r}", ds, row)
            for (g, uid, name), ds in self._seg.layer_ds.items()
            if g == group and uid == self.unique_id
        }

    @cached_property
    def tensors(self) -> dict[str, np.ndarray]:
        """Frame-level layers (PGIE) as arrays with their recorded dtype and per-frame shape."""
        return self._layers("layers", int(self._r["layer_row"]))

    @property
    def layers(self) -> dict[str, np.ndarray]:
        """Alias of :attr:`tensors` (FrameRecord naming)."""
        return self.tensors

    def _stored_image(self, image_row: int) -> ImageRecord | None:
        """The image as stored (encoded bytes or raw array) with its rect."""
        if image_row < 0:
            return None
        seg, f = self._seg, self._seg.f
        enc = IMAGE_ENCODINGS[int(seg.read("/images", f["images/encoding"], image_row))]
        shape = tuple(int(v) for v in seg.read("/images", f["images/shape"], image_row))
        rect = tuple(float(v) for v in seg.read("/images", f["images/rect"], image_row))
        offset = int(seg.read("/images", f["images/offset"], image_row))
        nbytes = int(seg.read("/images", f["images/nbytes"], image_row))
        payload = seg.read("/images/data", f["images/data"], slice(offset, offset + nbytes))
        if enc == "raw":
            return ImageRecord(np.asarray(payload, np.uint8).reshape(shape), rect, "raw")
        return ImageRecord(bytes(payload), rect, enc)

    @cached_property
    def image_record(self) -> ImageRecord | None:
        """The frame's image as stored (JPEG/PNG bytes or a raw array) with the rect it covers."""
        return self._stored_image(int(self._r["image_row"]))

    @cached_property
    def image(self) -> np.ndarray | None:
        """The recorded picture as HxWx3 uint8 RGB (decoded), or None."""
        ir = self.image_record
        return None if ir is None else imgs.decode(ir.data, ir.encoding)

    @property
    def image_rect(self) -> Rect | None:
        """The frame rectangle (left, top, width, height; frame pixels) the image shows."""
        ir = self.image_record
        return None if ir is None else ir.rect

    def _objects(self, table: str, start: int, count: int) -> list[ObjectRecord]:
        if count == 0:
            return []
        seg, f = self._seg, self._seg.f
        cols = {
            c: seg.read(f"/{table}", f[f"{table}/{c}"], slice(start, start + count))
            for c in OBJECT_COLUMNS
        }
        out = []
        classes = self._seg.classifications(self._local_row, table)
        for k in range(count):
            layers = (
                self._layers("object_layers", int(cols["layer_row"][k]))
                if table == "objects"
                else {}
            )
            out.append(
                ObjectRecord(
                    rect=tuple(float(v) for v in cols["rect"][k]),
                    class_id=int(cols["class_id"][k]),
                    confidence=float(cols["confidence"][k]),
                    object_id=int(cols["object_id"][k]),
                    unique_component_id=int(cols["unique_component_id"][k]),
                    label=cols["label"][k].decode("utf-8", "replace"),
                    parent_index=int(cols["parent_index"][k]),
                    parent_object_id=int(cols["parent_object_id"][k]),
                    layers=layers,
                    image=self._stored_image(int(cols["image_row"][k])),
                    classifications=classes.get(k, []),
                )
            )
        return out

    @cached_property
    def objects(self) -> list[ObjectRecord]:
        """SGIE objects with their per-object layers (and crops as stored, if recorded)."""
        return self._objects("objects", int(self._r["object_start"]), int(self._r["object_count"]))

    @cached_property
    def detection_objects(self) -> list[ObjectRecord]:
        """The NvDsObjectMeta that were on the frame when it was recorded."""
        return self._objects(
            "detections", int(self._r["detection_start"]), int(self._r["detection_count"])
        )

    @property
    def detections(self) -> Detections:
        """The pipeline's own objects (e.g. nvinfer's output) as Detections in frame pixels."""
        return Detections.from_objects(self.detection_objects, space="frame")

    def to_record(self) -> FrameRecord:
        """The FrameRecord as written (images as stored: encoded bytes stay encoded)."""
        return FrameRecord(
            self.source_id,
            self.frame_num,
            self.pts_ns,
            self.unique_id,
            self.network_size,
            self.frame_size,
            dict(self.tensors),
            self.objects,
            self.detection_objects,
            self.image_record,
            self.ntp_timestamp,
            self.batch_id,
            self.pad_index,
        )

    def __repr__(self) -> str:
        return (
            f"FrameView(row={self.row}, source_id={self.source_id}, frame_num={self.frame_num}, "
            f"unique_id={self.unique_id})"
        )
