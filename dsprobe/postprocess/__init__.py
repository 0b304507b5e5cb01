"""Pure-numpy postprocessing: decoders, filters, clustering, scaling, and the Postprocess composition
(``docs/postprocess.md``)."""

from dsprobe.postprocess.pipeline import Postprocess, PostprocessError, Step
from dsprobe.postprocess.registry import StepContext, register
from dsprobe.postprocess.replay import DecodedRecording

__all__ = ["DecodedRecording", "Postprocess", "PostprocessError", "Step", "StepContext", "register"]
