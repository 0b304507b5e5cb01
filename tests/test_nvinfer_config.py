"""nvinfer config parsing on config files of the shapes DeepStream users have (tests/data/configs)."""

from pathlib import Path

import pytest

from dsprobe.nvinfer.config import (
    CLUSTER_DBSCAN,
    CLUSTER_GROUP_RECTANGLES,
    CLUSTER_NMS,
    DEFAULT_GIE_UNIQUE_ID,
    NvinferConfig,
    NvinferConfigError,
    load_nvinfer_config,
    parse_nvinfer_config,
)

CONFIGS = Path(__file__).parent / "data" / "configs"


def test_pgie_yolo_keyfile():
    cfg = load_nvinfer_config(CONFIGS / "pgie_yolo.txt")
    pre = cfg.preprocessing
    assert (pre.network_width, pre.network_height, pre.network_channels) == (640, 640, 3)
    assert pre.maintain_aspect_ratio and pre.symmetric_padding
    assert pre.net_scale_factor == pytest.approx(1 / 255)
    assert pre.scaling_filter == 6  # not set: NvBufSurfTransformInter_Default (nearest)
    assert cfg.gie_unique_id == 1 and cfg.process_mode == 1 and cfg.network_type == 100
    assert cfg.output_tensor_meta is True and cfg.cluster_mode == CLUSTER_NMS
    assert cfg.num_detected_classes == 80
    # [class-attrs-all] applies to every class, [class-attrs-2] overrides only what it lists
    assert cfg.attrs_for(0).pre_cluster_threshold == pytest.approx(0.25)
    assert cfg.attrs_for(2).pre_cluster_threshold == pytest.approx(0.6)
    assert (
        cfg.attrs_for(2).nms_iou_threshold == pytest.approx(0.45) and cfg.attrs_for(2).topk == 300
    )
    assert cfg.per_class("pre_cluster_threshold", 3) == pytest.approx([0.25, 0.25, 0.6])
    assert cfg.unknown_keys == ("property:my-own-key",)
    assert cfg.properties["my-own-key"] == "42"
    assert cfg.text.startswith("# A PGIE config")


def test_sgie_classifier_defaults_and_lists():
    cfg = load_nvinfer_config(CONFIGS / "sgie_classifier.txt")
    assert cfg.process_mode == 2 and cfg.operate_on_gie_id == 1
    assert cfg.operate_on_class_ids == (0,)  # trailing ';' as users write it
    assert cfg.preprocessing.offsets == pytest.approx((103.939, 116.779, 123.68))
    assert cfg.preprocessing.model_color_format == 1
    assert cfg.preprocessing.network_size == (0, 0)  # no infer-dims: the engine decides
    assert cfg.classifier_threshold == pytest.approx(0.51)
    assert cfg.output_blob_names == ("predictions/Softmax",)
    assert cfg.input_object_min_width == 64
    assert cfg.class_attrs_all.pre_cluster_threshold == pytest.approx(0.2)  # nvinfer default


def test_detectnet_without_cluster_mode_defaults_to_group_rectangles():
    cfg = load_nvinfer_config(CONFIGS / "detectnet.txt")
    assert cfg.cluster_mode == CLUSTER_GROUP_RECTANGLES
    assert cfg.class_attrs_all.group_threshold == 1 and cfg.class_attrs_all.eps == pytest.approx(
        0.2
    )
    assert cfg.class_attrs_all.nms_iou_threshold == pytest.approx(0.3)  # default
    assert cfg.class_attrs_all.topk == -1
    assert cfg.output_blob_names == ("conv2d_bbox", "conv2d_cov/Sigmoid")
    assert cfg.unknown_keys == ()


def test_yaml_config():
    cfg = load_nvinfer_config(CONFIGS / "pgie_yolo.yml")
    assert cfg.preprocessing.network_size == (640, 384)
    assert cfg.preprocessing.maintain_aspect_ratio and not cfg.preprocessing.symmetric_padding
    assert cfg.gie_unique_id == 3 and cfg.filter_out_class_ids == (1, 2)
    assert cfg.attrs_for(0).topk == 20 and cfg.attrs_for(1).topk == 100
    assert cfg.attrs_for(0).pre_cluster_threshold == pytest.approx(0.3)


def test_labels_resolved_next_to_config(tmp_path):
    (tmp_path / "labels.txt").write_text("car\nperson;people\n\nbicycle\n")
    (tmp_path / "c.txt").write_text("[property]\nlabelfile-path=labels.txt\n")
    assert load_nvinfer_config(tmp_path / "c.txt").labels() == ["car", "person", "bicycle"]


def test_classifier_label_file_is_one_line_per_output_layer(tmp_path):
    """nvinfer reads a classifier's label file as labels[layer][attribute] (DeepStream's
    Secondary_CarColor/labels.txt is one ';'-separated line): every field counts, not the first."""
    (tmp_path / "labels.txt").write_text("black; blue;red;\nsedan;suv\n")
    (tmp_path / "c.txt").write_text("[property]\nnetwork-type=1\nlabelfile-path=labels.txt\n")
    (tmp_path / "d.txt").write_text("[property]\nnetwork-type=0\nlabelfile-path=labels.txt\n")
    cls = load_nvinfer_config(tmp_path / "c.txt")
    assert cls.labels() == ["black", "blue", "red"]
    assert cls.classifier_labels() == [["black", "blue", "red"], ["sedan", "suv"]]
    assert load_nvinfer_config(tmp_path / "d.txt").labels() == ["black", "sedan"]


def test_defaults_when_keys_absent():
    cfg = parse_nvinfer_config("[property]\nnum-detected-classes=2\n")
    assert cfg.gie_unique_id == DEFAULT_GIE_UNIQUE_ID and cfg.cluster_mode == 0
    assert cfg.preprocessing.net_scale_factor == 1.0 and not cfg.preprocessing.maintain_aspect_ratio
    assert cfg.path is None


def test_enable_dbscan_maps_to_mode_1_unless_cluster_mode_set():
    assert parse_nvinfer_config("[property]\nenable-dbscan=1\n").cluster_mode == CLUSTER_DBSCAN
    assert (
        parse_nvinfer_config("[property]\nenable-dbscan=1\ncluster-mode=2\n").cluster_mode
        == CLUSTER_NMS
    )


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[property]\nbatch-size=four\n", ":2: bad value for batch-size: 'four'"),
        ("[property]\nmaintain-aspect-ratio=maybe\n", ":2: bad value for maintain-aspect-ratio"),
        (
            "[property]\n[class-attrs-all]\nnms-iou-threshold=1.5\n",
            ":3: nms-iou-threshold=1.5 must be in [0, 1]",
        ),
        ("[property]\n[class-attrs-all]\ntopk=-2\n", ":3: topk=-2 must be >= 0"),
        ("[property]\nthis line has no equals sign\n", ":2: expected 'key=value'"),
        ("gpu-id=0\n", ":1: key 'gpu-id' before any [section]"),
        ("[class-attrs-all]\ntopk=2\n", "no [property] section"),
        (
            "[property]\nnum-detected-classes=2\n[class-attrs-5]\ntopk=1\n",
            "[class-attrs-5] is not below",
        ),
    ],
)
def test_malformed_values_name_file_line_and_key(tmp_path, text, fragment):
    p = tmp_path / "bad_config.txt"
    p.write_text(text)
    with pytest.raises(NvinferConfigError) as info:
        load_nvinfer_config(p)
    assert str(p) in str(info.value) and fragment in str(info.value)


def test_yaml_malformed_value_names_line(tmp_path):
    p = tmp_path / "bad.yml"
    p.write_text("property:\n  gpu-id: 0\n  batch-size: lots\n")
    with pytest.raises(NvinferConfigError, match=r"bad\.yml:3: bad value for batch-size"):
        load_nvinfer_config(p)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(NvinferConfigError, match="nope.txt"):
        load_nvinfer_config(tmp_path / "nope.txt")


def test_dict_round_trip():
    cfg = load_nvinfer_config(CONFIGS / "pgie_yolo.txt")
    again = NvinferConfig.from_dict(cfg.to_dict())
    assert again == cfg
