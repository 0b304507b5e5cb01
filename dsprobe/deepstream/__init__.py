"""The on-device half of dsprobe: pad probes for DeepStream pipelines (pyds imported lazily).

* :func:`attach_recorder` records every NvDsInferTensorMeta (PGIE frame level, SGIE per object),
  frame images, the objects already on the frame and their classifier meta into a
  :class:`dsprobe.Recorder` (options: :class:`RecorderProbeOptions`).
* :func:`attach_postprocess` runs a tuned :class:`dsprobe.Postprocess` live and adds its output:
  NvDsObjectMeta for detectors (so trackers and SGIEs downstream work with them), or
  NvDsClassifierMeta on the object for SGIE classifiers (``output="classifier"``); options:
  :class:`PostprocessProbeOptions`.
* :func:`add_object`, :func:`add_classifier_meta`, :func:`read_vector_user_meta`: the meta writers
  the live probe uses, for your own probes.
* :func:`config_findings`: what ``dsprobe doctor`` reports for a GIE config.
* :func:`read_tensor_meta_device` (experimental): nvinfer's output layers on the GPU as CuPy arrays,
  without a copy, for ``Postprocess.to("cuda")`` (``docs/gpu.md``).
"""

from dsprobe.deepstream.addmeta import (
    ClassifierResult,
    ObjectStyle,
    add_classifier_meta,
    add_object,
    classifier_results,
    read_vector_user_meta,
)
from dsprobe.deepstream.base import ProbeHandle
from dsprobe.deepstream.checks import Finding, config_findings
from dsprobe.deepstream.device_tensors import read_tensor_meta_device
from dsprobe.deepstream.live import PostprocessProbeOptions, attach_postprocess
from dsprobe.deepstream.probe import RecorderProbeOptions, attach_recorder

__all__ = [
    "attach_recorder",
    "attach_postprocess",
    "RecorderProbeOptions",
    "PostprocessProbeOptions",
    "ProbeHandle",
    "ObjectStyle",
    "ClassifierResult",
    "add_object",
    "add_classifier_meta",
    "classifier_results",
    "read_vector_user_meta",
    "read_tensor_meta_device",
    "Finding",
    "config_findings",
]
