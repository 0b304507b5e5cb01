"""Postprocess specs for secondary GIEs without boxes: classifiers and embedding (vector) heads.

Both run per object (the SGIE's tensor meta on ``NvDsObjectMeta``) and return one row per result
with the box = the object's rect (the whole network input mapped back by ``scale:nvinfer``), so the
same Postprocess replays a recording, runs in the reference recorder and in the live probe:

* :func:`classifier_postprocess`: ``decode:classifier`` (nvinfer's rule: best class kept when its
  probability is ``> classifier-threshold``) on the named output layers; ``class_id`` = attribute value,
  ``score`` = its probability, ``vectors[:, 0]`` = the attribute index. Live, the probe turns each row
  into an ``NvDsClassifierMeta`` + ``NvDsLabelInfo`` on the object it ran on.
* :func:`embedding_postprocess`: ``decode:embedding`` (one row, ``vectors`` = the layer, L2-normalised).
"""

from __future__ import annotations

from typing import Sequence

from dsprobe.nvinfer.config import NvinferConfig, as_nvinfer_config
from dsprobe.postprocess.pipeline import Postprocess, Step


def _scale(cfg: NvinferConfig) -> Step:
    pre = cfg.preprocessing
    return Step(
        "scale",
        "nvinfer",
        {
            "maintain_aspect_ratio": pre.maintain_aspect_ratio,
            "symmetric_padding": pre.symmetric_padding,
        },
    )


def classifier_postprocess(
    config: "str | NvinferConfig",
    layer_names: Sequence[str] | None = None,
    classifier_threshold: float | None = None,
    softmax: bool = False,
) -> Postprocess:
    """nvinfer's classifier rule for SGIE ``config`` (path or NvinferConfig) on ``layer_names`` (the
    attribute layers in order; default every layer). ``classifier_threshold`` defaults to the
    config's ``classifier-threshold``; labels are the config's label-file lines, one per attribute,
    values separated by ``;`` (nvinfer's classifier format, what the live probe's
    ``output="classifier"`` names its NvDsLabelInfo from)."""
    cfg = as_nvinfer_config(config)
    thr = cfg.classifier_threshold if classifier_threshold is None else classifier_threshold
    params: dict = {"classifier_threshold": float(thr), "softmax": softmax}
    if layer_names is not None:
        params["layer_names"] = list(layer_names)
    labels = cfg.classifier_labels()
    return Postprocess(
        [Step("decode", "classifier", params), _scale(cfg)],
        labels=[";".join(values) for values in labels],
        geometry=cfg.preprocessing,
    )


def embedding_postprocess(
    config: "str | NvinferConfig", layer: str | None = None, l2_normalize: bool = True
) -> Postprocess:
    """The embedding head of SGIE ``config``: layer ``layer`` (default the only one) as one
    L2-normalised vector per object (``Detections.vectors`` (1, D))."""
    cfg = as_nvinfer_config(config)
    params: dict = {"l2_normalize": l2_normalize}
    if layer is not None:
        params["layer"] = layer
    return Postprocess(
        [Step("decode", "embedding", params), _scale(cfg)],
        labels=["embedding"],
        geometry=cfg.preprocessing,
    )
