"""dsprobe: record DeepStream tensor output, replay and tune postprocessing, export it back live.

The core (records, recordings, postprocess, export) needs numpy, h5py and pandas only; heavier
parts import their dependencies when used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "FrameRecord": "dsprobe.records",
    "ObjectRecord": "dsprobe.records",
    "ImageRecord": "dsprobe.records",
    "UNTRACKED_OBJECT_ID": "dsprobe.records",
    "Detections": "dsprobe.detections",
    "Recorder": "dsprobe.recording.writer",
    "Recording": "dsprobe.recording.reader",
    "open_recording": "dsprobe.recording.reader",
    "NvinferConfig": "dsprobe.nvinfer.config",
    "load_nvinfer_config": "dsprobe.nvinfer.config",
    "Postprocess": "dsprobe.postprocess.pipeline",
    "classifier_postprocess": "dsprobe.postprocess.sgie",
    "embedding_postprocess": "dsprobe.postprocess.sgie",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dsprobe' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
