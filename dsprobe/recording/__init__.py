"""HDF5 recordings: the format (schema.py, docs/recording-format.md); writing: the Recorder and its
background thread (writer.py), one file being written (segment.py) and its block-written datasets (datasets.py), which frames to keep
(rate_limiter.py); reading: Recording (reader.py), one file opened and checked (segment_reader.py), one
frame read lazily (frame_view.py); ``dsprobe inspect`` (inspect.py)."""

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
