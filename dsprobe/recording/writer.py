"""The Recorder: accepts FrameRecords from any thread, writes them to HDF5 on a background thread.

``record()`` never blocks and never raises: frames go into a bounded queue and are dropped (and
counted) when it is full. The writer thread downscales/encodes images, buffers rows, appends them in
blocks and flushes the file at least every ``flush_interval_s``; after a crash (``kill -9``) the file
holds every frame up to the last flush (docs/recording-format.md, "Measured HDF5 behaviour"). An I/O error
(disk full...) stops the recorder: the reason is logged and kept in :attr:`Recorder.stats`, the
caller carries on and later frames are counted as ``dropped_stopped``.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from dsprobe.nvinfer.config import configs_by_unique_id
from dsprobe.recording import images as imgs
from dsprobe.recording.rate_limiter import RateLimiter
from dsprobe.recording.schema import IMAGE_ENCODINGS, compression_options, jsonable
from dsprobe.recording.segment import _check_space, _InvalidFrame, _NoSpace, _Segment
from dsprobe.records import FrameRecord, ImageRecord

log = logging.getLogger("dsprobe.recorder")
_STOP = object()


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

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        nvinfer_config: Any = None,
        layers: Iterable[str] | None = None,
        every_n: int = 1,
        max_fps: float | None = None,
        images: bool = True,
        image_max_size: int = 640,
        image_format: str = "jpeg",
        segment_max_bytes: int | None = None,
        segment_max_seconds: float | None = None,
        flush_interval_s: float = 1.0,
        block_frames: int = 16,
        queue_size: int = 64,
        drop_when_full: bool = True,
        compression: str | None = None,
        image_quality: int = 90,
        notes: Any = None,
    ) -> None:
        if image_format not in IMAGE_ENCODINGS:
            raise ValueError(f"image_format must be one of {IMAGE_ENCODINGS}, got {image_format!r}")
        compression_options(
            compression
        )  # validates the name (and that hdf5plugin is there if needed)
        if flush_interval_s <= 0:
            raise ValueError(f"flush_interval_s must be > 0, got {flush_interval_s}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.configs = configs_by_unique_id(nvinfer_config)
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
        self.options = {
            "layers": sorted(self.layers) if self.layers is not None else None,
            "every_n": every_n,
            "max_fps": max_fps,
            "images": images,
            "image_max_size": image_max_size,
            "image_format": image_format,
            "segment_max_bytes": segment_max_bytes,
            "segment_max_seconds": segment_max_seconds,
            "flush_interval_s": flush_interval_s,
            "block_frames": self.block_frames,
            "queue_size": queue_size,
            "drop_when_full": drop_when_full,
            "compression": compression,
        }
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._lock = threading.Lock()
        self._stats: dict[str, Any] = {
            "received": 0,
            "queued": 0,
            "written": 0,
            "frames_flushed": 0,
            "dropped_queue_full": 0,
            "dropped_rate_limited": 0,
            "dropped_stopped": 0,
            "dropped_invalid": 0,
            "errors": 0,
            "flushes": 0,
            "segments": 0,
            "bytes_written": 0,
            "failed_reason": None,
            "last_error": None,
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
                log.warning(
                    "dsprobe recorder (%s): queue full, dropping frames (the writer cannot keep up; "
                    "see stats['dropped_queue_full'])",
                    self.path,
                )
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
    def _run(self) -> None:  # noqa: C901 (to be split)
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
        except (
            _NoSpace
        ) as exc:  # caught before HDF5 saw it: the file is closed cleanly, reason inside
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
        except (
            Exception
        ) as exc:  # bad input (or an image Pillow cannot encode): drop this frame only
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
        lost = len(segment.tables["frames"].pending)  # frames not yet in the frames table
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
        return bool(
            self.segment_max_seconds
            and time.monotonic() - segment.opened >= self.segment_max_seconds
        )

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

        objects = [replace(o, layers=sel(o.layers), image=img(o.image)) for o in frame.objects]
        return replace(frame, layers=sel(frame.layers), objects=objects, image=img(frame.image))

    def _encode_image(self, image: ImageRecord) -> ImageRecord:
        if image.encoding != "raw":
            if image.encoding not in IMAGE_ENCODINGS:
                raise _InvalidFrame(
                    f"image encoding {image.encoding!r} is not one of {IMAGE_ENCODINGS}"
                )
            return image  # already encoded upstream
        data = np.asarray(image.data)
        if (
            data.dtype != np.uint8
            or data.ndim not in (2, 3)
            or (data.ndim == 3 and data.shape[2] not in (1, 3, 4))
        ):
            raise _InvalidFrame(
                f"raw image must be HxW, HxWx3 or HxWx4 uint8, got {data.dtype}{list(data.shape)}"
            )
        rgb = imgs.to_rgb(imgs.downscale(data, self.image_max_size))
        if self.image_format == "raw" or self._pillow_missing:
            return ImageRecord(rgb, image.rect, "raw")
        try:
            return ImageRecord(
                imgs.encode(rgb, self.image_format, self.image_quality),
                image.rect,
                self.image_format,
            )
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
            log.warning(
                "dsprobe recorder (%s): %s: %s (further errors of this kind are only counted)",
                self.path,
                kind,
                exc,
            )

    def _fail(self, exc: BaseException, segment: "_Segment | None") -> None:
        reason = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._stats["failed_reason"] = reason
            self._stats["errors"] += 1
        self._failed = True
        log.error(
            "dsprobe recorder stopped (%s): %s; frames flushed before this are kept",
            self.path,
            reason,
        )
        if segment is not None:  # best effort: keep the reason in the file, then let go of it
            segment.abandon(self.stats)
        while True:  # drain so producers never wait on us
            try:
                if self._queue.get_nowait() is not _STOP:
                    self._count("dropped_stopped")
            except queue.Empty:
                break
