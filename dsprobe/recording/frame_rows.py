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
from dsprobe.recording.validate import InvalidFrame, plain_frame
from dsprobe.records import FrameRecord, ImageRecord, ObjectRecord

_INT64_MAX = (1 << 63) - 1
#: table rows (frames, objects, detections, images) are written once this many frames wait, or at a flush
TABLE_BLOCK_FRAMES = 8192
#: a block of small frames is written once it holds this many bytes (or BLOCK_MAX_FRAMES frames), not
#: every ``block_frames``: each dataset costs one HDF5 call per block, whatever the block's size
BLOCK_MIN_BYTES = 1 << 20
#: ... and at most this many frames wait for their tensors to be written
BLOCK_MAX_FRAMES = 256
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
        #: GIE -> (its frame-level layer sets, bytes a frame adds to a block): what ``add_plain``
        #: knows after the GIE's first frame without objects, detections or picture
        self.plain: dict[int, tuple[tuple[LayerSet, ...], int]] = {}
        self.pending_images: list[np.ndarray] = []
        self.pending_frames = 0
        self.pending_bytes = 0
        self._cached, self._cached_for = 0, ()  # flush_bytes' cache part, for the datasets in use
        self._all: list[RowBuffer] = []  # tables and layer sets, in the order rollback marks them

    @property
    def frames_pending(self) -> int:
        """Frames whose rows are buffered, not yet in the file."""
        return len(self.tables["frames"].pending)

    def block_due(self, block_frames: int, min_bytes: int = BLOCK_MIN_BYTES) -> bool:
        """True when the buffered frames make a block: ``block_frames`` of them, and at least
        ``min_bytes`` (:data:`BLOCK_MIN_BYTES`) or :data:`BLOCK_MAX_FRAMES` frames."""
        n = self.pending_frames
        return n >= block_frames and (self.pending_bytes >= min_bytes or n >= BLOCK_MAX_FRAMES)

    def _buffers(self) -> list[RowBuffer]:
        if len(self._all) != len(self.tables) + len(self.layer_sets):
            self._all = [*self.tables.values(), *self.layer_sets.values()]
        return self._all

    # ------------------------------------------------------------------ adding a frame
    def add(self, frame: FrameRecord, recv_ns: int) -> None:
        """Buffer one checked frame's rows; InvalidFrame when its layers do not match the recording's
        (then nothing of it is buffered)."""
        if not self.add_plain(frame, recv_ns):
            self._add_any(frame, recv_ns)

    def add_plain(self, frame: FrameRecord, recv_ns: int) -> bool:
        """Buffer the common frame fast, *unchecked*: a frame with frame-level layers only (no
        objects, detections or picture) whose own fields pass ``check_frame``'s C-speed case
        (:func:`plain_frame`) and whose layers are exactly the ones the recording has for its GIE:
        the same names, each a numpy array of the same shape and the very same (checked, native)
        dtype object. Such a frame passes ``check_frame`` unchanged and the FramePreparer keeps it
        as it is (its layers are ones kept before; it has no picture), so it is buffered here with
        the rows the general path makes (tests/test_recording_blocks.py compares the files).
        False, nothing buffered, for any other frame."""
        if not plain_frame(frame):
            return False
        layers = frame.layers
        known = self.plain.get(frame.unique_id)
        if known is None or type(layers) is not dict or len(layers) != len(known[0]):
            return False
        sets, nbytes = known
        for ls in sets:
            arr = layers.get(ls.name)
            if type(arr) is not np.ndarray or arr.dtype is not ls.dtype or arr.shape != ls.shape:
                return False
        row = -1
        for ls in sets:
            row = ls.count
            ls.pending.append(layers[ls.name])
            ls.count = row + 1
        frames = self.tables["frames"]
        frames.pending.append(
            _frame_row(
                frame,
                recv_ns,
                row,
                -1,
                self.tables["objects"].count,
                self.tables["detections"].count,
            )
        )
        frames.count += 1
        self.pending_frames += 1
        self.pending_bytes += nbytes
        return True

    def _add_any(self, frame: FrameRecord, recv_ns: int) -> None:
        new_names: dict[tuple[str, int], frozenset] = {}  # kept only once the frame is in
        objects = frame.objects
        self._check_layers(new_names, "layers", frame.unique_id, frame.layers, frame)
        for o in objects:
            self._check_layers(new_names, "object_layers", frame.unique_id, o.layers, frame)
        images = [_image_payload(frame.image)]
        if objects:
            images += [_image_payload(o.image) for o in objects]
        buffers = self._buffers()
        mark = [len(b.pending) for b in buffers], len(self.pending_images), self.image_bytes
        try:
            self._add_rows(frame, recv_ns, images)
        except BaseException:
            self._rollback(buffers, *mark)
            raise
        if new_names:
            self.layer_names = {**self.layer_names, **new_names}
        if not (objects or frame.detections or frame.image is not None):
            uid = frame.unique_id
            sets = tuple(self.layer_sets["layers", uid, name] for name in frame.layers)
            self.plain[uid] = sets, 256 + sum(ls.row_bytes for ls in sets)
        self.pending_frames += 1
        nbytes = 256 * (1 + len(objects) + len(frame.detections))
        for a in frame.layers.values():
            nbytes += a.nbytes
        for o in objects:
            for a in o.layers.values():
                nbytes += a.nbytes
        for p in images:
            if p is not None:
                nbytes += p[0].size
        self.pending_bytes += nbytes

    def _rollback(
        self, buffers: list[RowBuffer], pending: list[int], n_images: int, image_bytes: int
    ) -> None:
        for b, keep in zip(buffers, pending):
            b.discard(keep=keep)
        for b in self._buffers()[len(buffers) :]:  # layer sets the failed frame made
            b.discard()
        self.pending_images = self.pending_images[:n_images]
        self.image_bytes = image_bytes

    def _add_rows(self, frame: FrameRecord, recv_ns: int, images: list) -> None:
        """The frame's rows: tuples in the schema's column order (FRAME_COLUMNS, OBJECT_COLUMNS,
        IMAGE_COLUMNS, CLASSIFICATION_COLUMNS)."""
        tables = self.tables
        frame_row = tables["frames"].count
        layer_row = (
            self._add_layers("layers", frame.unique_id, frame.layers) if frame.layers else -1
        )
        image_row = self._add_image(frame_row, frame.image, images[0])
        objects = tables["objects"]
        obj_start = objects.count
        for o, payload in zip(frame.objects, images[1:]):
            objects.append(
                _object_row(
                    frame_row,
                    o,
                    self._add_layers("object_layers", frame.unique_id, o.layers),
                    self._add_image(frame_row, o.image, payload),
                )
            )
        detections = tables["detections"]
        det_start = detections.count
        for d in frame.detections:
            detections.append(_object_row(frame_row, d, -1, -1))
        if frame.objects or frame.detections:
            for table, objs in zip(CLASSIFICATION_TABLES, (frame.objects, frame.detections)):
                self._add_classifications(frame_row, table, objs)
        tables["frames"].append(
            _frame_row(frame, recv_ns, layer_row, image_row, obj_start, det_start)
        )

    def _check_layers(
        self,
        new_names: dict[tuple[str, int], frozenset],
        group: str,
        uid: int,
        layers: Mapping[str, np.ndarray],
        frame: FrameRecord,
    ) -> None:
        if not layers:
            return
        key = (group, uid)
        known = self.layer_names.get(key) or new_names.get(key)
        if known is None:
            known = new_names[key] = frozenset(layers)
        elif known != layers.keys():
            where = f"GIE {uid}, source {frame.source_id}, frame {frame.frame_num}"
            raise InvalidFrame(
                f"{where}: layers {sorted(layers)} differ from the recording's {sorted(known)}; "
                "record a fixed set of layers per GIE (Recorder(layers=...)); frame dropped"
            )
        for name, arr in layers.items():
            ls = self.layer_sets.get((group, uid, name))
            if ls is not None and (arr.shape != ls.shape or arr.dtype != ls.dtype):
                where = f"GIE {uid}, source {frame.source_id}, frame {frame.frame_num}"
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
            (
                frame_row,
                offset,
                data.size,
                tuple(image.rect),
                shape,
                IMAGE_ENCODINGS.index(image.encoding),
            )
        )

    def _add_classifications(self, frame_row: int, table: str, objs: list[ObjectRecord]) -> None:
        rows = self.tables["classifications"]
        for k, o in enumerate(objs):
            for c in o.classifications:
                rows.append(
                    (
                        frame_row,
                        CLASSIFICATION_TABLES.index(table),
                        k,
                        c.unique_component_id,
                        c.attribute,
                        c.class_id,
                        c.confidence,
                        _label_bytes(c.label),
                    )
                )

    # ------------------------------------------------------------------ block writes
    def write_pending(self, tables: bool = True, hold: bool = True) -> int:
        """Write the buffered tensors and images (one block per dataset) and, with ``tables`` or once
        :data:`TABLE_BLOCK_FRAMES` frames wait, the table rows (frames, objects, images: small, so
        written in bigger blocks; a flush always writes them). Without the tables and with ``hold``,
        rows of small layers past their last whole chunk wait for the next block (see
        ``LayerSet.write``); with the tables everything is written, so a frame's table rows never reach the file before its layer
        rows. Returns the number of frames whose rows are now all in the file."""
        tables = tables or self.frames_pending >= TABLE_BLOCK_FRAMES
        held = 0  # bytes of layer rows kept for the next block (never when the tables are written)
        for ls in self.layer_sets.values():
            ls.write(whole_chunks_only=hold and not tables)
            held += len(ls.pending) * ls.row_bytes
        if self.pending_images:
            self.image_data.extend(self.pending_images)
            self.pending_images = []
        self.pending_frames, self.pending_bytes = 0, held
        if not tables:
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
        cache may hold dirty for every dataset that has rows (two chunks of it at most, appending; a
        dataset never written to has no chunk), the table rows of the frames not yet in the
        tables, and the metadata."""
        key = (
            len(self.layer_sets),
            tuple(t.count > 0 for t in self.tables.values()),
            self.image_bytes > 0,
        )
        if self._cached_for != key:  # h5py property reads are slow: once per new dataset in use
            chunked = [ds for t in self.tables.values() if t.count for ds in t.ds.values()]
            chunked += [ls.ds for ls in self.layer_sets.values() if not ls.direct and ls.ds.chunks]
            if self.image_bytes:
                chunked.append(self.image_data.ds)
            self._cached = sum(
                min(CHUNK_CACHE_BYTES, 2 * int(np.prod(ds.chunks)) * ds.dtype.itemsize)
                for ds in chunked
            )
            self._cached_for = key
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


def _frame_row(
    frame: FrameRecord, recv_ns: int, layer_row: int, image_row: int, obj_start: int, det_start: int
) -> tuple:
    """One row of /frames, flat (FRAME_COLUMNS' order, ``network_size`` and ``frame_size`` spread
    out: the table takes flat rows, see ``Table``)."""
    pts, ntp = frame.pts_ns, frame.ntp_timestamp
    return (
        frame.source_id,
        frame.frame_num,
        pts if pts <= _INT64_MAX else -1,
        ntp if ntp <= _INT64_MAX else -1,
        frame.unique_id,
        frame.batch_id,
        frame.pad_index,
        *frame.network_size,
        *frame.frame_size,
        recv_ns,
        layer_row,
        image_row,
        obj_start,
        len(frame.objects),
        det_start,
        len(frame.detections),
    )


def _object_row(frame_row: int, o: ObjectRecord, layer_row: int, image_row: int) -> tuple:
    """One row of /objects or /detections (OBJECT_COLUMNS' order)."""
    return (
        frame_row,
        tuple(o.rect),
        o.class_id,
        o.confidence,
        o.object_id,
        o.unique_component_id,
        o.parent_index,
        o.parent_object_id,
        _label_bytes(o.label),
        layer_row,
        image_row,
    )


def _label_bytes(label: str) -> bytes:
    b = label.encode("utf-8")[:128]
    return b.decode("utf-8", "ignore").encode("utf-8")  # never cut a character in half
