"""HDF5 recordings: the format (schema.py, docs/recording-format.md; what is promised under faults:
docs/reliability.md).

Writing: the Recorder (writer.py) and its options (options.py); the output path made safe (output.py:
one writer per path, no overwrite, the lock file with the space reserve); frames reach the writer
through a bounded queue (frame_queue.py); the writer, a thread or a child process fed through a
shared-memory ring (writer_process.py, shm_ring.py), runs write_loop.py, which checks frames (validate.py), prepares them (prepare.py: layer selection, image policy),
checks the free space (space.py) and writes one file at a time (segment.py: header, commit, close)
through its rows (frame_rows.py) and block-written datasets (datasets.py); counters in stats.py, which
frames to keep in rate_limiter.py. Reading: Recording (reader.py), one file opened and checked
(segment_reader.py, file_checks.py: nothing trusted), one frame read lazily (frame_view.py)."""

from dsprobe.recording.frame_view import FrameView
from dsprobe.recording.options import RecorderOptions
from dsprobe.recording.rate_limiter import RateLimiter
from dsprobe.recording.reader import LayerInfo, Recording, RecordingError, open_recording
from dsprobe.recording.writer import Recorder

__all__ = [
    "FrameView",
    "LayerInfo",
    "RateLimiter",
    "Recorder",
    "RecorderOptions",
    "Recording",
    "RecordingError",
    "open_recording",
]
