"""Gst-nvinferserver configs (protobuf text, ``nvdsinferserver_config.proto``) as nvinfer keys.

nvinferserver (Triton) attaches the same NvDsInferTensorMeta as nvinfer (``unique_id`` =
``infer_config.unique_id``, host buffers, ``network_info``: ``gstnvinferserver_meta_utils.cpp``), so
everything dsprobe does with an nvinfer config works with one once its fields are translated:

=====================================================  ============================================
nvinferserver field                                    nvinfer key
=====================================================  ============================================
``infer_config.unique_id`` / ``max_batch_size``        ``gie-unique-id`` / ``batch-size``
``infer_config.backend.inputs[0].dims`` (CHW / HWC)   ``infer-dims`` (else the engine decides)
``preprocess.network_format`` / ``tensor_order``       ``model-color-format`` / ``network-input-order``
``preprocess.maintain_aspect_ratio`` / ``symmetric_    ``maintain-aspect-ratio`` / ``symmetric-
padding`` / ``frame_scaling_filter`` / ``_hw``         padding`` / ``scaling-filter`` / ``-compute-hw``
``preprocess.normalize.scale_factor`` /                ``net-scale-factor`` / ``offsets`` /
``channel_offsets`` / ``mean_file``                    ``mean-file``
``postprocess.labelfile_path``                         ``labelfile-path``
``postprocess.detection`` (``num_detected_classes``,   ``network-type=0``, ``num-detected-classes``,
``nms`` / ``dbscan`` / ``group_rectangle`` /           ``cluster-mode`` 2 / 1 / 0 / 4 and their
``simple_cluster``, ``per_class_params``)              ``[class-attrs-*]`` thresholds
``postprocess.classification.threshold``               ``network-type=1``, ``classifier-threshold``
``postprocess.segmentation.threshold``                 ``network-type=2``, ``segmentation-threshold``
``postprocess.other``                                  ``network-type=100``
``input_control.process_mode`` / ``operate_on_gie_     ``process-mode`` / ``operate-on-gie-id`` /
id`` / ``operate_on_class_ids`` / ``interval`` /       ``operate-on-class-ids`` / ``interval`` /
``async_mode``                                         ``classifier-async-mode``
``input_control.object_control.bbox_filter``           ``input-object-min/max-width/height``
``output_control.output_tensor_meta``                  ``output-tensor-meta``
``infer_config.input_tensor_from_meta``                ``input-tensor-from-meta=1``
=====================================================  ============================================

Other fields are ignored. The parser reads protobuf text format (messages, repeated fields,
``[lists]``, strings, numbers, enum names, ``#`` comments); a syntax error names file and line.
"""

from __future__ import annotations

import re
from typing import Any

_TOKEN = re.compile(
    r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')|([{}\[\]:,;<>])|([^\s{}\[\]:,;<>#"\']+))'
)


class ProtoTextError(ValueError):
    """A malformed nvinferserver config; names the file and the line."""


def is_nvinferserver_text(text: str) -> bool:
    """True for a protobuf-text nvinferserver config (an ``infer_config {`` block)."""
    return re.search(r"^\s*infer_config\s*:?\s*\{", text, re.M) is not None


def parse_prototext(text: str, source: str = "<config>") -> dict[str, Any]:
    """Protobuf text as nested dicts; a field given more than once (or as a list) is a list."""
    tokens = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            if text[pos:].strip() == "":
                break
            raise ProtoTextError(f"{source}:{text.count(chr(10), 0, pos) + 1}: cannot parse")
        pos = m.end()
        for g in (2, 3, 4):
            if m.group(g) is not None:
                tokens.append((m.group(g), text.count("\n", 0, m.start(g)) + 1))
    return _message(tokens, 0, source, top=True)[0]


def _message(tokens: list, k: int, source: str, top: bool = False) -> tuple[dict, int]:
    out: dict[str, Any] = {}
    while k < len(tokens):
        tok, line = tokens[k]
        if tok in ("}", ">"):
            if top:
                raise ProtoTextError(f"{source}:{line}: unexpected '{tok}'")
            return out, k + 1
        if tok in (",", ";"):
            k += 1
            continue
        name, k = tok, k + 1
        if k < len(tokens) and tokens[k][0] == ":":
            k += 1
        if k >= len(tokens):
            raise ProtoTextError(f"{source}:{line}: field {name!r} has no value")
        value, k = _value(tokens, k, source)
        if name in out:
            prev = out[name]
            out[name] = (prev if isinstance(prev, list) else [prev]) + (
                value if isinstance(value, list) else [value]
            )
        else:
            out[name] = value
    if not top:
        raise ProtoTextError(f"{source}: a '{{' is never closed")
    return out, k


def _value(tokens: list, k: int, source: str) -> tuple[Any, int]:
    tok, line = tokens[k]
    if tok in ("{", "<"):
        return _message(tokens, k + 1, source)
    if tok == "[":
        items, k = [], k + 1
        while k < len(tokens) and tokens[k][0] != "]":
            if tokens[k][0] == ",":
                k += 1
                continue
            item, k = _value(tokens, k, source)
            items.append(item)
        if k >= len(tokens):
            raise ProtoTextError(f"{source}:{line}: a '[' is never closed")
        return items, k + 1
    if tok[0] in "\"'":
        return bytes(tok[1:-1], "utf-8").decode("unicode_escape"), k + 1
    return _scalar(tok), k + 1


def _scalar(tok: str) -> Any:
    low = tok.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(tok, 0)
    except ValueError:
        pass
    try:
        return float(tok)
    except ValueError:
        return tok  # an enum name


def _get(d: Any, *path: str, default: Any = None) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def _s(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, list):
        return ";".join(_s(x) for x in v)
    return str(v)


_COLOR = {"IMAGE_FORMAT_RGB": 0, "IMAGE_FORMAT_BGR": 1, "IMAGE_FORMAT_GRAY": 2}
_ORDER = {"TENSOR_ORDER_LINEAR": 0, "TENSOR_ORDER_NHWC": 1}
_SCALING_HW = {"FRAME_SCALING_HW_DEFAULT": 0, "FRAME_SCALING_HW_GPU": 1, "FRAME_SCALING_HW_VIC": 2}
_MODE = {"PROCESS_MODE_FULL_FRAME": 1, "PROCESS_MODE_CLIP_OBJECTS": 2}


def nvinferserver_sections(
    text: str, source: str = "<config>"
) -> dict[str, list[tuple[str, str, int]]]:
    """The config as nvinfer ``[property]`` / ``[class-attrs-*]`` sections (key, value, line 0)."""
    root = parse_prototext(text, source)
    ic = root.get("infer_config")
    if not isinstance(ic, dict):
        raise ProtoTextError(
            f"{source}: no infer_config {{ ... }} block; not an nvinferserver config"
        )
    prop: dict[str, Any] = {}
    classes: dict[str, dict[str, Any]] = {"class-attrs-all": {}}

    def put(key: str, value: Any) -> None:
        if value is not None:
            prop[key] = value

    put("gie-unique-id", ic.get("unique_id"))
    put("batch-size", ic.get("max_batch_size"))
    inputs = _get(ic, "backend", "inputs")
    first = inputs[0] if isinstance(inputs, list) and inputs else inputs
    pre = ic.get("preprocess") or {}
    dims = _get(first, "dims")
    if isinstance(dims, list) and len(dims) >= 3:
        put("infer-dims", _chw(dims[-3:], str(pre.get("tensor_order"))))
    put("model-color-format", _COLOR.get(str(pre.get("network_format"))))
    put("network-input-order", _ORDER.get(str(pre.get("tensor_order"))))
    put("maintain-aspect-ratio", pre.get("maintain_aspect_ratio"))
    put("symmetric-padding", pre.get("symmetric_padding"))
    put("scaling-filter", pre.get("frame_scaling_filter"))
    hw = pre.get("frame_scaling_hw")
    put("scaling-compute-hw", _SCALING_HW.get(hw, hw) if isinstance(hw, str) else hw)
    put("net-scale-factor", _get(pre, "normalize", "scale_factor"))
    put("offsets", _get(pre, "normalize", "channel_offsets"))
    put("mean-file", _get(pre, "normalize", "mean_file"))
    post = ic.get("postprocess") or {}
    put("labelfile-path", post.get("labelfile_path"))
    _postprocess(post, put, classes)
    put("custom-lib-path", _get(ic, "custom_lib", "path"))
    if "input_tensor_from_meta" in ic:
        put("input-tensor-from-meta", 1)
    inp = root.get("input_control") or {}
    put("process-mode", _MODE.get(str(inp.get("process_mode"))))
    put("operate-on-gie-id", inp.get("operate_on_gie_id"))
    put("operate-on-class-ids", inp.get("operate_on_class_ids"))
    put("interval", inp.get("interval"))
    put("classifier-async-mode", inp.get("async_mode"))
    bbox = _get(inp, "object_control", "bbox_filter") or {}
    for side in ("min_width", "min_height", "max_width", "max_height"):
        put(f"input-object-{side.replace('_', '-')}", bbox.get(side))
    put("output-tensor-meta", _get(root, "output_control", "output_tensor_meta", default=False))
    sections = {"property": [(k, _s(v), 0) for k, v in prop.items()]}
    for name, keys in classes.items():
        if keys or name == "class-attrs-all":
            sections[name] = [(k, _s(v), 0) for k, v in keys.items()]
    return sections


def _postprocess(post: dict, put: Any, classes: dict) -> None:
    det = post.get("detection")
    if isinstance(det, dict):
        put("network-type", 0)
        put("num-detected-classes", det.get("num_detected_classes"))
        put("parse-bbox-func-name", det.get("custom_parse_bbox_func"))
        allc = classes["class-attrs-all"]
        if isinstance(det.get("nms"), dict):
            nms = det["nms"]
            put("cluster-mode", 2)
            _set(allc, "pre-cluster-threshold", nms.get("confidence_threshold"))
            _set(allc, "nms-iou-threshold", nms.get("iou_threshold"))
            _set(allc, "topk", nms.get("topk"))
        elif isinstance(det.get("dbscan"), dict):
            db = det["dbscan"]
            put("cluster-mode", 1)
            _set(allc, "pre-cluster-threshold", db.get("pre_threshold"))
            _set(allc, "post-cluster-threshold", db.get("post_threshold"))
            _set(allc, "eps", db.get("eps"))
            _set(allc, "minBoxes", db.get("min_boxes"))
            _set(allc, "dbscan-min-score", db.get("min_score"))
        elif isinstance(det.get("group_rectangle"), dict):
            gr = det["group_rectangle"]
            put("cluster-mode", 0)
            _set(allc, "pre-cluster-threshold", gr.get("confidence_threshold"))
            _set(allc, "group-threshold", gr.get("group_threshold"))
            _set(allc, "eps", gr.get("eps"))
        elif isinstance(det.get("simple_cluster"), dict):
            put("cluster-mode", 4)
            _set(allc, "pre-cluster-threshold", det["simple_cluster"].get("threshold"))
        per = det.get("per_class_params")
        for item in per if isinstance(per, list) else [per] if isinstance(per, dict) else []:
            key, value = item.get("key"), item.get("value") or {}
            if key is not None and "pre_threshold" in value:
                classes.setdefault(f"class-attrs-{int(key)}", {})["pre-cluster-threshold"] = value[
                    "pre_threshold"
                ]
    elif isinstance(post.get("classification"), dict):
        put("network-type", 1)
        put("classifier-threshold", post["classification"].get("threshold"))
    elif isinstance(post.get("segmentation"), dict):
        put("network-type", 2)
        put("segmentation-threshold", post["segmentation"].get("threshold"))
    elif "other" in post:
        put("network-type", 100)


def _chw(dims: list, order: str) -> list:
    """c;h;w from a model input's dims: NHWC when the config says so, or (order NONE / unset)
    when the last dim looks like channels and the first does not."""
    channels = (1, 3, 4)
    hwc = order == "TENSOR_ORDER_NHWC" or (
        order != "TENSOR_ORDER_LINEAR" and dims[2] in channels and dims[0] not in channels
    )
    return [dims[2], dims[0], dims[1]] if hwc else list(dims)


def _set(d: dict, key: str, value: Any) -> None:
    if value is not None:
        d[key] = value
