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
    "RecorderOptions": "dsprobe.recording.options",
    "Recording": "dsprobe.recording.reader",
    "open_recording": "dsprobe.recording.reader",
    "RecordingSet": "dsprobe.recording.recording_set",
    "open_recordings": "dsprobe.recording.recording_set",
    "replay_set": "dsprobe.analysis.sets",
    "evaluate_set": "dsprobe.analysis.sets",
    "search_set": "dsprobe.analysis.sets",
    "compare_sets": "dsprobe.analysis.sets",
    "NvinferConfig": "dsprobe.nvinfer.config",
    "load_nvinfer_config": "dsprobe.nvinfer.config",
    "Postprocess": "dsprobe.postprocess.pipeline",
    "record_onnx": "dsprobe.reference.recorder",
    "ParamSpec": "dsprobe.postprocess.params",
    "Range": "dsprobe.postprocess.params",
    # analysis: scoring, errors, objectives, search, export
    "load_ground_truth": "dsprobe.analysis.evaluate",
    "ground_truth_from_detections": "dsprobe.analysis.evaluate",
    "evaluate": "dsprobe.analysis.evaluate",
    "error_table": "dsprobe.analysis.errors",
    "error_runs": "dsprobe.analysis.errors",
    "confusion_matrix": "dsprobe.analysis.errors",
    "OBJECTIVES": "dsprobe.analysis.objectives",
    "objective": "dsprobe.analysis.objectives",
    "search": "dsprobe.analysis.search",
    "Reclusterer": "dsprobe.analysis.search",
    "search_objectives": "dsprobe.analysis.operating",
    "to_nvinfer": "dsprobe.analysis.export",
    "classifier_postprocess": "dsprobe.postprocess.sgie",
    "embedding_postprocess": "dsprobe.postprocess.sgie",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __dir__() -> list[str]:
    """The lazy exports too, so ``dir(dsprobe)`` and tab completion list them."""
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dsprobe' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
