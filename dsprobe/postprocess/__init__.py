"""Pure-numpy postprocessing: decoders, filters, clustering, scaling, and the Postprocess composition."""

from dsprobe.postprocess.pipeline import Postprocess, PostprocessError, Step

__all__ = ["Postprocess", "PostprocessError", "Step"]
