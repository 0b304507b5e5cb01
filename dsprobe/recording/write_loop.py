"""The Recorder's writer thread (:class:`WriteLoop`): takes frames off the queue, checks, prepares and
buffers them into the open :class:`~dsprobe.recording.segment.Segment`, writes blocks, commits at
least every ``flush_interval_s``, rotates segments, and stops cleanly when the disk fills (its own
check, before HDF5 sees ENOSPC) or an I/O error happens, with the reason kept in the stats.

Counters always add up: ``received = written + dropped_* + queued`` (``queued``: accepted, not yet
written or dropped)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from dsprobe.recording.frame_queue import FrameSource
from dsprobe.recording.frame_rows import BLOCK_MIN_BYTES
from dsprobe.recording.options import RecorderOptions
from dsprobe.recording.output import OutputLock
from dsprobe.recording.prepare import FramePreparer
from dsprobe.recording.segment import Segment, SegmentHeader
from dsprobe.recording.space import NoSpace, check_space
from dsprobe.recording.stats import RecorderStats
from dsprobe.recording.validate import check_frame
from dsprobe.records import FrameRecord

#: put on the queue by Recorder.close(): write everything before it, then close the file
STOP = object()


def segment_path(path: Path, options: RecorderOptions, index: int) -> Path:
    """The file of segment ``index`` (the recording's own path when it is not rotating)."""
    if not options.rotating:
        return path
    return path.with_name(f"{path.stem}-{index:05d}{path.suffix or '.h5'}")


class WriteLoop:
    """The body of the writer thread of one Recorder (``run``); ``open`` makes the first segment on
    the caller's thread, so a path that cannot be written fails at once."""

    def __init__(
        self,
        path: Path,
        options: RecorderOptions,
        header: SegmentHeader,
        frames: FrameSource,
        stats: RecorderStats,
        lock: OutputLock,
    ) -> None:
        self.path = path
        self.options = options
        self.header = header
        self.queue = frames
        self.stats = stats
        self.lock = lock
        self.prepare = FramePreparer(options, stats)
        self.failed = False
        self.segment: Segment | None = None
        self.last_flush = time.monotonic()
        self.uncommitted = 0  # frames counted as written since the last commit
        self.block_frames = options.block_frames
        # blocks of small frames gather up to 1 MiB, but no more than a quarter of a size-rotated
        # segment: a segment passes its size by less than that (rotation is judged per block)
        self.block_bytes = min(
            BLOCK_MIN_BYTES, (options.segment_max_bytes or BLOCK_MIN_BYTES * 4) // 4
        )
        #: called (on the writer's thread) after every commit, failure and at the end: a writer
        #: process reports its counters to the caller there
        self.report: Callable[[], None] | None = None

    def open(self) -> None:
        self.segment = self._open_segment()

    # ------------------------------------------------------------------ the loop
    def run(self) -> None:
        try:
            while self._step():
                pass
        except (
            NoSpace
        ) as exc:  # caught before HDF5 saw it: the file is closed cleanly, reason inside
            self._fail(exc)
            self._close_after_no_space()
        except Exception as exc:
            self._fail(exc)
            self._close_after_error()
        finally:
            self._finish()

    def _step(self) -> bool:
        """Handle the queued items (waiting for one up to the next flush), then flush if it is due;
        False once the stop marker came."""
        interval = self.options.flush_interval_s
        item = self.queue.get(timeout=max(0.0, interval - (time.monotonic() - self.last_flush)))
        stop = False
        take, pop, clock, due = (
            self._take,
            self.queue.pop,
            time.monotonic,
            self.last_flush + interval,
        )
        while item is not None:
            if item is STOP:
                stop = True
                break
            take(*item)
            if clock() >= due:
                break
            item = pop()
        if stop or time.monotonic() - self.last_flush >= interval:
            self.last_flush = time.monotonic()
            seg = self.segment
            if seg is not None and seg.dirty:
                self._flush(seg)
            if seg is not None and self._rotate_due(seg):
                self._close_segment(seg)
        return not stop

    def _take(self, frame: FrameRecord, recv_ns: int) -> None:
        seg = self.segment
        if seg is None:
            seg = self.segment = self._open_segment()
        try:
            if not seg.add_plain(frame, recv_ns):  # the common frame, checked as it is buffered
                seg.add(self.prepare(check_frame(frame)), recv_ns)
        except Exception as exc:  # InvalidFrame, or an image Pillow cannot encode: this frame only
            self._invalid(exc)
            return
        pressed = self.queue.pressed()  # the ring wants its memory back: write all, hold nothing
        if pressed or seg.block_due(self.block_frames, self.block_bytes):
            self._write_block(seg, hold=not pressed)
            if self._rotate_due(seg):
                self._flush(seg)
                self._close_segment(seg)

    def _finish(self) -> None:
        try:
            self._settle()
            if self.segment is not None:
                try:
                    self._flush(self.segment)
                    self._close_segment(self.segment)
                except NoSpace as exc:
                    self._fail(exc)
                    self._close_after_no_space()
                except Exception as exc:
                    self._fail(exc)
                    self._close_after_error()
        finally:
            self.drain()
            self.lock.close()
            self._report()

    # ------------------------------------------------------------------ frames and blocks
    def _invalid(self, exc: Exception) -> None:
        self.stats.count("dropped_invalid")
        self.stats.count("queued", n=-1)
        self.stats.error("invalid-frame", exc)

    def _write_block(self, segment: Segment, tables: bool = False, hold: bool = True) -> None:
        check_space(segment.path, segment.pending_bytes, segment.flush_bytes())
        # a segment rotated by size is judged on its file's size after each block: nothing held back
        n = segment.write_pending(tables, hold=hold and not self.options.segment_max_bytes)
        if n:
            self.uncommitted += n
            with self.stats.lock:
                self.stats.values["written"] += n
                self.stats.values["queued"] -= n

    def _flush(self, segment: Segment) -> None:
        self._write_block(segment, tables=True)
        self.stats.count("flushes")
        self.stats.set(writer_cpu_s=time.thread_time())
        segment.commit(self.stats.snapshot())
        self.uncommitted = 0
        self.stats.set(
            frames_flushed=self.stats.get("written"),
            bytes_written=segment.closed_bytes + segment.size(),
        )
        self._report()

    def _report(self) -> None:
        if self.report is not None:
            self.report()

    def _close_after_no_space(self) -> None:
        """The own space check said no: forget what is buffered, commit what is written (the room
        for it was checked), close cleanly; the reserve is given back for this."""
        segment, self.segment = self.segment, None
        if segment is None:
            return
        self.lock.release_reserve()
        self._lost(segment.discard_pending(), written=0)
        try:
            segment.commit(self.stats.snapshot())
            self.uncommitted = 0
            self.stats.set(frames_flushed=self.stats.get("written"))
            self._close_segment(segment)
        except Exception as exc:  # pragma: no cover - the reserve leaves room for the metadata
            self.stats.error("close", exc)
            self._close_after_error(segment)

    def _close_after_error(self, segment: Segment | None = None) -> None:
        """HDF5 met an I/O error (the disk filled from outside, EFBIG...): after a failed write HDF5
        may drop the data it could not write, so nothing more is written: the file is let go as
        the last commit left it, where ``frames_committed`` names only frames whose data reached the
        disk (a reader reads those). The frames written since are counted as lost."""
        segment = segment or self.segment
        self.segment = None
        if segment is None:
            return
        self.lock.release_reserve()
        self._lost(segment.discard_pending(), written=self.uncommitted)
        self.uncommitted = 0
        segment.abandon(self.stats.snapshot())

    def _settle(self) -> None:
        """At close: counts of frames that never reached the queue (an interrupt between record()'s
        count and its put) become dropped_stopped, so ``queued`` ends at 0."""
        in_flight = (self.segment.rows.frames_pending if self.segment else 0) + self.queue.qsize()
        with self.stats.lock:
            ghosts = self.stats.values["queued"] - in_flight
            if ghosts > 0:
                self.stats.values["queued"] -= ghosts
                self.stats.values["dropped_stopped"] += ghosts

    def _lost(self, pending: int, written: int) -> None:
        with self.stats.lock:
            v = self.stats.values
            v["dropped_stopped"] += pending + written
            v["queued"] -= pending
            v["written"] -= written

    # ------------------------------------------------------------------ segments
    def _rotate_due(self, segment: Segment) -> bool:
        opts = self.options
        if (
            opts.segment_max_bytes
            and segment.size() + segment.uncommitted_bytes >= opts.segment_max_bytes
        ):
            return True
        return bool(
            opts.segment_max_seconds
            and time.monotonic() - segment.opened >= opts.segment_max_seconds
        )

    def segment_path(self, index: int) -> Path:
        return segment_path(self.path, self.options, index)

    def _open_segment(self) -> Segment:
        index = self.stats.get("segments")
        path = self.segment_path(index)
        check_space(path, 0, 0)
        seg = Segment(path, self.header, index, self.stats.get("bytes_written"))
        self.stats.count("segments")
        return seg

    def _close_segment(self, segment: Segment) -> None:
        if segment is self.segment:
            self.segment = None
        segment.close()
        self.stats.set(bytes_written=segment.closed_bytes + segment.size())

    # ------------------------------------------------------------------ failure
    def _fail(self, exc: BaseException) -> None:
        self.stats.fail(exc)
        self.failed = True
        self.drain()  # so producers never wait on us
        self._report()

    def drain(self) -> None:
        """Count the frames still queued (the writer has stopped) as dropped_stopped."""
        while True:
            item = self.queue.pop()
            if item is None:
                break
            if item is not STOP:
                self._lost(1, written=0)
