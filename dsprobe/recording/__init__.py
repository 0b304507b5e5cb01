"""HDF5 recordings: the format (schema.py, docs/recording-format.md), the background writer (writer.py:
the Recorder and its thread; segment.py: one file's datasets and block writes), the reader (reader.py),
``dsprobe inspect`` (inspect.py)."""

from dsprobe.recording.frame_view import FrameView
from dsprobe.recording.reader import LayerInfo, Recording, RecordingError, open_recording
from dsprobe.recording.writer import RateLimiter, Recorder

__all__ = ["FrameView", "LayerInfo", "RateLimiter", "Recorder", "Recording", "RecordingError", "open_recording"]
