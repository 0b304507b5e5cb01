"""The Recorder: accepts FrameRecords from any thread, writes them to HDF5 on a background thread.

``record()`` never blocks and never raises: frames go into a bounded queue and are dropped (and
counted) when it is full. The writer thread (write_loop.py) downscales/encodes images, buffers rows,
appends them in blocks and flushes the file at least every ``flush_interval_s``; after a crash
(``kill -9``) the file holds every frame up to the last flush. An I/O error (disk full...) stops the
recorder: the reason is logged and kept in :attr:`Recorder.stats`, the caller carries on and later
frames are counted as ``dropped_stopped``.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import threading
import time
import uuid
import warnings
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from dsprobe.nvinfer.config import NvinferConfig, NvinferConfigError, configs_by_unique_id
from dsprobe.recording.frame_queue import FrameQueue
from dsprobe.recording.options import RecorderOptions
from dsprobe.recording.output import OutputError, OutputLock, config_inputs
from dsprobe.recording.rate_limiter import RateLimiter
from dsprobe.recording.schema import jsonable
from dsprobe.recording.segment import SegmentHeader
from dsprobe.recording.stats import RecorderStats, log
from dsprobe.recording.write_loop import STOP, WriteLoop, segment_path
from dsprobe.recording.writer_process import WriterProcess
from dsprobe.records import FrameRecord


class Recorder:
    """Background HDF5 recorder (see the module docstring).

    * ``path``: the ``.h5`` file; with segment rotation the files are ``<stem>-00000.h5``,
      ``<stem>-00001.h5``... beside it and ``open_recording(path)`` finds them.
    * ``options``: a :class:`RecorderOptions` (what to keep, rate limits, images, segments, flushing,
      queue, compression); single options can also be given as keywords
      (``Recorder(path, every_n=2, images=False)``), applied over ``options``.
    * ``nvinfer_config``: path, text or NvinferConfig, or ``{gie_unique_id: config}`` for several GIEs;
      the text and the parsed config (preprocessing geometry included) are stored in every file.
    * ``notes``: free-form text or JSON-serialisable dict stored with the recording.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        options: RecorderOptions | None = None,
        *,
        nvinfer_config: Any = None,
        notes: Any = None,
        **option_values: Any,
    ) -> None:
        self._closed = True  # until the thread runs (__del__ of a half-made Recorder does nothing)
        self.options = RecorderOptions.build(options, **option_values)
        opts = self.options
        self.path = Path(path)
        self.configs = configs_by_unique_id(nvinfer_config)
        labels = {uid: _labels(cfg, self.path) for uid, cfg in self.configs.items()}  # stored
        self.notes = notes
        self.recording_id = uuid.uuid4().hex
        self.limiter = RateLimiter(opts.every_n, opts.max_fps)
        self._queue = FrameQueue(
            opts.queue_size, wake_at=min(opts.block_frames, opts.queue_size // 2)
        )
        self._stats = RecorderStats(self.path)
        header = SegmentHeader(
            recording_id=self.recording_id,
            notes=notes if isinstance(notes, str) else json.dumps(jsonable(notes or {})),
            options_json=json.dumps(opts.to_json()),
            configs=self.configs,
            labels=labels,
            compression=opts.compression,
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot create its folder: {exc}") from None
        lock = OutputLock(self.path, opts.overwrite, config_inputs(self.configs))
        self._process: WriterProcess | None = None
        try:
            if opts.writer == "process":
                self._process = WriterProcess(self.path, opts, header, self._stats, lock)
            else:
                self._loop = WriteLoop(self.path, opts, header, self._queue, self._stats, lock)
                self._loop.open()
        except OutputError:
            lock.close()
            raise
        except OSError as exc:
            lock.close()
            raise OutputError(f"{self.path}: cannot start the recording: {exc}") from None
        except BaseException:
            lock.close()
            raise
        if self._process is None:
            self._thread = threading.Thread(
                target=self._loop.run, name="dsprobe-recorder", daemon=True
            )
            self._thread.start()
        self._closed = False
        _OPEN.add(self)

    # ------------------------------------------------------------------ caller side (any thread)
    def admit(self, source_id: int, pts_ns: int, unique_id: int = 0) -> bool:
        """Rate-limit decision for one frame; call before copying anything. Counts refusals.

        A caller that uses it passes ``admitted=True`` to :meth:`record` for the frames it admitted.
        """
        with self._stats.lock:
            ok = self.limiter.admit(source_id, pts_ns, unique_id)
            if not ok:
                self._stats.values["received"] += 1
                self._stats.values["dropped_rate_limited"] += 1
        return ok

    def record(self, frame: FrameRecord, *, admitted: bool = False) -> bool:
        """Queue ``frame`` for writing; True if accepted, False if dropped (rate limit, full, stopped).

        Never raises. Never blocks unless the recorder was made with ``drop_when_full=False``.
        The recorder keeps the arrays of ``frame`` (no copy): hand over arrays you no longer change.
        """
        stats = self._stats
        try:
            if not isinstance(frame, FrameRecord):  # the only check on the caller's thread
                stats.count("received", "dropped_invalid")
                stats.error("not-a-frame", TypeError(f"not a FrameRecord: {frame!r:.80}"))
                return False
            if self._closed or self.failed:
                stats.count("received", "dropped_stopped")
                return False
            with stats.lock:  # one lock for the rate limit and the counts (as admit() takes it)
                values = stats.values
                limiter = self.limiter
                if not (
                    admitted
                    or limiter.admits_all
                    or limiter.admit(frame.source_id, frame.pts_ns, frame.unique_id)
                ):
                    values["received"] += 1
                    values["dropped_rate_limited"] += 1
                    return False
                # counted before the put: a KeyboardInterrupt between the two then leaves a count
                # without a frame, which the writer settles when it closes, never a frame without
                # a count
                values["received"] += 1
                values["queued"] += 1
            item = (frame, time.time_ns())
        except Exception as exc:  # never into the caller (fields the rate limiter cannot use)
            stats.count("received", "dropped_invalid")
            stats.error("record", exc)
            return False
        if self._process is not None:
            return self._put_process(item)
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            if not self.options.drop_when_full:
                while not self._put_waiting(item):
                    if self.failed or not self._writer_alive():
                        self._stats.move("queued", "dropped_stopped")
                        return False
                return True
            return self._full()

    def _full(self) -> bool:
        self._stats.move("queued", "dropped_queue_full")
        if self._stats.first("queue-full"):
            where = (
                f"queue_size={self.options.queue_size} frames or the shared-memory ring "
                f"(ring_mib={self.options.ring_mib}) full: raise ring_mib for big frames"
                if self._process is not None
                else f"queue full (queue_size={self.options.queue_size})"
            )
            log.warning(
                "dsprobe recorder (%s): %s, dropping frames (the writer cannot keep up; "
                "see stats['dropped_queue_full'])",
                self.path,
                where,
            )
        return False

    def _put_process(self, item: tuple) -> bool:
        """``writer="process"``: the frame's arrays copied into the ring (never waits unless
        ``drop_when_full=False``)."""
        process = self._process
        assert process is not None
        wait = 0.0005
        while True:
            try:
                ok = process.put(*item)
            except Exception as exc:  # a frame no writer could store (cannot be pickled, or
                # bigger than the whole ring: TooBig names ring_mib)
                self._stats.move("queued", "dropped_invalid")
                self._stats.error("invalid-frame", exc)
                return False
            if ok:
                return True
            if ok is None:  # closed meanwhile (another thread)
                self._stats.move("queued", "dropped_stopped")
                return False
            if self.options.drop_when_full:
                return self._full()
            if self.failed or not self._writer_alive():
                self._stats.move("queued", "dropped_stopped")
                return False
            time.sleep(wait)  # offline recorders: the writer frees room as it writes
            wait = min(2 * wait, 0.01)

    @contextmanager
    def frame_memory(self) -> Iterator[Callable[[tuple, Any], np.ndarray | None] | None]:
        """For a probe that copies a frame's arrays out of DeepStream's buffers: with
        ``writer="process"``, ``alloc(shape, dtype)`` gives arrays in the writer's shared memory
        (None when there is no room: make your own), and a frame recorded inside the block with
        them goes to the writer without another copy. Use them only in that frame's record; a
        ``record()`` from another thread waits for the block. With the thread writer: None."""
        if self._process is None or self._closed:
            yield None
            return
        with self._process.producer.frame_memory() as alloc:
            yield alloc

    def _put_waiting(self, item: tuple) -> bool:
        try:
            self._queue.put(item, timeout=0.5)
            return True
        except queue.Full:
            return False

    def _writer_alive(self) -> bool:
        return self._process.is_alive() if self._process else self._thread.is_alive()

    def update_stats(self, section: str, values: Mapping[str, Any]) -> None:
        """Merge ``values`` into stats section ``section`` (stored in the recording at each flush)."""
        self._stats.update_section(section, values)

    @property
    def stats(self) -> dict[str, Any]:
        """Counters (received, queued, written, frames_flushed (safe on disk), dropped_*, errors,
        flushes, segments, bytes_written, failed_reason, last_error), ``writer_cpu_s`` (CPU seconds
        the writer has used, as of its last flush), ``queue_depth`` and the sections given to
        :meth:`update_stats`."""
        out = self._stats.snapshot()
        if self._process is not None:
            out = self._process.merged_stats(out)
        out["queue_depth"] = (self._process or self._queue).qsize()
        return out

    # what a probe asks so it copies no more than the recorder keeps
    @property
    def layers(self) -> frozenset[str] | None:
        """The layer names kept (None: all)."""
        return frozenset(self.options.layers) if self.options.layers is not None else None

    @property
    def images(self) -> bool:
        """True when frame pictures and crops are kept."""
        return self.options.images

    @property
    def image_max_size(self) -> int:
        """Longest side (pixels) of stored pictures."""
        return self.options.image_max_size

    @property
    def failed(self) -> bool:
        """True once an I/O error (or the writer process's death) stopped the recorder (reason in
        ``stats['failed_reason']``)."""
        return self._process.failed if self._process else self._loop.failed

    @property
    def writer_pid(self) -> int | None:
        """The writer process's id (``writer="process"``), None when the writer is a thread."""
        return self._process.proc.pid if self._process else None

    @property
    def paths(self) -> list[Path]:
        """The files written so far (one, or the segments)."""
        n = max(1, self.stats["segments"])
        return [segment_path(self.path, self.options, i) for i in range(n)]

    def close(self, timeout: float | None = None) -> None:
        """Write and flush everything queued, then close the file(s). Safe to call twice."""
        if self._closed:
            self._join(timeout)
            return
        self._closed = True
        if self._process is not None:
            self._process.stop()
        while self._process is None and self._thread.is_alive():  # the stop marker must get in
            # even if the queue is full
            try:
                self._queue.put(STOP, timeout=0.1)
                break
            except queue.Full:
                continue
        self._join(timeout)
        if self._process is None and not self._thread.is_alive():  # a frame put while the writer
            self._loop.drain()  # stopped: counted, never left (the process: merged_stats)

    def _join(self, timeout: float | None) -> None:
        if self._process is not None:
            self._process.join(timeout)
        else:
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


def _labels(cfg: NvinferConfig, path: Path) -> list[str]:
    """The config's labels, read now (they are stored in the recording); a label file that cannot
    be read is logged and recorded as no labels (nvinfer itself refuses to start on it)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return cfg.labels()
    except (NvinferConfigError, UserWarning) as exc:
        log.warning("dsprobe recorder (%s): no labels stored: %s", path, exc)
        return []


#: Recorders not closed yet: closed at interpreter exit, so a script that ends (or is stopped with
#: Ctrl-C) without close() still leaves every accepted frame in a cleanly closed file
_OPEN: "weakref.WeakSet[Recorder]" = weakref.WeakSet()
#: the longest interpreter exit waits for one recorder to write what it has
EXIT_TIMEOUT_S = 60.0


@atexit.register
def _close_open_recorders() -> (
    None
):  # pragma: no cover - runs at interpreter exit (tested in a child)
    for rec in list(_OPEN):
        deadline = time.monotonic() + EXIT_TIMEOUT_S
        while True:  # a second Ctrl-C must not leave the writer thread inside HDF5 at teardown
            try:
                rec.close(timeout=max(0.0, deadline - time.monotonic()))
                break
            except KeyboardInterrupt:
                continue
            except Exception:
                break
