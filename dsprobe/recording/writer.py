"""The Recorder: accepts FrameRecords from any thread, writes them to HDF5 on a background thread.

``record()`` never blocks and never raises: frames go into a bounded queue and are dropped (and
counted) when it is full. The writer thread downscales/encodes images, buffers rows, appends them in
blocks and flushes the file at least every ``flush_interval_s``; after a crash (``kill -9``) the file
holds every frame up to the last flush (see shared/reference/hdf5_measurements.md). An I/O error
(disk full...) stops the recorder: the reason is logged and kept in :attr:`Recorder.stats`, the
caller carries on and later frames are counted as ``dropped_stopped``.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import h5py
import numpy as np

from dsprobe.nvinfer_config import NvinferConfig, as_nvinfer_config
from dsprobe.recording import images as imgs
from dsprobe.recording.schema import (FORMAT_NAME, FRAME_COLUMNS, IMAGE_COLUMNS, IMAGE_ENCODINGS, OBJECT_COLUMNS,
                                      IMAGE_CHUNK_BYTES, SCHEMA_VERSION, compression_options, hdf5_name,
                                      jsonable, layer_chunks, table_chunks)
from dsprobe.types import FrameRecord, ImageRecord, ObjectRecord

log = logging.getLogger("dsprobe.recorder")
_STOP = object()
_INT64_MAX = (1 << 63) - 1


class RateLimiter:
    """Every-Nth-frame and max-frames-per-second decisions per (source_id, unique_id) stream.

    ``max_fps`` is judged on the frame's PTS (so several GIEs keep the same frames); a stream whose
    PTS does not move (0, unknown) is judged on the host's monotonic clock. ``admit`` is cheap and is meant to
    be called *before* anything is copied (the probe uses it).
    """

    def __init__(self, every_n: int = 1, max_fps: float | None = None) -> None:
        if every_n < 1:
            raise ValueError(f"every_n must be >= 1, got {every_n}")
        if max_fps is not None and max_fps <= 0:
            raise ValueError(f"max_fps must be > 0, got {max_fps}")
        self.every_n = every_n
        self.min_interval_ns = int(1e9 / max_fps) if max_fps else 0
        self._seen: dict[tuple[int, int], int] = {}
        self._last: dict[tuple[int, int], tuple[int, int]] = {}  # stream -> (last kept PTS, host clock)

    def admit(self, source_id: int, pts_ns: int, unique_id: int = 0) -> bool:
        key = (source_id, unique_id)
        n = self._seen.get(key, 0)
        self._seen[key] = n + 1
        if n % self.every_n:
            return False
        if self.min_interval_ns:
            now = time.monotonic_ns()
            last = self._last.get(key)
            if last is not None:
                last_pts, last_clock = last
                # PTS not moving (unknown, 0): judge on the host clock; PTS jumping back (loop, seek): admit
                elapsed = now - last_clock if pts_ns == last_pts else pts_ns - last_pts
                if 0 <= elapsed < self.min_interval_ns:
                    return False
            self._last[key] = (pts_ns, now)
        return True


class Recorder:
    """Background HDF5 recorder (see the module docstring). Options:

    * ``path``: the ``.h5`` file; with segment rotation the files are ``<stem>-00000.h5``,
      ``<stem>-00001.h5``... beside it and ``open_recording(path)`` finds them.
    * ``nvinfer_config``: path, text or NvinferConfig, or ``{gie_unique_id: config}`` for several GIEs;
      the text and the parsed config (preprocessing geometry included) are stored in every file.
    * ``layers``: names of the output layers to keep (None: all), frame-level and per-object alike.
    * ``every_n`` / ``max_fps``: rate limits per stream (source_id, unique_id).
    * ``images``: keep frame images / crops; ``image_max_size``: longest side in pixels (downscaled on
      the writer thread); ``image_format``: "jpeg", "png" or "raw" (JPEG/PNG need Pillow; without it
      images are stored raw). Images handed over already encoded are stored as they are.
    * ``segment_max_bytes`` / ``segment_max_seconds``: rotate into numbered segment files.
    * ``flush_interval_s``: longest time an accepted frame waits before it is safely on disk.
    * ``block_frames``: frames buffered per block write; ``queue_size``: frames the queue holds.
    * ``drop_when_full``: True (live pipelines): a full queue drops the frame; False (offline
      recorders that must keep every frame): ``record()`` waits for room.
    * ``compression``: None (default), "lzf", "gzip", "gzip-N", "blosc-lz4", "blosc-zstd" for tensor
      datasets (see docs/recording-format.md for measurements and why None is the default).
    * ``notes``: free-form text or JSON-serialisable dict stored with the recording.
    """

    def __init__(self, path: str | os.PathLike, *, nvinfer_config: Any = None, layers: Iterable[str] | None = None,
                 every_n: int = 1, max_fps: float | None = None, images: bool = True, image_max_size: int = 640,
                 image_format: str = "jpeg", segment_max_bytes: int | None = None,
                 segment_max_seconds: float | None = None, flush_interval_s: float = 1.0, block_frames: int = 16,
                 queue_size: int = 64, drop_when_full: bool = True, compression: str | None = None,
                 image_quality: int = 90, notes: Any = None) -> None:
        if image_format not in IMAGE_ENCODINGS:
            raise ValueError(f"image_format must be one of {IMAGE_ENCODINGS}, got {image_format!r}")
        compression_options(compression)  # validates the name (and that hdf5plugin is there if needed)
        if flush_interval_s <= 0:
            raise ValueError(f"flush_interval_s must be > 0, got {flush_interval_s}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.configs = _configs_by_id(nvinfer_config)
        self.layers = set(layers) if layers is not None else None
        self.limiter = RateLimiter(every_n, max_fps)
        self.images = images
        self.image_max_size = image_max_size
        self.image_format = image_format
        self.image_quality = image_quality
        self.segment_max_bytes = segment_max_bytes
        self.segment_max_seconds = segment_max_seconds
        self.flush_interval_s = flush_interval_s
        self.block_frames = max(1, block_frames)
        self.drop_when_full = drop_when_full
        self.compression = compression
        self.notes = notes
        self.recording_id = uuid.uuid4().hex
        self.options = {"layers": sorted(self.layers) if self.layers is not None else None, "every_n": every_n,
                        "max_fps": max_fps, "images": images, "image_max_size": image_max_size,
                        "image_format": image_format, "segment_max_bytes": segment_max_bytes,
                        "segment_max_seconds": segment_max_seconds, "flush_interval_s": flush_interval_s,
                        "block_frames": self.block_frames, "queue_size": queue_size,
                        "drop_when_full": drop_when_full, "compression": compression}
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._lock = threading.Lock()
        self._stats: dict[str, Any] = {
            "received": 0, "queued": 0, "written": 0, "frames_flushed": 0, "dropped_queue_full": 0, "dropped_rate_limited": 0,
            "dropped_stopped": 0, "dropped_invalid": 0, "errors": 0, "flushes": 0, "segments": 0,
            "bytes_written": 0, "failed_reason": None, "last_error": None,
        }
        self._extra_stats: dict[str, dict] = {}
        self._error_kinds: set[str] = set()
        self._closed = False
        self._failed = False
        self._pillow_missing = False
        self._thread = threading.Thread(target=self._run, name="dsprobe-recorder", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ caller side (any thread)
    def admit(self, source_id: int, pts_ns: int, unique_id: int = 0) -> bool:
        """Rate-limit decision for one frame; call before copying anything. Counts refusals.

        A caller that uses it passes ``admitted=True`` to :meth:`record` for the frames it admitted.
        """
        with self._lock:
            ok = self.limiter.admit(source_id, pts_ns, unique_id)
            if not ok:
                self._stats["received"] += 1
                self._stats["dropped_rate_limited"] += 1
        return ok

    def record(self, frame: FrameRecord, *, admitted: bool = False) -> bool:
        """Queue ``frame`` for writing; True if accepted, False if dropped (rate limit, full, stopped).

        Never raises. Never blocks unless the recorder was made with ``drop_when_full=False``.
        The recorder keeps the arrays of ``frame`` (no copy): hand over arrays you no longer change.
        """
        try:
            if self._closed or self._failed:
                self._count("received", "dropped_stopped")
                return False
            if not admitted and not self.admit(frame.source_id, frame.pts_ns, frame.unique_id):
                return False
            item = (frame, time.time_ns())
            if self.drop_when_full:
                self._queue.put_nowait(item)
            else:
                while not self._put_waiting(item):
                    if self._failed or not self._thread.is_alive():
                        self._count("received", "dropped_stopped")
                        return False
            self._count("received", "queued")
            return True
        except queue.Full:
            self._count("received", "dropped_queue_full")
            if "queue-full" not in self._error_kinds:
                self._error_kinds.add("queue-full")
                log.warning("dsprobe recorder (%s): queue full, dropping frames (the writer cannot keep up; "
                            "see stats['dropped_queue_full'])", self.path)
            return False
        except Exception as exc:  # never into the caller
            self._error("record", exc)
            return False

    def _put_waiting(self, item: tuple) -> bool:
        try:
            self._queue.put(item, timeout=0.5)
            return True
        except queue.Full:
            return False

    def update_stats(self, section: str, values: Mapping[str, Any]) -> None:
        """Merge ``values`` into stats section ``section`` (stored in the recording at each flush)."""
        if section in self._stats:
            raise ValueError(f"stats section {section!r} clashes with a recorder counter")
        with self._lock:
            self._extra_stats.setdefault(section, {}).update(jsonable(values))

    @property
    def stats(self) -> dict[str, Any]:
        """Counters (received, queued, written, frames_flushed (safe on disk), dropped_*, errors, flushes, segments, bytes_written,
        failed_reason, last_error), ``queue_depth`` and the sections given to :meth:`update_stats`."""
        with self._lock:
            out = dict(self._stats)
            out["queue_depth"] = self._queue.qsize()
            out.update({k: dict(v) for k, v in self._extra_stats.items()})
            return out

    @property
    def failed(self) -> bool:
        """True once an I/O error stopped the recorder (reason in ``stats['failed_reason']``)."""
        return self._failed

    @property
    def paths(self) -> list[Path]:
        """The files written so far (one, or the segments)."""
        n = max(1, self._stats["segments"])
        return [self._segment_path(i) for i in range(n)] if self._rotating else [self.path]

    def close(self, timeout: float | None = None) -> None:
        """Write and flush everything queued, then close the file(s). Safe to call twice."""
        if self._closed:
            self._thread.join(timeout)
            return
        self._closed = True
        while self._thread.is_alive():  # the stop marker must get in even if the queue is full
            try:
                self._queue.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                continue
        self._thread.join(timeout)

    def __enter__(self) -> "Recorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            if not self._closed:
                self.close(timeout=5)
        except Exception:
            pass

    # ------------------------------------------------------------------ writer thread
    def _run(self) -> None:
        segment: _Segment | None = None
        last_flush = time.monotonic()
        try:
            while True:
                wait = max(0.0, self.flush_interval_s - (time.monotonic() - last_flush))
                try:
                    item = self._queue.get(timeout=wait)
                except queue.Empty:
                    item = None
                stop = item is _STOP
                if item is not None and not stop:
                    frame, recv_ns = item
                    if segment is None:
                        segment = self._open_segment()
                    self._add(segment, frame, recv_ns)
                    if segment.pending_frames >= self.block_frames:
                        self._write_block(segment)
                        if self._rotate_due(segment):
                            self._flush(segment)
                            self._close_segment(segment)
                            segment = None
                if stop or time.monotonic() - last_flush >= self.flush_interval_s:
                    last_flush = time.monotonic()
                    if segment is not None and segment.dirty:
                        self._flush(segment)
                    if segment is not None and self._rotate_due(segment):
                        self._close_segment(segment)
                        segment = None
                if stop:
                    break
        except _NoSpace as exc:  # caught before HDF5 saw it: the file is closed cleanly, reason inside
            self._fail(exc, None)
            if segment is not None:
                self._close_after_no_space(segment)
            segment = None
        except Exception as exc:
            self._fail(exc, segment)
            segment = None
        finally:
            if segment is not None:
                try:
                    self._flush(segment)
                    self._close_segment(segment)
                except Exception as exc:
                    self._fail(exc, segment)
            if self._stats["segments"] == 0 and not self._failed:
                # nothing was recorded: still leave a valid, empty recording behind
                try:
                    self._close_segment(self._open_segment())
                except Exception as exc:
                    self._fail(exc, None)

    def _add(self, segment: "_Segment", frame: FrameRecord, recv_ns: int) -> None:
        try:
            prepared = self._prepare(frame)
        except Exception as exc:  # bad input (or an image Pillow cannot encode): drop this frame only
            self._count("dropped_invalid")
            self._error("invalid-frame", exc)
            return
        try:
            segment.add(prepared, recv_ns)
        except _InvalidFrame as exc:
            self._count("dropped_invalid")
            self._error("invalid-frame", exc)

    def _write_block(self, segment: "_Segment", tables: bool = False) -> None:
        _check_space(segment.path, segment.pending_bytes)
        written = segment.write_pending(tables)
        with self._lock:
            self._stats["written"] += written

    def _flush(self, segment: "_Segment") -> None:
        self._write_block(segment, tables=True)
        with self._lock:
            self._stats["flushes"] += 1
            stats = dict(self._stats)
            stats.update({k: dict(v) for k, v in self._extra_stats.items()})
        segment.flush(stats)
        with self._lock:
            self._stats["frames_flushed"] = self._stats["written"]
            self._stats["bytes_written"] = segment.closed_bytes + segment.size()

    def _close_after_no_space(self, segment: "_Segment") -> None:
        lost = len(segment.tables["frames"].rows)  # frames not yet in the frames table
        segment.discard_pending()
        with self._lock:
            self._stats["dropped_stopped"] += lost
        try:
            segment.flush(self.stats)
            self._close_segment(segment)
        except Exception as exc:  # pragma: no cover - the margin should leave room for the metadata
            self._error("close", exc)
            segment.abandon(self.stats)

    def _rotate_due(self, segment: "_Segment") -> bool:
        if self.segment_max_bytes and segment.size() >= self.segment_max_bytes:
            return True
        return bool(self.segment_max_seconds and time.monotonic() - segment.opened >= self.segment_max_seconds)

    @property
    def _rotating(self) -> bool:
        return bool(self.segment_max_bytes or self.segment_max_seconds)

    def _segment_path(self, index: int) -> Path:
        return self.path.with_name(f"{self.path.stem}-{index:05d}{self.path.suffix or '.h5'}")

    def _open_segment(self) -> "_Segment":
        index = self._stats["segments"]
        path = self._segment_path(index) if self._rotating else self.path
        seg = _Segment(path, self, index, self._stats["bytes_written"])
        with self._lock:
            self._stats["segments"] += 1
        return seg

    def _close_segment(self, segment: "_Segment") -> None:
        segment.close()
        with self._lock:
            self._stats["bytes_written"] = segment.closed_bytes + segment.size()

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
            if image.encoding not in IMAGE_ENCODINGS:
                raise _InvalidFrame(f"image encoding {image.encoding!r} is not one of {IMAGE_ENCODINGS}")
            return image  # already encoded upstream
        data = np.asarray(image.data)
        if data.dtype != np.uint8 or data.ndim not in (2, 3) or (data.ndim == 3 and data.shape[2] not in (1, 3, 4)):
            raise _InvalidFrame(f"raw image must be HxW, HxWx3 or HxWx4 uint8, got {data.dtype}{list(data.shape)}")
        rgb = imgs.to_rgb(imgs.downscale(data, self.image_max_size))
        if self.image_format == "raw" or self._pillow_missing:
            return ImageRecord(rgb, image.rect, "raw")
        try:
            return ImageRecord(imgs.encode(rgb, self.image_format, self.image_quality), image.rect, self.image_format)
        except ImportError as exc:
            self._pillow_missing = True
            self._error("pillow-missing", exc)
            return ImageRecord(rgb, image.rect, "raw")

    # ------------------------------------------------------------------ bookkeeping
    def _count(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._stats[key] += 1

    def _error(self, kind: str, exc: BaseException) -> None:
        with self._lock:
            self._stats["errors"] += 1
            self._stats["last_error"] = f"{kind}: {exc}"
            first = kind not in self._error_kinds
            self._error_kinds.add(kind)
        if first:
            log.warning("dsprobe recorder (%s): %s: %s (further errors of this kind are only counted)",
                        self.path, kind, exc)

    def _fail(self, exc: BaseException, segment: "_Segment | None") -> None:
        reason = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._stats["failed_reason"] = reason
            self._stats["errors"] += 1
        self._failed = True
        log.error("dsprobe recorder stopped (%s): %s; frames flushed before this are kept", self.path, reason)
        if segment is not None:  # best effort: keep the reason in the file, then let go of it
            segment.abandon(self.stats)
        while True:  # drain so producers never wait on us
            try:
                if self._queue.get_nowait() is not _STOP:
                    self._count("dropped_stopped")
            except queue.Empty:
                break


class _InvalidFrame(ValueError):
    pass


class _NoSpace(OSError):
    pass


#: Room kept free for HDF5 metadata and closing the file cleanly when judging "disk full".
SPACE_MARGIN_BYTES = 4 << 20


def _check_space(path: Path, pending: int) -> None:
    """Raise _NoSpace when ``pending`` bytes (+ margin) do not fit on the file system or under RLIMIT_FSIZE.

    Checked before every block write so HDF5 never meets ENOSPC/EFBIG mid-write: a failed HDF5 write
    leaves a file that cannot be closed cleanly.
    """
    need = int(pending * 1.05) + SPACE_MARGIN_BYTES
    free = shutil.disk_usage(path.parent).free
    if free < need:
        raise _NoSpace(f"disk full: {free} bytes free on the file system of {path.parent}, "
                       f"a block of {pending} bytes needs {need} with the margin")
    try:
        import resource
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):  # pragma: no cover - non-POSIX
        return
    if limit != resource.RLIM_INFINITY:
        size = path.stat().st_size if path.exists() else 0
        if size + need > limit:
            raise _NoSpace(f"file size limit: {path} is {size} bytes, RLIMIT_FSIZE is {limit}, "
                           f"a block of {pending} bytes needs {need} with the margin")


class _Segment:
    """One HDF5 file being written: row buffers and block writes."""

    def __init__(self, path: Path, rec: Recorder, index: int, closed_bytes: int) -> None:
        self.path = path
        self.rec = rec
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
        a["recording_id"] = rec.recording_id
        a["segment_index"] = index
        a["notes"] = rec.notes if isinstance(rec.notes, str) else json.dumps(jsonable(rec.notes or {}))
        a["recorder_options"] = json.dumps(rec.options)
        a["software"] = json.dumps({"h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version,
                                    "numpy": np.__version__})
        a["stats"] = "{}"
        a["frames_committed"] = 0
        a["closed_cleanly"] = False
        gies = self.f.create_group("gies")
        for uid, cfg in rec.configs.items():
            g = gies.create_group(str(uid))
            g.attrs["config_text"] = cfg.text
            g.attrs["config_path"] = cfg.path or ""
            g.attrs["config_json"] = json.dumps(cfg.to_dict())
        self.tables = {name: _Table(self.f, name, cols) for name, cols in
                       (("frames", FRAME_COLUMNS), ("objects", OBJECT_COLUMNS),
                        ("detections", OBJECT_COLUMNS), ("images", IMAGE_COLUMNS))}
        self.image_data = _ByteStore(self.f, "images/data")
        self.image_bytes = 0
        self.layer_sets: dict[tuple[str, int, str], _LayerSet] = {}
        self.layer_names: dict[tuple[str, int], frozenset] = {}
        self.pending_images: list[np.ndarray] = []
        self.pending_frames = 0
        self.pending_bytes = 0
        self.dirty = False
        self.f.flush()
        os.replace(creating, path)

    def add(self, frame: FrameRecord, recv_ns: int) -> None:
        """Buffer one frame's rows; raises _InvalidFrame (before buffering anything) on bad input."""
        _check_fields(frame)
        self._check_layers("layers", frame.unique_id, frame.layers, frame)
        for o in frame.objects:
            self._check_layers("object_layers", frame.unique_id, o.layers, frame)
        images = [_image_payload(frame.image)] + [_image_payload(o.image) for o in frame.objects]
        frame_row = self.tables["frames"].count
        layer_row = self._add_layers("layers", frame.unique_id, frame.layers)
        image_row = self._add_image(frame_row, frame.image, images[0])
        obj_start = self.tables["objects"].count
        for o, payload in zip(frame.objects, images[1:]):
            self._add_object("objects", frame_row, o, self._add_layers("object_layers", frame.unique_id, o.layers),
                             self._add_image(frame_row, o.image, payload))
        det_start = self.tables["detections"].count
        for d in frame.detections:
            self._add_object("detections", frame_row, d, -1, -1)
        self.tables["frames"].append({
            "source_id": frame.source_id, "frame_num": frame.frame_num, "pts_ns": _int64(frame.pts_ns),
            "ntp_timestamp": _int64(frame.ntp_timestamp), "unique_id": frame.unique_id, "batch_id": frame.batch_id,
            "pad_index": frame.pad_index, "network_size": tuple(frame.network_size),
            "frame_size": tuple(frame.frame_size), "recv_time_ns": recv_ns, "layer_row": layer_row,
            "image_row": image_row, "object_start": obj_start, "object_count": len(frame.objects),
            "detection_start": det_start, "detection_count": len(frame.detections)})
        self.pending_frames += 1
        self.pending_bytes += 256 * (1 + len(frame.objects) + len(frame.detections)) + sum(
            a.nbytes for a in frame.layers.values()) + sum(
            a.nbytes for o in frame.objects for a in o.layers.values()) + sum(
            p[0].size for p in images if p is not None)
        self.dirty = True

    def _check_layers(self, group: str, uid: int, layers: Mapping[str, np.ndarray], frame: FrameRecord) -> None:
        if not layers:
            return
        where = f"GIE {uid}, source {frame.source_id}, frame {frame.frame_num}"
        known = self.layer_names.setdefault((group, uid), frozenset(layers))
        if frozenset(layers) != known:
            raise _InvalidFrame(f"{where}: layers {sorted(layers)} differ from the recording's {sorted(known)}; "
                                "record a fixed set of layers per GIE (Recorder(layers=...)); frame dropped")
        for name, arr in layers.items():
            if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiub":
                raise _InvalidFrame(f"{where}: layer {name!r} is not a numeric numpy array "
                                    f"({type(arr).__name__} {getattr(arr, 'dtype', '')}); frame dropped")
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
                ls = self.layer_sets[key] = _LayerSet(self.f, group, uid, name, arr, self.rec.compression)
            row = ls.append(arr)
        return row

    def _add_image(self, frame_row: int, image: ImageRecord | None, payload: tuple | None) -> int:
        if image is None or payload is None:
            return -1
        data, shape = payload
        self.pending_images.append(data)
        offset, self.image_bytes = self.image_bytes, self.image_bytes + data.size
        return self.tables["images"].append({"frame_row": frame_row, "offset": offset, "nbytes": data.size,
                                             "rect": tuple(image.rect), "shape": shape,
                                             "encoding": IMAGE_ENCODINGS.index(image.encoding)})

    def _add_object(self, table: str, frame_row: int, o: ObjectRecord, layer_row: int, image_row: int) -> None:
        self.tables[table].append({
            "frame_row": frame_row, "rect": tuple(o.rect), "class_id": o.class_id, "confidence": o.confidence,
            "object_id": o.object_id, "unique_component_id": o.unique_component_id,
            "parent_index": o.parent_index, "parent_object_id": o.parent_object_id,
            "label": _label_bytes(o.label), "layer_row": layer_row, "image_row": image_row})

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
        if not (tables or len(frames.rows) >= TABLE_BLOCK_FRAMES):
            return 0
        n = len(frames.rows)
        for name in ("objects", "detections", "images", "frames"):  # frames last: they point at the rest
            self.tables[name].write()
        return n

    def discard_pending(self) -> None:
        """Forget buffered rows (used when there is no room left to write them)."""
        for t in self.tables.values():
            t.count -= len(t.rows)
            t.rows = []
        for ls in self.layer_sets.values():
            ls.count -= len(ls.pending)
            ls.pending = []
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


#: table rows (frames, objects, detections, images) are written once this many frames wait, or at a flush
TABLE_BLOCK_FRAMES = 256


class _Table:
    """A group of equal-length column datasets, appended in blocks."""

    def __init__(self, f: h5py.File, name: str, columns: Mapping[str, tuple[str, tuple[int, ...]]]) -> None:
        g = f.require_group(name)
        self.ds = {c: g.create_dataset(c, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                                       chunks=table_chunks(dtype, shape)) for c, (dtype, shape) in columns.items()}
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


class _ByteStore:
    """A 1-D uint8 dataset appended in whole chunks: full chunks go straight to the file
    (``write_direct_chunk``, no cache copy); the unfinished last chunk is kept in a buffer and its new
    bytes are written normally so that a flush puts them on disk."""

    def __init__(self, f: h5py.File, name: str, chunk: int = IMAGE_CHUNK_BYTES) -> None:
        self.ds = f.create_dataset(name, shape=(0,), maxshape=(None,), chunks=(chunk,), dtype=np.uint8)
        self.chunk = chunk
        self.tail = np.zeros(chunk, np.uint8)  # bytes of the unfinished last chunk
        self.tail_len = 0                      # of which this many are valid
        self.tail_written = 0                  # and this many are already in the file
        self.size = 0

    def extend(self, payloads: list[np.ndarray]) -> None:
        total = self.size + sum(int(p.size) for p in payloads)
        self.ds.resize((total,))
        for p in payloads:
            pos, n = 0, int(p.size)
            while pos < n:
                if self.tail_len == 0 and n - pos >= self.chunk:  # a whole chunk straight from the payload
                    self.ds.id.write_direct_chunk((self.size,), p[pos:pos + self.chunk])
                    k = self.chunk
                else:
                    k = min(self.chunk - self.tail_len, n - pos)
                    self.tail[self.tail_len:self.tail_len + k] = p[pos:pos + k]
                    self.tail_len += k
                    if self.tail_len == self.chunk:
                        self.ds.id.write_direct_chunk((self.size + k - self.chunk,), self.tail)
                        self.tail_len = self.tail_written = 0
                pos += k
                self.size += k
        if self.tail_len > self.tail_written:  # the new bytes of the unfinished chunk
            start = self.size - self.tail_len
            self.ds[start + self.tail_written:self.size] = self.tail[self.tail_written:self.tail_len]
            self.tail_written = self.tail_len


class _LayerSet:
    """One layer's dataset: (rows, *shape) with its true dtype, chunks of whole frames (~1 MiB)."""

    def __init__(self, f: h5py.File, group: str, uid: int, name: str, first: np.ndarray,
                 compression: str | None) -> None:
        self.shape, self.dtype = first.shape, first.dtype.newbyteorder("=")
        chunks = layer_chunks(first.shape, first.dtype)
        opts = compression_options(compression, first.dtype.itemsize) if chunks else {}
        self.ds = f.create_dataset(f"{group}/{uid}/{hdf5_name(name)}", shape=(0, *first.shape),
                                   maxshape=(None, *first.shape), dtype=self.dtype, chunks=chunks, **opts)
        self.ds.attrs["layer_name"] = name
        self.ds.attrs["unique_id"] = uid
        self.rows_per_chunk = chunks[0] if chunks else 1
        # one row per chunk and no filters: write chunks directly (as fast as a plain file write)
        self.direct = bool(chunks) and self.rows_per_chunk == 1 and not opts
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
        if self.direct:  # big uncompressed frames: each row is one whole chunk, handed to HDF5 as it is
            zeros = (0,) * len(self.shape)
            for i, arr in enumerate(self.pending):
                self.ds.id.write_direct_chunk((n0 + i, *zeros), np.ascontiguousarray(arr, dtype=self.dtype))
        elif self.rows_per_chunk == 1:  # big compressed frames: one chunk per row, no stacking copy
            for i, arr in enumerate(self.pending):
                self.ds[n0 + i] = arr
        else:
            self.ds[n0:self.count] = np.stack(self.pending)
        self.pending = []


def _check_fields(frame: FrameRecord) -> None:
    """Reject a frame whose scalar fields would not fit the tables (before anything is buffered)."""
    where = f"source {frame.source_id}, frame {frame.frame_num}"
    try:
        for name, value, n in (("network_size", frame.network_size, 3), ("frame_size", frame.frame_size, 2)):
            if len(value) != n:
                raise ValueError(f"{name} needs {n} values, got {value!r}")
        for kind, objs in (("object", frame.objects), ("detection", frame.detections)):
            for i, o in enumerate(objs):
                if len(o.rect) != 4:
                    raise ValueError(f"{kind} {i}: rect needs (left, top, width, height), got {o.rect!r}")
                float(o.confidence), int(o.class_id), int(o.object_id), int(o.parent_object_id)
        int(frame.source_id), int(frame.frame_num), int(frame.pts_ns), int(frame.unique_id)
    except (TypeError, ValueError) as exc:
        raise _InvalidFrame(f"{where}: {exc}; frame dropped") from None


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
