"""The Recorder's writer thread (:class:`WriteLoop`): takes frames off the queue, prepares and buffers
them into the open :class:`~dsprobe.recording.segment.Segment`, writes blocks, flushes at least every
``flush_interval_s``, rotates segments, and on an I/O error stops with the reason kept in the stats."""

from __future__ import annotations

import queue
import time
from pathlib import Path

from dsprobe.recording.options import RecorderOptions
from dsprobe.recording.prepare import FramePreparer
from dsprobe.recording.segment import Segment, SegmentHeader
from dsprobe.recording.space import NoSpace, check_space
from dsprobe.recording.stats import RecorderStats
from dsprobe.records import FrameRecord

#: put on the queue by Recorder.close(): write everything before it, then close the file
STOP = object()


class WriteLoop:
    """The body of the writer thread of one Recorder (``run``)."""

    def __init__(
        self,
        path: Path,
        options: RecorderOptions,
        header: SegmentHeader,
        frames: queue.Queue,
        stats: RecorderStats,
    ) -> None:
        self.path = path
        self.options = options
        self.header = header
        self.queue = frames
        self.stats = stats
        self.prepare = FramePreparer(options, stats)
        self.failed = False
        self.segment: Segment | None = None
        self.last_flush = time.monotonic()

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
            if self.segment is not None:
                self.segment.abandon(self.stats.snapshot())
                self.segment = None
        finally:
            self._finish()

    def _step(self) -> bool:
        """Handle one queue item (or a flush timeout); False once the stop marker came."""
        wait = max(0.0, self.options.flush_interval_s - (time.monotonic() - self.last_flush))
        try:
            item = self.queue.get(timeout=wait)
        except queue.Empty:
            item = None
        stop = item is STOP
        if item is not None and not stop:
            self._take(*item)
        if stop or time.monotonic() - self.last_flush >= self.options.flush_interval_s:
            self.last_flush = time.monotonic()
            seg = self.segment
            if seg is not None and seg.dirty:
                self._flush(seg)
            if seg is not None and self._rotate_due(seg):
                self._close_segment(seg)
        return not stop

    def _take(self, frame: FrameRecord, recv_ns: int) -> None:
        if self.segment is None:
            self.segment = self._open_segment()
        seg = self.segment
        self._add(seg, frame, recv_ns)
        if seg.pending_frames >= self.options.block_frames:
            self._write_block(seg)
            if self._rotate_due(seg):
                self._flush(seg)
                self._close_segment(seg)

    def _finish(self) -> None:
        if self.segment is not None:
            try:
                self._flush(self.segment)
                self._close_segment(self.segment)
            except Exception as exc:
                self._fail(exc)
                self.segment.abandon(self.stats.snapshot())
                self.segment = None
        if self.stats.get("segments") == 0 and not self.failed:
            # nothing was recorded: still leave a valid, empty recording behind
            try:
                self._close_segment(self._open_segment())
            except Exception as exc:
                self._fail(exc)

    # ------------------------------------------------------------------ frames and blocks
    def _add(self, segment: Segment, frame: FrameRecord, recv_ns: int) -> None:
        try:
            segment.add(self.prepare(frame), recv_ns)
        except Exception as exc:  # InvalidFrame, or an image Pillow cannot encode: this frame only
            self.stats.count("dropped_invalid")
            self.stats.error("invalid-frame", exc)

    def _write_block(self, segment: Segment, tables: bool = False) -> None:
        check_space(segment.path, segment.pending_bytes)
        self.stats.count("written", n=segment.write_pending(tables))

    def _flush(self, segment: Segment) -> None:
        self._write_block(segment, tables=True)
        self.stats.count("flushes")
        segment.flush(self.stats.snapshot())
        self.stats.set(
            frames_flushed=self.stats.get("written"),
            bytes_written=segment.closed_bytes + segment.size(),
        )

    def _close_after_no_space(self) -> None:
        segment, self.segment = self.segment, None
        if segment is None:
            return
        lost = len(segment.tables["frames"].pending)  # frames not yet in the frames table
        segment.discard_pending()
        self.stats.count("dropped_stopped", n=lost)
        try:
            segment.flush(self.stats.snapshot())
            self._close_segment(segment)
        except Exception as exc:  # pragma: no cover - the margin should leave room for the metadata
            self.stats.error("close", exc)
            segment.abandon(self.stats.snapshot())

    # ------------------------------------------------------------------ segments
    def _rotate_due(self, segment: Segment) -> bool:
        opts = self.options
        if opts.segment_max_bytes and segment.size() >= opts.segment_max_bytes:
            return True
        return bool(
            opts.segment_max_seconds
            and time.monotonic() - segment.opened >= opts.segment_max_seconds
        )

    def segment_path(self, index: int) -> Path:
        """The file of segment ``index`` (the recording's own path when it is not rotating)."""
        if not self.options.rotating:
            return self.path
        return self.path.with_name(f"{self.path.stem}-{index:05d}{self.path.suffix or '.h5'}")

    def _open_segment(self) -> Segment:
        index = self.stats.get("segments")
        seg = Segment(self.segment_path(index), self.header, index, self.stats.get("bytes_written"))
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
        while True:  # drain so producers never wait on us
            try:
                if self.queue.get_nowait() is not STOP:
                    self.stats.count("dropped_stopped")
            except queue.Empty:
                break
