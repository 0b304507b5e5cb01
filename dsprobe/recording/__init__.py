"""HDF5 recordings: the format (schema.py, docs/recording-format.md).

Writing: the Recorder (writer.py) and its options (options.py); its writer thread (write_loop.py) prepares
frames (prepare.py: layer selection, image policy), checks them (validate.py) and the free space
(space.py), and writes one file at a time (segment.py) through block-written datasets (datasets.py);
counters in stats.py, which frames to keep in rate_limiter.py. Reading: Recording (reader.py), one file
opened and checked (segment_reader.py), one frame read lazily (frame_view.py)."""

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
