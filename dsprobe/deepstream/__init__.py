"""The on-device half of dsprobe: pad probes for DeepStream pipelines (pyds imported lazily).

* :func:`attach_recorder` records every NvDsInferTensorMeta (PGIE frame level, SGIE per object),
  frame images and the objects already on the frame into a :class:`dsprobe.Recorder`.
* :func:`attach_postprocess` runs a tuned :class:`dsprobe.Postprocess` live and adds its detections
  as NvDsObjectMeta, so trackers and SGIEs downstream work with them.
"""

from dsprobe.deepstream.live import attach_postprocess, read_vector_user_meta
from dsprobe.deepstream.probe import ProbeHandle, attach_recorder

__all__ = ["attach_recorder", "attach_postprocess", "ProbeHandle", "read_vector_user_meta"]
