"""The rows of one segment file being built (:class:`FrameRows`): a checked frame becomes rows of the
frames / objects / detections / images tables, one row per layer dataset and bytes in the image
store, buffered until the next block write. Adding a frame is all or nothing: a frame that fails
half-way leaves no row behind."""

from __future__ import annotations

from typing import Mapping

import h5py
import numpy as np

from dsprobe.recording.datasets import ByteStore, LayerSet, RowBuffer, Table
from dsprobe.recording.schema import (
    CLASSIFICATION_COLUMNS,
    CLASSIFICATION_TABLES,
    FRAME_COLUMNS,
    IMAGE_COLUMNS,
    IMAGE_ENCODINGS,
    OBJECT_COLUMNS,
)
from dsprobe.recording.validate import InvalidFrame
from dsprobe.records import FrameRecord, ImageRecord, ObjectRecord

_INT64_MAX = (1 << 63) - 1
#: table rows (frames, objects, detections, images) are written once this many frames wait, or at a flush
TABLE_BLOCK_FRAMES = 256
#: tables in the order a block writes them: frames last, they point at the rest
WRITE_ORDER = ("objects", "detections", "images", "classifications", "frames")
#: bytes of HDF5 metadata (object headers, B-tree nodes, attributes) a flush may write, at most
FLUSH_METADATA_BYTES = 1 << 20
#: HDF5 chunk cache per dataset (set explicitly: HDF5 2.0 raised its default to 8 MiB, which a flush
#: then writes at once); appends need no more than two chunks of it
CHUNK_CACHE_BYTES = 2 << 20


class FrameRows:
    """Row buffers and block writes of one open segment file ``f``."""

    def __init__(self, f: h5py.File, compression: str | None) -> None:
        self.f = f
        self.compression = compression
        self.tables = {
            name: Table(f, name, cols)
            for name, cols in (
                ("frames", FRAME_COLUMNS),
                ("objects", OBJECT_COLUMNS),
                ("detections", OBJECT_COLUMNS),
                ("images", IMAGE_COLUMNS),
                ("classifications", CLASSIFICATION_COLUMNS),
            )
        }
        self.image_data = ByteStore(f, "images/data")
        self.image_bytes = 0
        self.layer_sets: dict[tuple[str, int, str], LayerSet] = {}
        self.layer_names: dict[tuple[str, int], frozenset] = {}
        self.pending_images: list[np.ndarray] = []
        self.pending_frames = 0
        self.pending_bytes = 0
        self._cached, self._cached_for = 0, -1  # flush_bytes' cache part, for this many layer sets

    @property
    def frames_pending(self) -> int:
        """Frames whose rows are buffered, not yet in the file."""
        return len(self.tables["frames"].pending)

    def _buffers(self) -> list[RowBuffer]:
        return [*self.tables.values(), *self.layer_sets.values()]

    # ------------------------------------------------------------------ adding a frame
    def add(self, frame: FrameRecord, recv_ns: int) -> None:
        """Buffer one checked frame's rows; InvalidFrame when its layers do not match the recording's
        (then nothing of it is buffered)."""
        names = dict(self.layer_names)  # committed only once the frame is in
        self._check_layers(names, "layers", frame.unique_id, frame.layers, frame)
        for o in frame.objects:
            self._check_layers(names, "object_layers", frame.unique_id, o.layers, frame)
        images = [_image_payload(frame.image)] + [_image_payload(o.image) for o in frame.objects]
        mark = (
            {id(b): len(b.pending) for b in self._buffers()},
            len(self.pending_images),
            self.image_bytes,
        )
        try:
            self._add_rows(frame, recv_ns, images)
        except BaseException:
            self._rollback(*mark)
            raise
        self.layer_names = names
        self.pending_frames += 1
        self.pending_bytes += (
            256 * (1 + len(frame.objects) + len(frame.detections))
            + sum(a.nbytes for a in frame.layers.values())
            + sum(a.nbytes for o in frame.objects for a in o.layers.values())
            + sum(p[0].size for p in images if p is not None)
        )

    def _rollback(self, pending: dict[int, int], n_images: int, image_bytes: int) -> None:
        for b in self._buffers():
            b.discard(keep=pending.get(id(b), 0))
        self.pending_images = self.pending_images[:n_images]
        self.image_bytes = image_bytes

    def _add_rows(self, frame: FrameRecord, recv_ns: int, images: list) -> None:
        frame_row = self.tables["frames"].count
        layer_row = self._add_layers("layers", frame.unique_id, frame.layers)
        image_row = self._add_image(frame_row, frame.image, images[0])
        obj_start = self.tables["objects"].count
        for o, payload in zip(frame.objects, images[1:]):
            self._add_object(
                "objects",
                frame_row,
                o,
                self._add_layers("object_layers", frame.unique_id, o.layers),
                self._add_image(frame_row, o.image, payload),
            )
        det_start = self.tables["detections"].count
        for d in frame.detections:
            self._add_object("detections", frame_row, d, -1, -1)
        for table, objs in zip(CLASSIFICATION_TABLES, (frame.objects, frame.detections)):
            self._add_classifications(frame_row, table, objs)
        self.tables["frames"].append(
            {
                "source_id": frame.source_id,
                "frame_num": frame.frame_num,
                "pts_ns": _int64(frame.pts_ns),
                "ntp_timestamp": _int64(frame.ntp_timestamp),
                "unique_id": frame.unique_id,
                "batch_id": frame.batch_id,
                "pad_index": frame.pad_index,
                "network_size": tuple(frame.network_size),
                "frame_size": tuple(frame.frame_size),
                "recv_time_ns": recv_ns,
                "layer_row": layer_row,
                "image_row": image_row,
                "object_start": obj_start,
                "object_count": len(frame.objects),
                "detection_start": det_start,
                "detection_count": len(frame.detections),
            }
        )

    def _check_layers(
        self,
        names: dict[tuple[str, int], frozenset],
        group: str,
        uid: int,
        layers: Mapping[str, np.ndarray],
        frame: FrameRecord,
    ) -> None:
        if not layers:
            return
        where = f"GIE {uid}, source {frame.source_id}, frame {frame.frame_num}"
        known = names.setdefault((group, uid), frozenset(layers))
        if frozenset(layers) != known:
            raise InvalidFrame(
                f"{where}: layers {sorted(layers)} differ from the recording's {sorted(known)}; "
                "record a fixed set of layers per GIE (Recorder(layers=...)); frame dropped"
            )
        for name, arr in layers.items():
            ls = self.layer_sets.get((group, uid, name))
            if ls is not None and (arr.shape != ls.shape or arr.dtype != ls.dtype):
                raise InvalidFrame(
                    f"{where}: layer {name!r} changed from {ls.dtype}{list(ls.shape)} to "
                    f"{arr.dtype}{list(arr.shape)}; frame dropped"
                )

    def _add_layers(self, group: str, uid: int, layers: Mapping[str, np.ndarray]) -> int:
        row = -1
        for name, arr in layers.items():
            key = (group, uid, name)
            ls = self.layer_sets.get(key)
            if ls is None:
                ls = self.layer_sets[key] = LayerSet(
                    self.f, group, uid, name, arr, self.compression
                )
            row = ls.append(arr)
        return row

    def _add_image(self, frame_row: int, image: ImageRecord | None, payload: tuple | None) -> int:
        if image is None or payload is None:
            return -1
        data, shape = payload
        self.pending_images.append(data)
        offset, self.image_bytes = self.image_bytes, self.image_bytes + data.size
        return self.tables["images"].append(
            {
                "frame_row": frame_row,
                "offset": offset,
                "nbytes": data.size,
                "rect": tuple(image.rect),
                "shape": shape,
                "encoding": IMAGE_ENCODINGS.index(image.encoding),
            }
        )

    def _add_object(
        self, table: str, frame_row: int, o: ObjectRecord, layer_row: int, image_row: int
    ) -> None:
        self.tables[table].append(
            {
                "frame_row": frame_row,
                "rect": tuple(o.rect),
                "class_id": o.class_id,
                "confidence": o.confidence,
                "object_id": o.object_id,
                "unique_component_id": o.unique_component_id,
                "parent_index": o.parent_index,
                "parent_object_id": o.parent_object_id,
                "label": _label_bytes(o.label),
                "layer_row": layer_row,
                "image_row": image_row,
            }
        )

    def _add_classifications(self, frame_row: int, table: str, objs: list[ObjectRecord]) -> None:
        for k, o in enumerate(objs):
            for c in o.classifications:
                self.tables["classifications"].append(
                    {
                        "frame_row": frame_row,
                        "table": CLASSIFICATION_TABLES.index(table),
                        "object_index": k,
                        "unique_component_id": c.unique_component_id,
                        "attribute": c.attribute,
                        "class_id": c.class_id,
                        "confidence": c.confidence,
                        "label": _label_bytes(c.label),
                    }
                )

    # ------------------------------------------------------------------ block writes
    def write_pending(self, tables: bool = True) -> int:
        """Write the buffered tensors and images (one block per dataset) and, with ``tables`` or once
        :data:`TABLE_BLOCK_FRAMES` frames wait, the table rows (frames, objects, images: small, so
        written in bigger blocks; a flush always writes them). Returns the number of frames whose rows
        are now all in the file."""
        for ls in self.layer_sets.values():
            ls.write()
        if self.pending_images:
            self.image_data.extend(self.pending_images)
            self.pending_images = []
        self.pending_frames, self.pending_bytes = 0, 0
        if not (tables or self.frames_pending >= TABLE_BLOCK_FRAMES):
            return 0
        n = self.frames_pending
        for name in WRITE_ORDER:
            self.tables[name].write()
        return n

    def discard_pending(self) -> int:
        """Forget buffered rows (no room left to write them); returns the frames forgotten."""
        n = self.frames_pending
        for buf in self._buffers():
            buf.discard()
        self.image_bytes -= sum(p.size for p in self.pending_images)
        self.pending_images = []
        self.pending_frames = self.pending_bytes = 0
        return n

    def flush_bytes(self) -> int:
        """At most how many bytes the next flush writes besides the pending block: what HDF5's chunk
        cache may hold dirty for every dataset (two chunks of it at most, appending), the table rows
        of the frames not yet in the tables, and the metadata."""
        n_sets = len(self.layer_sets)
        if self._cached_for != n_sets:  # h5py property reads are slow: once per new dataset
            chunked = [ds for t in self.tables.values() for ds in t.ds.values()]
            chunked += [ls.ds for ls in self.layer_sets.values() if not ls.direct and ls.ds.chunks]
            chunked.append(self.image_data.ds)
            self._cached = sum(
                min(CHUNK_CACHE_BYTES, 2 * int(np.prod(ds.chunks)) * ds.dtype.itemsize)
                for ds in chunked
            )
            self._cached_for = n_sets
        return self._cached + 1024 * self.frames_pending + FLUSH_METADATA_BYTES


def _image_payload(image: ImageRecord | None) -> tuple[np.ndarray, tuple[int, int, int]] | None:
    """(uint8 bytes to store, decoded (H, W, C)) for an image already prepared by the recorder."""
    if image is None:
        return None
    if image.encoding == "raw":
        arr = np.ascontiguousarray(image.data, dtype=np.uint8)
        shape = arr.shape if arr.ndim == 3 else (*arr.shape, 1)
        return arr.reshape(-1), tuple(int(v) for v in shape)
    data = bytes(image.data)
    return np.frombuffer(data, np.uint8), _encoded_shape(data)


def _encoded_shape(data: bytes) -> tuple[int, int, int]:
    try:
        import io

        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return (im.height, im.width, len(im.getbands()))
    except Exception:
        return (0, 0, 0)


def _label_bytes(label: str) -> bytes:
    b = label.encode("utf-8")[:128]
    return b.decode("utf-8", "ignore").encode("utf-8")  # never cut a character in half


def _int64(v: int) -> int:
    """uint64 times (GST_CLOCK_TIME_NONE...) that do not fit int64 are stored as -1."""
    return int(v) if int(v) <= _INT64_MAX else -1
