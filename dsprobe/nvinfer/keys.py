"""nvinfer's config keys as dsprobe reads them: for each ``[property]`` and ``[class-attrs-*]`` key, the
field it sets (``pre.`` fields belong to the preprocessing) and how its text value is parsed
(ints allow 0x, lists split on ``;`` or ``,``, booleans are 0/1/true/false/yes/no)."""

from __future__ import annotations

import re
from typing import Any, Callable


def _int(v: str) -> int:
    return int(v.strip(), 0) if v.strip().lower().startswith("0x") else int(v.strip())


def _float(v: str) -> float:
    return float(v.strip())


def _bool(v: str) -> bool:
    s = v.strip().lower()
    if s in ("1", "true", "yes"):
        return True
    if s in ("0", "false", "no"):
        return False
    raise ValueError(f"expected 0/1/true/false, got {v!r}")


def _str(v: str) -> str:
    return v.strip().strip('"').strip("'")


def _list(conv: Callable[[str], Any]) -> Callable[[str], tuple]:
    def parse(v: str) -> tuple:
        return tuple(conv(p) for p in re.split(r"[;,]", v.strip().strip("[]")) if p.strip())

    return parse


# key -> (field on NvinferConfig / Preprocessing, converter). Fields prefixed "pre." go to Preprocessing.
PROPERTY_KEYS: dict[str, tuple[str | None, Callable[[str], Any]]] = {
    "gie-unique-id": ("gie_unique_id", _int),
    "process-mode": ("process_mode", _int),
    "operate-on-gie-id": ("operate_on_gie_id", _int),
    "operate-on-class-ids": ("operate_on_class_ids", _list(_int)),
    "network-type": ("network_type", _int),
    "network-mode": ("network_mode", _int),
    "output-tensor-meta": ("output_tensor_meta", _bool),
    "num-detected-classes": ("num_detected_classes", _int),
    "cluster-mode": ("cluster_mode", _int),
    "filter-out-class-ids": ("filter_out_class_ids", _list(_int)),
    "crop-objects-to-roi-boundary": ("crop_objects_to_roi_boundary", _bool),
    "classifier-threshold": ("classifier_threshold", _float),
    "segmentation-threshold": ("segmentation_threshold", _float),
    "input-object-min-width": ("input_object_min_width", _int),
    "input-object-min-height": ("input_object_min_height", _int),
    "input-object-max-width": ("input_object_max_width", _int),
    "input-object-max-height": ("input_object_max_height", _int),
    "batch-size": ("batch_size", _int),
    "interval": ("interval", _int),
    "labelfile-path": ("labelfile_path", _str),
    "onnx-file": ("onnx_file", _str),
    "model-engine-file": ("model_engine_file", _str),
    "output-blob-names": ("output_blob_names", _list(_str)),
    "parse-bbox-func-name": ("parse_bbox_func_name", _str),
    "custom-lib-path": ("custom_lib_path", _str),
    "net-scale-factor": ("pre.net_scale_factor", _float),
    "offsets": ("pre.offsets", _list(_float)),
    "model-color-format": ("pre.model_color_format", _int),
    "network-input-order": ("pre.network_input_order", _int),
    "maintain-aspect-ratio": ("pre.maintain_aspect_ratio", _bool),
    "symmetric-padding": ("pre.symmetric_padding", _bool),
    "scaling-filter": ("pre.scaling_filter", _int),
    "scaling-compute-hw": ("pre.scaling_compute_hw", _int),
    "mean-file": ("pre.mean_file", _str),
    "infer-dims": ("infer_dims", _list(_int)),
    "uff-input-dims": ("uff_input_dims", _list(_int)),
    "input-dims": ("uff_input_dims", _list(_int)),
    "enable-dbscan": ("enable_dbscan", _bool),
    # Known keys that dsprobe reads as text only (kept in .properties).
    **{
        k: (None, _str)
        for k in (
            "gpu-id",
            "model-file",
            "proto-file",
            "int8-calib-file",
            "uff-file",
            "tlt-encoded-model",
            "tlt-model-key",
            "uff-input-blob-name",
            "uff-input-order",
            "output-io-formats",
            "layer-device-precision",
            "is-classifier",
            "classifier-async-mode",
            "classifier-type",
            "secondary-reinfer-interval",
            "output-instance-mask",
            "parse-bbox-instance-mask-func-name",
            "parse-classifier-func-name",
            "engine-create-func-name",
            "enable-dla",
            "use-dla-core",
            "segmentation-output-order",
            "workspace-size",
            "force-implicit-batch-dim",
            "input-tensor-from-meta",
            "disable-output-host-copy",
            "dump-input-tensor",
            "dump-output-tensor",
            "tensor-meta-pool-size",
            "custom-network-config",
            "model-file-format",
            "infer-raw-output-dir",
            "gpu-memory-type",
            "clip-object-outside-roi",
        )
    },
}

CLASS_KEYS: dict[str, tuple[str | None, Callable[[str], Any]]] = {
    "pre-cluster-threshold": ("pre_cluster_threshold", _float),
    "threshold": ("pre_cluster_threshold", _float),  # deprecated alias
    "post-cluster-threshold": ("post_cluster_threshold", _float),
    "eps": ("eps", _float),
    "group-threshold": ("group_threshold", _int),
    "minBoxes": ("min_boxes", _int),
    "dbscan-min-score": ("dbscan_min_score", _float),
    "nms-iou-threshold": ("nms_iou_threshold", _float),
    "topk": ("topk", _int),
    "roi-top-offset": ("roi_top_offset", _int),
    "roi-bottom-offset": ("roi_bottom_offset", _int),
    "detected-min-w": ("detected_min_w", _int),
    "detected-min-h": ("detected_min_h", _int),
    "detected-max-w": ("detected_max_w", _int),
    "detected-max-h": ("detected_max_h", _int),
    "border-color": (None, _str),
    "bg-color": (None, _str),
}
