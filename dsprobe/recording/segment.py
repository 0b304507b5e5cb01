"""One HDF5 segment file being written by the Recorder's thread (:class:`Segment`): its header, row
buffers and block writes (tables of frames/objects/detections/images, one dataset per layer, a byte
store for images)."""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np

from dsprobe.nvinfer.config import NvinferConfig
from dsprobe.recording.datasets import ByteStore, LayerSet, Table
from dsprobe.recording.schema import (
    CLASSIFICATION_COLUMNS,
    CLASSIFICATION_TABLES,
    FORMAT_NAME,
    FRAME_COLUMNS,
    IMAGE_COLUMNS,
    IMAGE_ENCODINGS,
    OBJECT_COLUMNS,
    SCHEMA_VERSION,
    jsonable,
)
from dsprobe.recording.validate import InvalidFrame, check_fields
from dsprobe.records import FrameRecord, ImageRecord, ObjectRecord

_INT64_MAX = (1 << 63) - 1
#: table rows (frames, objects, detections, images) are written once this many frames wait, or at a flush
TABLE_BLOCK_FRAMES = 256


@dataclass(frozen=True)
class SegmentHeader:
    """What every segment file of one recording stores in its header (same for all segments)."""

    recording_id: str
    notes: str  # free text, or JSON
    options_json: str  # RecorderOptions.to_json() as JSON
    configs: Mapping[int, NvinferConfig]  # gie_unique_id -> config
    compression: str | None


class Segment:
    """One HDF5 file being written: row buffers and block writes."""

    def __init__(self, path: Path, header: SegmentHeader, index: int, closed_bytes: int) -> None:
        self.path = path
        self.header = header
        self.closed_bytes = closed_bytes
        self.opened = time.monotonic()
        # built under a temporary name and renamed after its first flush: a kill -9 at any moment never
        # leaves a half-created file under the recording's name
        creating = path.with_name(path.name + ".creating")
        self.f = h5py.File(creating, "w")
        a = self.f.attrs
        from dsprobe import __version__

        a["format"] = FORMAT_NAME
        a["schema_version"] = SCHEMA_VERSION
        a["dsprobe_version"] = __version__
        a["created"] = datetime.now(timezone.utc).isoformat()
        a["host"] = socket.gethostname()
        a["recording_id"] = header.recording_id
        a["segment_index"] = index
        a["notes"] = header.notes
        a["recorder_options"] = header.options_json
        a["software"] = json.dumps(
            {"h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version, "numpy": np.__version__}
        )
        a["stats"] = "{}"
        a["frames_committed"] = 0
        a["closed_cleanly"] = False
        gies = self.f.create_group("gies")
        for uid, cfg in header.configs.items():
            g = gies.create_group(str(uid))
            g.attrs["config_text"] = cfg.text
            g.attrs["config_path"] = cfg.path or ""
            g.attrs["config_json"] = json.dumps(cfg.to_dict())
        self.tables = {
            name: Table(self.f, name, cols)
            for name, cols in (
                ("frames", FRAME_COLUMNS),
                ("objects", OBJECT_COLUMNS),
                ("detections", OBJECT_COLUMNS),
                ("images", IMAGE_COLUMNS),
                ("classifications", CLASSIFICATION_COLUMNS),
            )
        }
        self.image_data = ByteStore(self.f, "images/data")
        self.image_bytes = 0
        self.layer_sets: dict[tuple[str, int, str], LayerSet] = {}
        self.layer_names: dict[tuple[str, int], frozenset] = {}
        self.pending_images: list[np.ndarray] = []
        self.pending_frames = 0
        self.pending_bytes = 0
        self.dirty = False
        self.f.flush()
        os.replace(creating, path)

    def add(self, frame: FrameRecord, recv_ns: int) -> None:
        """Buffer one frame's rows; raises InvalidFrame (before buffering anything) on bad input."""
        check_fields(frame)
        self._check_layers("layers", frame.unique_id, frame.layers, frame)
        for o in frame.objects:
            self._check_layers("object_layers", frame.unique_id, o.layers, frame)
        images = [_image_payload(frame.image)] + [_image_payload(o.image) for o in frame.objects]
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
        self.pending_frames += 1
        self.pending_bytes += (
            256 * (1 + len(frame.objects) + len(frame.detections))
            + sum(a.nbytes for a in frame.layers.values())
            + sum(a.nbytes for o in frame.objects for a in o.layers.values())
            + sum(p[0].size for p in images if p is not None)
        )
        self.dirty = True

    def _check_layers(
        self, group: str, uid: int, layers: Mapping[str, np.ndarray], frame: FrameRecord
    ) -> None:
        if not layers:
            return
        where = f"GIE {uid}, source {frame.source_id}, frame {frame.frame_num}"
        known = self.layer_names.setdefault((group, uid), frozenset(layers))
        if frozenset(layers) != known:
            raise InvalidFrame(
                f"{where}: layers {sorted(layers)} differ from the recording's {sorted(known)}; "
                "record a fixed set of layers per GIE (Recorder(layers=...)); frame dropped"
            )
        for name, arr in layers.items():
            if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiub":
                raise InvalidFrame(
                    f"{where}: layer {name!r} is not a numeric numpy array "
                    f"({type(arr).__name__} {getattr(arr, 'dtype', '')}); frame dropped"
                )
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
                    self.f, group, uid, name, arr, self.header.compression
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
        frames = self.tables["frames"]
        if not (tables or len(frames.pending) >= TABLE_BLOCK_FRAMES):
            return 0
        n = len(frames.pending)
        for name in (
            "objects",
            "detections",
            "images",
            "classifications",
            "frames",
        ):  # frames last: they point at the rest
            self.tables[name].write()
        return n

    def discard_pending(self) -> None:
        """Forget buffered rows (used when there is no room left to write them)."""
        for buf in (*self.tables.values(), *self.layer_sets.values()):
            buf.discard()
        self.image_bytes -= sum(p.size for p in self.pending_images)
        self.pending_images = []
        self.pending_frames = self.pending_bytes = 0

    def flush(self, stats: dict) -> None:
        self.f.attrs["stats"] = json.dumps(jsonable(stats))
        self.f.attrs["frames_committed"] = self.tables["frames"].count
        self.f.flush()
        self.dirty = False

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def close(self) -> None:
        self.f.attrs["closed_cleanly"] = True
        self.f.close()

    def abandon(self, stats: dict) -> None:
        """After an I/O error HDF5 saw: note the reason, then detach the file and close.

        HDF5 (2.0) crashes the process at exit when it retries writing a file whose write failed, so
        the file descriptor is pointed at /dev/null first: nothing more reaches the damaged file, and
        the process lives on. Frames in earlier, closed segments are intact.
        """
        try:
            self.f.attrs["stats"] = json.dumps(jsonable(stats))
        except Exception:
            pass
        try:
            fd = self.f.id.get_vfd_handle()
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, fd)
            os.close(null)
        except Exception:
            pass
        try:
            self.f.close()
        except Exception:
            pass


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
