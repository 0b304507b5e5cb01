"""Pure-numpy postprocessing: decoders, filters, clustering, scaling, and the Postprocess composition
(``docs/postprocess.md``)."""

from dsprobe.postprocess.pipeline import Postprocess, PostprocessError, Step
from dsprobe.postprocess.registry import ObjectBatch, StepContext, batch_over_objects, register
from dsprobe.postprocess.replay import DecodedRecording

__all__ = [
    "DecodedRecording",
    "ObjectBatch",
    "Postprocess",
    "PostprocessError",
    "Step",
    "StepContext",
    "batch_over_objects",
    "register",
]
