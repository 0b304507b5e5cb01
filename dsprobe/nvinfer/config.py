"""Read Gst-nvinfer config files (key=value ``[property]`` / ``[class-attrs-*]`` files and the YAML form).

Values are typed and carry nvinfer's defaults (see ``docs/nvinfer-semantics.md`` §1, §3.1).
Unknown keys are kept in :attr:`NvinferConfig.unknown_keys` and reported, never fatal; a malformed
value raises :class:`NvinferConfigError` naming the file, the line and the key.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from dsprobe.nvinfer.keys import CLASS_KEYS, PROPERTY_KEYS
from dsprobe.nvinfer.nvinferserver import (
    ProtoTextError,
    is_nvinferserver_text,
    nvinferserver_sections,
)
from dsprobe.nvinfer.ranges import check_value

# cluster-mode values
CLUSTER_GROUP_RECTANGLES, CLUSTER_DBSCAN, CLUSTER_NMS, CLUSTER_DBSCAN_NMS, CLUSTER_NONE = (
    0,
    1,
    2,
    3,
    4,
)
# network-type values
NETWORK_DETECTOR, NETWORK_CLASSIFIER, NETWORK_SEGMENTATION, NETWORK_INSTANCE_SEG, NETWORK_OTHER = (
    0,
    1,
    2,
    3,
    100,
)
#: nvinfer's gie-unique-id when the config sets none (DEFAULT_UNIQUE_ID in gstnvinfer.cpp).
DEFAULT_GIE_UNIQUE_ID = 15


class NvinferConfigError(ValueError):
    """A malformed nvinfer config value; the message names file, line and key."""


@dataclass(frozen=True)
class ClassAttrs:
    """Per-class detection parameters (``[class-attrs-all]`` / ``[class-attrs-N]``) with nvinfer's defaults.

    Thresholds are confidences in [0, 1]; ``detected-*`` and ``roi-*`` are frame pixels
    (crop pixels for an SGIE detector).
    """

    pre_cluster_threshold: float = 0.2
    post_cluster_threshold: float = 0.0
    eps: float = 0.0
    group_threshold: int = 0
    min_boxes: int = 0
    dbscan_min_score: float = 0.0
    nms_iou_threshold: float = 0.3
    topk: int = -1
    roi_top_offset: int = 0
    roi_bottom_offset: int = 0
    detected_min_w: int = 0
    detected_min_h: int = 0
    detected_max_w: int = 0
    detected_max_h: int = 0


@dataclass(frozen=True)
class Preprocessing:
    """nvinfer's input geometry and normalisation for one GIE.

    ``network_width/height/channels`` are network-input pixels (0 when neither ``infer-dims`` nor
    ``uff-input-dims`` is given: then the engine decides and the recording's tensor meta tells).
    ``scaling_filter`` is the configured value (0 nearest, 1 bilinear, ...; 6 = Default = nearest);
    ``offsets`` are per network channel in network colour order.
    """

    network_width: int = 0
    network_height: int = 0
    network_channels: int = 0
    maintain_aspect_ratio: bool = False
    symmetric_padding: bool = False
    net_scale_factor: float = 1.0
    offsets: tuple[float, ...] = ()
    model_color_format: int = 0  # 0 RGB, 1 BGR, 2 GRAY
    network_input_order: int = 0  # 0 NCHW, 1 NHWC
    scaling_filter: int = 6
    scaling_compute_hw: int = 0
    mean_file: str | None = None

    @property
    def network_size(self) -> tuple[int, int]:
        """(width, height) in network pixels."""
        return (self.network_width, self.network_height)


@dataclass(frozen=True)
class NvinferConfig:
    """A parsed nvinfer config. ``text`` is the file as written; ``properties`` the raw strings."""

    text: str
    path: str | None = None
    properties: Mapping[str, str] = field(default_factory=dict)
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    gie_unique_id: int = DEFAULT_GIE_UNIQUE_ID
    process_mode: int = 1  # 1 primary (full frame), 2 secondary (objects)
    operate_on_gie_id: int = -1
    operate_on_class_ids: tuple[int, ...] = ()
    network_type: int = NETWORK_DETECTOR
    network_mode: int = 0  # 0 FP32, 1 INT8, 2 FP16, 3 BEST
    output_tensor_meta: bool = False
    num_detected_classes: int = 0
    cluster_mode: int = (
        CLUSTER_GROUP_RECTANGLES  # absent -> 0 (which runs as NMS(0.5, top-20) without OpenCV)
    )
    filter_out_class_ids: tuple[int, ...] = ()
    crop_objects_to_roi_boundary: bool = False
    classifier_threshold: float = 0.0
    segmentation_threshold: float = 0.0
    input_object_min_width: int = 0
    input_object_min_height: int = 0
    input_object_max_width: int = 0
    input_object_max_height: int = 0
    batch_size: int = 1
    interval: int = 0
    labelfile_path: str | None = None
    onnx_file: str | None = None
    model_engine_file: str | None = None
    output_blob_names: tuple[str, ...] = ()
    parse_bbox_func_name: str | None = None
    custom_lib_path: str | None = None
    class_attrs_all: ClassAttrs = field(default_factory=ClassAttrs)
    class_attrs: Mapping[int, ClassAttrs] = field(default_factory=dict)
    unknown_keys: tuple[str, ...] = ()
    #: the label file's contents when the config travels without its files (read from a recording):
    #: then :meth:`labels` never opens a path
    embedded_labels: tuple[str, ...] | None = None

    def attrs_for(self, class_id: int) -> ClassAttrs:
        """The effective attributes of ``class_id`` (``[class-attrs-N]`` over ``[class-attrs-all]``)."""
        return self.class_attrs.get(class_id, self.class_attrs_all)

    def per_class(self, name: str, num_classes: int | None = None) -> list:
        """One value of ClassAttrs field ``name`` per class, for classes 0..num_classes-1."""
        n = num_classes if num_classes is not None else self.num_detected_classes
        return [getattr(self.attrs_for(c), name) for c in range(n)]

    def labels(self, base_dir: str | Path | None = None) -> list[str]:
        """Labels from ``labelfile-path`` (relative to the config's folder), or the embedded ones;
        [] when the config names no label file, or (with a warning) when the file is missing. A label
        file that is not a regular file, not UTF-8 text or over 16 MiB is an NvinferConfigError
        naming both files.

        Detector label files have one class per line; a ``;``-separated line gives its first field
        (nvinfer uses ``labels[class_id][0]``). Classifier label files (``network-type=1``) hold one
        line per output layer with that layer's labels ``;``-separated (nvinfer's
        ``labels[layer][attribute]``): this returns the first layer's labels, and
        :meth:`classifier_labels` every layer's.
        """
        lines = self.label_lines(base_dir)
        if self.network_type == NETWORK_CLASSIFIER:
            return list(lines[0]) if lines else []
        return [fields[0] for fields in lines]

    def classifier_labels(self, base_dir: str | Path | None = None) -> list[list[str]]:
        """A classifier's labels per output layer: ``[layer][attribute]``, as nvinfer parses a label
        file (one line per output layer, ``;``-separated). Embedded labels count as one layer."""
        return [list(fields) for fields in self.label_lines(base_dir)]

    def label_lines(self, base_dir: str | Path | None = None) -> list[list[str]]:
        """The label file as nvinfer reads it: one entry per non-empty line, each line split at
        ``;`` with surrounding blanks stripped and a trailing ``;`` ignored (embedded labels: one
        line per class for a detector, one line holding all of them for a classifier)."""
        if self.embedded_labels is not None:
            embedded = [str(x) for x in self.embedded_labels]
            if self.network_type == NETWORK_CLASSIFIER:
                return [embedded] if embedded else []
            return [[x] for x in embedded]
        if not self.labelfile_path:
            return []
        p = Path(self.labelfile_path)
        if not p.is_absolute():
            base = (
                Path(base_dir) if base_dir else (Path(self.path).parent if self.path else Path("."))
            )
            p = base / p
        return read_label_file(p, self.path or "config")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (class attrs keyed by class id as str)."""
        d = asdict(self)
        d["class_attrs"] = {str(k): asdict(v) for k, v in self.class_attrs.items()}
        d["properties"] = dict(self.properties)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "NvinferConfig":
        d = dict(d)
        d["preprocessing"] = Preprocessing(**_tuples(d.get("preprocessing", {})))
        d["class_attrs_all"] = ClassAttrs(**d.get("class_attrs_all", {}))
        d["class_attrs"] = {int(k): ClassAttrs(**v) for k, v in d.get("class_attrs", {}).items()}
        names = {f.name for f in fields(cls)}
        cfg = cls(**_tuples({k: v for k, v in d.items() if k in names}))
        for key, value in (  # what sizes tables built from it (a stored config may be crafted)
            ("num-detected-classes", cfg.num_detected_classes),
            ("cluster-mode", cfg.cluster_mode),
            ("batch-size", cfg.batch_size),
        ):
            check_value(key, value)
        return cfg


#: a config file larger than this is refused (nvinfer's are a few KB)
MAX_CONFIG_BYTES = 1 << 20
#: a label file larger than this is refused (nvinfer's are a few KB)
MAX_LABEL_FILE_BYTES = 16 << 20


def read_label_file(path: Path, config: str = "config") -> list[list[str]]:
    """The nvinfer label file ``path`` named by ``config``, one list of ``;``-separated fields per
    non-empty line (see NvinferConfig.label_lines)."""
    where = f"{config}: labelfile-path {path}"
    try:
        if not path.exists():  # nvinfer refuses to start on it; a replay can go on with numbers
            warnings.warn(
                f"{where} does not exist: no labels (class numbers instead)", stacklevel=4
            )
            return []
        if not path.is_file():
            raise NvinferConfigError(f"{where} is not a regular file")
        if path.stat().st_size > MAX_LABEL_FILE_BYTES:
            raise NvinferConfigError(f"{where} is larger than {MAX_LABEL_FILE_BYTES} bytes")
        raw = path.read_bytes()
    except OSError as exc:
        raise NvinferConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NvinferConfigError(
            f"{where} is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    if "\0" in text:
        raise NvinferConfigError(f"{where} is binary, not a label file")
    lines = []
    for line in text.splitlines():
        if line.strip():
            fields = [f.strip() for f in line.split(";")]
            lines.append(fields[:-1] if len(fields) > 1 and not fields[-1] else fields)
    return lines


def _tuples(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


# --------------------------------------------------------------------------- entry points
def load_nvinfer_config(path: str | Path) -> NvinferConfig:
    """Parse the nvinfer config file at ``path`` (``.yml``/``.yaml`` as YAML, else key=value)."""
    p = Path(path)
    try:
        if p.is_file() and p.stat().st_size > MAX_CONFIG_BYTES:
            raise NvinferConfigError(f"{p}: larger than {MAX_CONFIG_BYTES} bytes; not a config")
        raw = p.read_bytes()
    except OSError as exc:
        raise NvinferConfigError(f"{p}: cannot read nvinfer config: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise NvinferConfigError(
            f"{p}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start}); an nvinfer config is text"
        ) from None
    return parse_nvinfer_config(text, source=str(p))


def parse_nvinfer_config(text: str, source: str = "<config>") -> NvinferConfig:
    """Parse config ``text``; ``source`` (a path) names it in errors and resolves relative paths.

    nvinferserver configs (protobuf text) are read too, their fields translated to nvinfer keys
    (:mod:`dsprobe.nvinfer.nvinferserver`)."""
    if is_nvinferserver_text(text):
        try:
            return _build(text, source, nvinferserver_sections(text, source))
        except ProtoTextError as exc:
            raise NvinferConfigError(str(exc)) from None
    looks_yaml = source.endswith((".yml", ".yaml")) or (
        "[property]" not in text and re.search(r"^property\s*:", text, re.M) is not None
    )
    sections = _read_yaml(text, source) if looks_yaml else _read_keyfile(text, source)
    return _build(text, source, sections)


def as_nvinfer_config(value: "str | Path | NvinferConfig") -> NvinferConfig:
    """Accept a config object, a path, or config text."""
    if isinstance(value, NvinferConfig):
        return value
    if isinstance(value, Path) or ("\n" not in str(value) and Path(str(value)).exists()):
        return load_nvinfer_config(value)
    if "\n" not in str(value):
        raise NvinferConfigError(f"{value}: nvinfer config file not found")
    return parse_nvinfer_config(str(value))


# section -> list of (key, raw value, line number)
_Sections = dict[str, list[tuple[str, str, int]]]


def configs_by_unique_id(value: Any) -> dict[int, NvinferConfig]:
    """``{gie-unique-id: config}`` from one config (path, text or NvinferConfig), a mapping of them, or None."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {int(k): as_nvinfer_config(v) for k, v in value.items()}
    cfg = as_nvinfer_config(value)
    return {cfg.gie_unique_id: cfg}


def _read_keyfile(text: str, source: str) -> _Sections:
    sections: _Sections = {}
    current: str | None = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"\[\s*([^\]]+?)\s*\]", line)
        if m:
            current = m.group(1)
            sections.setdefault(current, [])
            continue
        if "=" not in line:
            raise NvinferConfigError(
                f"{source}:{lineno}: expected 'key=value' or '[section]', got {line!r}"
            )
        if current is None:
            raise NvinferConfigError(
                f"{source}:{lineno}: key {line.split('=')[0].strip()!r} before any [section]"
            )
        key, _, value = line.partition("=")
        value = re.split(r"\s+#", value, maxsplit=1)[0]  # trailing comment
        sections[current].append((key.strip(), value.strip(), lineno))
    return sections


def _read_yaml(text: str, source: str) -> _Sections:
    try:
        import yaml
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise ImportError(
            f"{source}: reading YAML nvinfer configs needs PyYAML (pip install pyyaml)"
        ) from exc
    try:
        for event in yaml.parse(text):  # aliases could multiply the document (an alias bomb)
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise NvinferConfigError(
                    f"{source}:{event.start_mark.line + 1}: YAML anchors and aliases are not "
                    "allowed in an nvinfer config"
                )
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        raise NvinferConfigError(f"{source}: not valid YAML: {exc}") from None
    sections: _Sections = {}
    if root is None:
        return sections
    if not isinstance(root, yaml.MappingNode):
        raise NvinferConfigError(
            f"{source}: expected a mapping of sections (property:, class-attrs-all:, ...)"
        )
    for key_node, value_node in root.value:
        name = key_node.value
        sections.setdefault(name, [])
        if not isinstance(value_node, yaml.MappingNode):
            raise NvinferConfigError(
                f"{source}:{key_node.start_mark.line + 1}: section {name!r} is not a mapping"
            )
        for k, v in value_node.value:
            line = k.start_mark.line + 1
            items = v.value if isinstance(v, yaml.SequenceNode) else [v]
            if not isinstance(k, yaml.ScalarNode) or not all(
                isinstance(item, yaml.ScalarNode) for item in items
            ):
                raise NvinferConfigError(
                    f"{source}:{line}: {name}: values are numbers, text or lists of them"
                )
            raw = ";".join(str(item.value) for item in items)
            sections[name].append((str(k.value), raw, line))
    return sections


def _build(text: str, source: str, sections: _Sections) -> NvinferConfig:
    if "property" not in sections:
        raise NvinferConfigError(
            f"{source}: no [property] section; is this an nvinfer config file?"
        )
    values: dict[str, Any] = {}
    pre: dict[str, Any] = {}
    properties: dict[str, str] = {}
    unknown: list[str] = []
    for key, raw, lineno in sections["property"]:
        properties[key] = raw
        spec = PROPERTY_KEYS.get(key)
        if spec is None:
            unknown.append(f"property:{key}")
            continue
        name, conv = spec
        if name is None:
            continue
        value = _convert(conv, raw, source, lineno, key)
        if name.startswith("pre."):
            pre[name[4:]] = value
        else:
            values[name] = value

    dims = values.pop("infer_dims", None) or values.pop("uff_input_dims", None)
    values.pop("uff_input_dims", None)
    if dims:
        if len(dims) < 3:
            raise NvinferConfigError(
                f"{source}: infer-dims must be c;h;w, got {';'.join(map(str, dims))}"
            )
        pre["network_channels"], pre["network_height"], pre["network_width"] = dims[:3]
    enable_dbscan = values.pop("enable_dbscan", False)
    if enable_dbscan and "cluster-mode" not in properties:
        values["cluster_mode"] = CLUSTER_DBSCAN

    class_all = ClassAttrs()
    per_class_raw: dict[int, list[tuple[str, str, int]]] = {}
    for section, items in sections.items():
        if section == "property":
            continue
        if section == "class-attrs-all":
            class_all = _class_attrs(class_all, items, source, unknown, section)
        elif m := re.fullmatch(r"class-attrs-(\d+)", section):
            per_class_raw[int(m.group(1))] = items
        else:
            unknown.append(f"[{section}]")
    class_attrs = {
        cid: _class_attrs(class_all, items, source, unknown, f"class-attrs-{cid}")
        for cid, items in sorted(per_class_raw.items())
    }
    n = values.get("num_detected_classes", 0)
    bad = [cid for cid in class_attrs if n and cid >= n]
    if bad:
        raise NvinferConfigError(
            f"{source}: [class-attrs-{bad[0]}] is not below num-detected-classes={n}"
        )

    return NvinferConfig(
        text=text,
        path=None if source.startswith("<") else source,
        properties=properties,
        preprocessing=Preprocessing(**pre),
        class_attrs_all=class_all,
        class_attrs=class_attrs,
        unknown_keys=tuple(unknown),
        **values,
    )


def _class_attrs(
    base: ClassAttrs,
    items: list[tuple[str, str, int]],
    source: str,
    unknown: list[str],
    section: str,
) -> ClassAttrs:
    changes: dict[str, Any] = {}
    for key, raw, lineno in items:
        spec = CLASS_KEYS.get(key)
        if spec is None:
            unknown.append(f"{section}:{key}")
            continue
        name, conv = spec
        if name is None:
            continue
        value = _convert(conv, raw, source, lineno, key)
        changes[name] = value
    return replace(base, **changes)


def _convert(conv: Callable[[str], Any], raw: str, source: str, lineno: int, key: str) -> Any:
    try:
        value = conv(raw)
    except ValueError as exc:
        raise NvinferConfigError(
            f"{source}:{lineno}: bad value for {key}: {raw!r} ({exc})"
        ) from None
    try:
        check_value(key, value)
    except ValueError as exc:
        raise NvinferConfigError(f"{source}:{lineno}: {exc}") from None
    return value
