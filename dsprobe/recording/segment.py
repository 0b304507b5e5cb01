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
from typing import Callable, Mapping, Sequence

import h5py
import numpy as np

from dsprobe.nvinfer.config import NvinferConfig
from dsprobe.recording.frame_rows import CHUNK_CACHE_BYTES, FrameRows
from dsprobe.recording.schema import FORMAT_NAME, SCHEMA_VERSION, jsonable
from dsprobe.records import FrameRecord


@dataclass(frozen=True)
class SegmentHeader:
    """What every segment file of one recording stores in its header (same for all segments)."""

    recording_id: str
    notes: str  # free text, or JSON
    options_json: str  # RecorderOptions.to_json() as JSON
    configs: Mapping[int, NvinferConfig]  # gie_unique_id -> config
    labels: Mapping[int, Sequence[str]]  # gie_unique_id -> label file contents read at record time
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
        self.f = h5py.File(creating, "w", rdcc_nbytes=CHUNK_CACHE_BYTES)
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
            g.attrs["labels_json"] = json.dumps(list(header.labels.get(uid, ())))
        self.rows = FrameRows(self.f, header.compression)
        self.dirty = False
        #: bytes handed to HDF5 since the last commit (they may still sit in its chunk cache, not
        #: yet in the file's size)
        self.uncommitted_bytes = 0
        self.unsynced_bytes = 0  # handed to HDF5 since the last writeback was started
        self.f.flush()
        self.fd = self.f.id.get_vfd_handle()
        os.replace(creating, path)

    # ------------------------------------------------------------------ rows
    def add(self, frame: FrameRecord, recv_ns: int) -> None:
        """Buffer one checked frame (all or nothing; InvalidFrame when its layers do not fit)."""
        self.rows.add(frame, recv_ns)
        self.dirty = True

    def add_plain(self, frame: FrameRecord, recv_ns: int) -> bool:
        """Buffer a plain frame of known layers, unchecked (``FrameRows.add_plain``); False,
        nothing buffered, for any other frame (then ``check_frame`` and :meth:`add`)."""
        if self.rows.add_plain(frame, recv_ns):
            self.dirty = True
            return True
        return False

    def block_due(self, block_frames: int, min_bytes: int) -> bool:
        return self.rows.block_due(block_frames, min_bytes)

    @property
    def pending_bytes(self) -> int:
        return self.rows.pending_bytes

    def write_pending(self, tables: bool = True, hold: bool = True) -> int:
        before = self.rows.pending_bytes
        n = self.rows.write_pending(tables, hold)
        written = before - self.rows.pending_bytes
        self.uncommitted_bytes += written
        self.unsynced_bytes += written
        if _WRITEBACK is not None and self.unsynced_bytes >= WRITEBACK_BYTES:
            _WRITEBACK(self.fd, 0, 0, SYNC_FILE_RANGE_WRITE)
            self.unsynced_bytes = 0
        return n

    def discard_pending(self) -> int:
        return self.rows.discard_pending()

    def flush_bytes(self) -> int:
        return self.rows.flush_bytes()

    # ------------------------------------------------------------------ commit, close
    def commit(self, stats: dict) -> None:
        """Make everything written so far visible to readers, in two steps: the data (and the new
        extents) reach the disk first (flush + fsync), then ``frames_committed`` advances (flush +
        fsync). A reader of a file that was not closed trusts ``frames_committed`` only, so a crash or
        a full disk at any point never shows a frame whose data is not on disk."""
        self.f.flush()
        self._fsync()
        self.f.attrs["frames_committed"] = self.rows.tables["frames"].count
        self.f.attrs["stats"] = json.dumps(jsonable(stats))
        self.f.flush()
        self._fsync()
        self.dirty = False
        self.uncommitted_bytes = 0

    def _fsync(self) -> None:
        os.fsync(self.f.id.get_vfd_handle())

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


#: the writeback is started once this many bytes were written since the last start
WRITEBACK_BYTES = 512 << 10
#: sync_file_range(2)'s flag: start writing the range's dirty pages to the disk, do not wait for it
SYNC_FILE_RANGE_WRITE = 2


def _writeback_function() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range`` (Linux), None where there is none."""
    import ctypes

    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    fn.restype = ctypes.c_int
    return fn


#: once WRITEBACK_BYTES were written since the last start, a block write starts the file's dirty
#: pages going to the disk (ctypes releases the GIL), so a commit's fsync waits for the last blocks
#: only, not for everything written since the last commit (a second of recording); errors are left
#: to that fsync to report
_WRITEBACK = _writeback_function()
