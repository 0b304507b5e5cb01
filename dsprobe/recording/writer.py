"""The Recorder: accepts FrameRecords from any thread, writes them to HDF5 on a background thread.

``record()`` never blocks and never raises: frames go into a bounded queue and are dropped (and
counted) when it is full. The writer thread appends in blocks and flushes at least every
``flush_interval_s``; HDF5 is touched only inside that write+flush, so after a crash (``kill -9``)
the file holds every frame up to the last flush (see shared/reference/hdf5_measurements.md).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import h5py
import numpy as np

from dsprobe.nvinfer_config import NvinferConfig, as_nvinfer_config
from dsprobe.recording import images as imgs
from dsprobe.recording.schema import (FORMAT_NAME, FRAME_COLUMNS, IMAGE_COLUMNS, IMAGE_ENCODINGS, OBJECT_COLUMNS,
                                      SCHEMA_VERSION)
from dsprobe.types import FrameRecord, ImageRecord, ObjectRecord

log = logging.getLogger("dsprobe.recorder")
_STOP = object()


class RateLimiter:
    """Every-Nth-frame and max-frames-per-second decisions per (source_id, unique_id) stream.

    ``admit`` is cheap and is meant to be called *before* anything is copied (the probe uses it).
    """

    def __init__(self, every_n: int = 1, max_fps: float | None = None) -> None:
        if every_n < 1:
            raise ValueError(f"every_n must be >= 1, got {every_n}")
        if max_fps is not None and max_fps <= 0:
            raise ValueError(f"max_fps must be > 0, got {max_fps}")
        self.every_n = every_n
        self.min_interval_ns = int(1e9 / max_fps) if max_fps else 0
        self._seen: dict[tuple[int, int], int] = {}
        self._last_pts: dict[tuple[int, int], int] = {}

    def admit(self, source_id: int, pts_ns: int, unique_id: int = 0) -> bool:
        key = (source_id, unique_id)
        n = self._seen.get(key, 0)
        self._seen[key] = n + 1
        if n % self.every_n:
            return False
        if self.min_interval_ns:
            last = self._last_pts.get(key)
            if last is not None and 0 <= pts_ns - last < self.min_interval_ns:
                return False
            self._last_pts[key] = pts_ns
        return True


class Recorder:
    """Background HDF5 recorder. See the module docstring; options:

    * ``nvinfer_config``: path, text or NvinferConfig, or ``{gie_unique_id: config}`` for several GIEs;
      the text and the parsed geometry are stored in the recording.
    * ``layers``: names of the output layers to keep (None: all).
    * ``every_n`` / ``max_fps``: rate limits per stream (source_id, unique_id).
    * ``images``: keep frame images / crops; ``image_max_size`` longest side in pixels;
      ``image_format``: "jpeg", "png" or "raw". Encoding happens on the writer thread.
    * ``segment_max_bytes`` / ``segment_max_seconds``: rotate into ``<stem>-00000.h5``, ``-00001``...
    * ``flush_interval_s``: longest time a recorded frame waits before it is on disk.
    * ``block_frames``: frames per write block; ``queue_size``: frames the queue holds.
    * ``compression``: None, "lzf" or "gzip" for tensor datasets (see docs/recording-format.md).
    * ``notes``: free-form text or JSON-serialisable dict stored with the recording.
    """

    def __init__(self, path: str | os.PathLike, *, nvinfer_config: Any = None, layers: Iterable[str] | None = None,
                 every_n: int = 1, max_fps: float | None = None, images: bool = True, image_max_size: int = 640,
                 image_format: str = "jpeg", segment_max_bytes: int | None = None,
                 segment_max_seconds: float | None = None, flush_interval_s: float = 1.0, block_frames: int = 16,
                 queue_size: int = 64, compression: str | None = "lzf", notes: Any = None) -> None:
        if image_format not in IMAGE_ENCODINGS:
            raise ValueError(f"image_format must be one of {IMAGE_ENCODINGS}, got {image_format!r}")
        if compression not in (None, "lzf", "gzip"):
            raise ValueError(f"compression must be None, 'lzf' or 'gzip', got {compression!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.configs = _configs_by_id(nvinfer_config)
        self.layers = set(layers) if layers is not None else None
        self.limiter = RateLimiter(every_n, max_fps)
        self.images = images
        self.image_max_size = image_max_size
        self.image_format = image_format
        self.segment_max_bytes = segment_max_bytes
        self.segment_max_seconds = segment_max_seconds
        self.flush_interval_s = flush_interval_s
        self.block_frames = max(1, block_frames)
        self.compression = compression
        self.notes = notes
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._stats: dict[str, Any] = {
            "received": 0, "written": 0, "dropped_queue_full": 0, "dropped_rate_limited": 0,
            "dropped_stopped": 0, "dropped_invalid": 0, "errors": 0, "flushes": 0, "segments": 0,
            "bytes_written": 0, "failed_reason": None, "last_error": None,
        }
        self._extra_stats: dict[str, dict] = {}
        self._error_kinds: set[str] = set()
        self._closed = False
        self._failed = False
        self._thread = threading.Thread(target=self._run, name="dsprobe-recorder", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ caller side (any thread)
    def admit(self, source_id: int, pts_ns: int, unique_id: int = 0) -> bool:
        """Rate-limit decision for one frame; call before copying anything. Counts refusals."""
        with self._lock:
            ok = self.limiter.admit(source_id, pts_ns, unique_id)
            if not ok:
                self._stats["dropped_rate_limited"] += 1
        return ok

    def record(self, frame: FrameRecord, *, admitted: bool = False) -> bool:
        """Queue ``frame`` for writing. Never blocks or raises; False if it was dropped.

        ``admitted=True`` says the caller already asked :meth:`admit` for this frame.
        """
        try:
            if self._closed or self._failed:
                self._count("dropped_stopped")
                return False
            if not admitted and not self.admit(frame.source_id, frame.pts_ns, frame.unique_id):
                return False
            self._queue.put_nowait(frame)
            self._count("received")
            return True
        except queue.Full:
            self._count("dropped_queue_full")
            return False
        except Exception as exc:  # never into the caller
            self._error("record", exc)
            return False

    def update_stats(self, section: str, values: Mapping[str, Any]) -> None:
        """Merge ``values`` into stats section ``section`` (stored in the recording at each flush)."""
        with self._lock:
            self._extra_stats.setdefault(section, {}).update(_jsonable(values))

    @property
    def stats(self) -> dict[str, Any]:
        with self._lock:
            out = dict(self._stats)
            out["queued"] = self._queue.qsize()
            out.update({k: dict(v) for k, v in self._extra_stats.items()})
            return out

    @property
    def failed(self) -> bool:
        return self._failed

    def close(self, timeout: float | None = None) -> None:
        """Write and flush everything queued, then close the file(s)."""
        if self._closed:
            return
        self._closed = True
        while True:  # the stop marker must get in even if the queue is full
            try:
                self._queue.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                if not self._thread.is_alive():
                    break
        self._thread.join(timeout)

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        segment: _Segment | None = None
        pending: list[FrameRecord] = []
        last_flush = time.monotonic()
        try:
            while True:
                wait = max(0.0, self.flush_interval_s - (time.monotonic() - last_flush))
                try:
                    item = self._queue.get(timeout=wait if pending else max(wait, 0.05))
                except queue.Empty:
                    item = None
                stop = item is _STOP
                if item is not None and not stop:
                    pending.append(item)
                due = time.monotonic() - last_flush >= self.flush_interval_s
                if pending and (stop or due or len(pending) >= self.block_frames):
                    if segment is None:
                        segment = self._open_segment()
                    self._write(segment, pending)
                    pending = []
                    last_flush = time.monotonic()
                    if self._rotate_due(segment):
                        segment.close()
                        segment = None
                elif due:
                    last_flush = time.monotonic()
                    if segment is not None:
                        self._flush(segment)
                if stop:
                    break
        except Exception as exc:
            self._fail(exc)
        finally:
            if segment is not None:
                try:
                    if not self._failed:
                        self._flush(segment)
                    segment.close()
                except Exception as exc:  # file may already be broken (disk full)
                    self._error("close", exc)
            if segment is None and self._stats["segments"] == 0 and not self._failed:
                # nothing was recorded: still leave a valid, empty recording behind
                try:
                    self._open_segment().close()
                except Exception as exc:
                    self._fail(exc)

    def _write(self, segment: "_Segment", frames: list[FrameRecord]) -> None:
        written = 0
        for frame in frames:
            try:
                segment.add(self._prepare(frame))
                written += 1
            except _InvalidFrame as exc:
                self._count("dropped_invalid")
                self._error("invalid-frame", exc)
        segment.write_pending()
        with self._lock:
            self._stats["written"] += written
        self._flush(segment)

    def _flush(self, segment: "_Segment") -> None:
        with self._lock:
            self._stats["flushes"] += 1
            stats = dict(self._stats)
            stats.update({k: dict(v) for k, v in self._extra_stats.items()})
        segment.flush(stats)
        with self._lock:
            self._stats["bytes_written"] = segment.closed_bytes + segment.size()

    def _rotate_due(self, segment: "_Segment") -> bool:
        if self.segment_max_bytes and segment.size() >= self.segment_max_bytes:
            return True
        return bool(self.segment_max_seconds and time.monotonic() - segment.opened >= self.segment_max_seconds)

    def _open_segment(self) -> "_Segment":
        rotating = bool(self.segment_max_bytes or self.segment_max_seconds)
        index = self._stats["segments"]
        path = self.path.with_name(f"{self.path.stem}-{index:05d}{self.path.suffix or '.h5'}") if rotating else self.path
        closed_bytes = self._stats["bytes_written"]
        seg = _Segment(path, self, index, closed_bytes)
        with self._lock:
            self._stats["segments"] += 1
        return seg

    def _prepare(self, frame: FrameRecord) -> FrameRecord:
        """Apply the layer selection and the image policy (downscale + encode) on the writer thread."""
        keep = self.layers

        def sel(layers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return layers if keep is None else {k: v for k, v in layers.items() if k in keep}

        def img(image: ImageRecord | None) -> ImageRecord | None:
            if image is None or not self.images:
                return None
            return self._encode_image(image)

        objects = [_replace_obj(o, sel(o.layers), img(o.image)) for o in frame.objects]
        return FrameRecord(frame.source_id, frame.frame_num, frame.pts_ns, frame.unique_id, frame.network_size,
                           frame.frame_size, sel(frame.layers), objects, frame.detections, img(frame.image),
                           frame.ntp_timestamp, frame.batch_id, frame.pad_index)

    def _encode_image(self, image: ImageRecord) -> ImageRecord:
        if image.encoding != "raw":
            return image  # already encoded upstream
        rgb = imgs.to_rgb(imgs.downscale(np.asarray(image.data), self.image_max_size))
        if self.image_format == "raw":
            return ImageRecord(rgb, image.rect, "raw")
        return ImageRecord(imgs.encode(rgb, self.image_format), image.rect, self.image_format)

    # ------------------------------------------------------------------ bookkeeping
    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._stats[key] += n

    def _error(self, kind: str, exc: BaseException) -> None:
        with self._lock:
            self._stats["errors"] += 1
            self._stats["last_error"] = f"{kind}: {exc}"
            first = kind not in self._error_kinds
            self._error_kinds.add(kind)
        if first:
            log.warning("dsprobe recorder (%s): %s: %s (further errors of this kind are only counted)",
                        self.path, kind, exc)

    def _fail(self, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._stats["failed_reason"] = reason
            self._stats["errors"] += 1
        self._failed = True
        log.error("dsprobe recorder stopped, %s: %s; frames flushed before this are kept", self.path, reason)
        while True:  # drain so producers never wait on us
            try:
                if self._queue.get_nowait() is not _STOP:
                    self._count("dropped_stopped")
            except queue.Empty:
                break


class _InvalidFrame(ValueError):
    pass


class _Segment:
    """One HDF5 file being written: row buffers and block writes."""

    def __init__(self, path: Path, rec: Recorder, index: int, closed_bytes: int) -> None:
        self.path = path
        self.rec = rec
        self.closed_bytes = closed_bytes
        self.opened = time.monotonic()
        self.f = h5py.File(path, "w")
        a = self.f.attrs
        a["format"] = FORMAT_NAME
        a["schema_version"] = SCHEMA_VERSION
        from dsprobe import __version__
        a["dsprobe_version"] = __version__
        a["created"] = datetime.now(timezone.utc).isoformat()
        a["host"] = socket.gethostname()
        a["segment_index"] = index
        a["notes"] = rec.notes if isinstance(rec.notes, str) else json.dumps(_jsonable(rec.notes or {}))
        a["stats"] = "{}"
        gies = self.f.create_group("gies")
        for uid, cfg in rec.configs.items():
            g = gies.create_group(str(uid))
            g.attrs["config_text"] = cfg.text
            g.attrs["config_path"] = cfg.path or ""
            g.attrs["config_json"] = json.dumps(cfg.to_dict())
        self.tables = {name: _Table(self.f, name, cols) for name, cols in
                       (("frames", FRAME_COLUMNS), ("objects", OBJECT_COLUMNS),
                        ("detections", OBJECT_COLUMNS), ("images", IMAGE_COLUMNS))}
        self.image_data = self.f.create_dataset("images/data", shape=(0,), maxshape=(None,), chunks=(64,),
                                                dtype=h5py.vlen_dtype(np.uint8))
        self.layer_sets: dict[tuple[str, int, str], _LayerSet] = {}
        self.layer_names: dict[tuple[str, int], frozenset] = {}
        self.pending_images: list[np.ndarray] = []
        self.f.flush()

    # rows are appended to buffers; counts give the row numbers they will get
    def add(self, frame: FrameRecord) -> None:
        """Buffer one frame's rows; raises _InvalidFrame (before buffering anything) on bad layers."""
        self._check_layers("layers", frame.unique_id, frame.layers, frame)
        for o in frame.objects:
            self._check_layers("object_layers", frame.unique_id, o.layers, frame)
        frame_row = self.tables["frames"].count
        layer_row = self._add_layers("layers", frame.unique_id, frame.layers)
        image_row = self._add_image(frame.image)
        obj_start = self.tables["objects"].count
        for o in frame.objects:
            self._add_object("objects", frame_row, o, self._add_layers("object_layers", frame.unique_id, o.layers),
                             self._add_image(o.image))
        det_start = self.tables["detections"].count
        for d in frame.detections:
            self._add_object("detections", frame_row, d, -1, -1)
        self.tables["frames"].append({
            "source_id": frame.source_id, "frame_num": frame.frame_num, "pts_ns": frame.pts_ns,
            "ntp_timestamp": frame.ntp_timestamp, "unique_id": frame.unique_id, "batch_id": frame.batch_id,
            "pad_index": frame.pad_index, "network_size": tuple(frame.network_size),
            "frame_size": tuple(frame.frame_size), "layer_row": layer_row, "image_row": image_row,
            "object_start": obj_start, "object_count": len(frame.objects),
            "detection_start": det_start, "detection_count": len(frame.detections)})

    def _check_layers(self, group: str, uid: int, layers: Mapping[str, np.ndarray], frame: FrameRecord) -> None:
        if not layers:
            return
        where = f"GIE {uid}, source {frame.source_id}, frame {frame.frame_num}"
        known = self.layer_names.setdefault((group, uid), frozenset(layers))
        if frozenset(layers) != known:
            raise _InvalidFrame(f"{where}: layers {sorted(layers)} differ from the recording's {sorted(known)}; "
                                "record a fixed set of layers per GIE (Recorder(layers=...))")
        for name, arr in layers.items():
            if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiub":
                raise _InvalidFrame(f"{where}: layer {name!r} is not a numeric numpy array "
                                    f"({type(arr).__name__} {getattr(arr, 'dtype', '')})")
            ls = self.layer_sets.get((group, uid, name))
            if ls is not None and (arr.shape != ls.shape or arr.dtype != ls.dtype):
                raise _InvalidFrame(f"{where}: layer {name!r} changed from {ls.dtype}{list(ls.shape)} to "
                                    f"{arr.dtype}{list(arr.shape)}; frame dropped")

    def _add_layers(self, group: str, uid: int, layers: Mapping[str, np.ndarray]) -> int:
        row = -1
        for name, arr in layers.items():
            key = (group, uid, name)
            ls = self.layer_sets.get(key)
            if ls is None:
                ls = self.layer_sets[key] = _LayerSet(self.f, f"{group}/{uid}/{name}", arr, self.rec.compression)
            row = ls.append(arr)
        return row

    def _add_image(self, image: ImageRecord | None) -> int:
        if image is None:
            return -1
        if image.encoding == "raw":
            arr = np.asarray(image.data, np.uint8)
            shape = arr.shape if arr.ndim == 3 else (*arr.shape, 1)
            payload = np.frombuffer(arr.tobytes(), np.uint8)
        else:
            payload = np.frombuffer(bytes(image.data), np.uint8)
            shape = _encoded_shape(bytes(image.data))
        self.pending_images.append(payload)
        return self.tables["images"].append({"rect": tuple(image.rect), "shape": tuple(shape),
                                             "encoding": IMAGE_ENCODINGS.index(image.encoding)})

    def _add_object(self, table: str, frame_row: int, o: ObjectRecord, layer_row: int, image_row: int) -> None:
        self.tables[table].append({
            "frame_row": frame_row, "rect": tuple(o.rect), "class_id": o.class_id, "confidence": o.confidence,
            "object_id": o.object_id, "unique_component_id": o.unique_component_id,
            "parent_index": o.parent_index, "parent_object_id": o.parent_object_id,
            "label": o.label.encode("utf-8")[:127], "layer_row": layer_row, "image_row": image_row})

    def write_pending(self) -> None:
        for t in self.tables.values():
            t.write()
        for ls in self.layer_sets.values():
            ls.write()
        if self.pending_images:
            n0 = self.image_data.shape[0]
            self.image_data.resize((n0 + len(self.pending_images),))
            for i, payload in enumerate(self.pending_images):
                self.image_data[n0 + i] = payload
            self.pending_images = []

    def flush(self, stats: dict) -> None:
        self.f.attrs["stats"] = json.dumps(_jsonable(stats))
        self.f.flush()

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def close(self) -> None:
        self.f.close()


class _Table:
    """A group of equal-length column datasets, appended in blocks."""

    def __init__(self, f: h5py.File, name: str, columns: Mapping[str, tuple[str, tuple[int, ...]]]) -> None:
        g = f.require_group(name)
        self.columns = columns
        self.ds = {c: g.create_dataset(c, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                                       chunks=(1024, *shape)) for c, (dtype, shape) in columns.items()}
        self.rows: list[dict] = []
        self.count = 0

    def append(self, row: dict) -> int:
        self.rows.append(row)
        self.count += 1
        return self.count - 1

    def write(self) -> None:
        if not self.rows:
            return
        n0 = self.count - len(self.rows)
        for c, ds in self.ds.items():
            ds.resize((self.count, *ds.shape[1:]))
            ds[n0:self.count] = np.array([r[c] for r in self.rows], dtype=ds.dtype)
        self.rows = []


class _LayerSet:
    """One layer's dataset: (rows, *shape) with its true dtype, one chunk per row."""

    def __init__(self, f: h5py.File, path: str, first: np.ndarray, compression: str | None) -> None:
        self.shape, self.dtype = first.shape, first.dtype
        self.ds = f.create_dataset(path, shape=(0, *first.shape), maxshape=(None, *first.shape), dtype=first.dtype,
                                   chunks=(1, *first.shape) if first.size else None,
                                   compression=compression if first.size else None)
        self.ds.attrs["layer_name"] = path.rsplit("/", 1)[-1]
        self.pending: list[np.ndarray] = []
        self.count = 0

    def append(self, arr: np.ndarray) -> int:
        self.pending.append(arr)
        self.count += 1
        return self.count - 1

    def write(self) -> None:
        if not self.pending:
            return
        n0 = self.count - len(self.pending)
        self.ds.resize((self.count, *self.shape))
        self.ds[n0:self.count] = np.stack(self.pending) if len(self.pending) > 1 else self.pending[0][None]
        self.pending = []


def _encoded_shape(data: bytes) -> tuple[int, int, int]:
    try:
        from PIL import Image
        import io
        with Image.open(io.BytesIO(data)) as im:
            return (im.height, im.width, len(im.getbands()))
    except Exception:
        return (0, 0, 0)


def _replace_obj(o: ObjectRecord, layers: dict, image: ImageRecord | None) -> ObjectRecord:
    return ObjectRecord(o.rect, o.class_id, o.confidence, o.object_id, o.unique_component_id, o.label,
                        o.parent_index, o.parent_object_id, layers, image)


def _configs_by_id(value: Any) -> dict[int, NvinferConfig]:
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {int(k): as_nvinfer_config(v) for k, v in value.items()}
    cfg = as_nvinfer_config(value)
    return {cfg.gie_unique_id: cfg}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
