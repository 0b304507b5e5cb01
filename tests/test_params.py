"""A Postprocess owns its params (specs from its own step functions, get / set by name, per class)
and the one nvinfer key table (config -> spec -> nvinfer keys -> config round trip)."""

from __future__ import annotations

import inspect
from typing import Annotated, Literal

import numpy as np
import pytest

from dsprobe import Range
from dsprobe.analysis.export import to_nvinfer
from dsprobe.detections import Detections
from dsprobe.nvinfer.config import parse_nvinfer_config
from dsprobe.postprocess import Postprocess, PostprocessError
from dsprobe.postprocess.filters import object_filters
from dsprobe.postprocess.nvinfer_params import CLUSTER_MODES, NVINFER_PARAMS, cluster_mode_of
from dsprobe.postprocess.registry import StepContext, get_step


def corner_decoder(
    layers,
    ctx,
    *,
    score_threshold: Annotated[float, Range(0, 1)] = 0.3,
    flip: bool = False,
    box_format: Literal["xyxy", "xywh"] = "xyxy",
    min_side: int = 2,
    class_scale: float | list[float] = 1.0,
):
    """A decoder written in a test (not registered, not importable by name).

    * ``score_threshold``: keep rows scoring at least this
    """
    a = np.asarray(layers["o"], np.float32).reshape(-1, 6)
    boxes = a[:, :4].copy()
    if box_format == "xywh":
        boxes[:, 2:] += boxes[:, :2]
    keep = (a[:, 4] >= score_threshold) & (np.minimum(*(boxes[:, 2:] - boxes[:, :2]).T) >= min_side)
    return Detections(boxes[keep], a[keep, 4], a[keep, 5].astype(np.int32), "network")


def config(text: str = ""):
    return parse_nvinfer_config("[property]\nnum-detected-classes=3\ninfer-dims=3;320;320\n" + text)


def user_pp() -> Postprocess:
    return Postprocess.from_nvinfer_config(config("cluster-mode=2\n"), decoder=corner_decoder)


def test_user_decoder_params_read_and_changed_by_name_without_allow_import():
    pp = user_pp()
    assert not pp.allow_import and pp.steps[0].name.endswith(":corner_decoder")
    specs = pp.param_specs()
    s = specs["score_threshold"]
    assert (s.step_kind, s.step_index, s.type, s.default) == ("decode", 0, "float", 0.3)
    assert s.range == Range(0, 1) and "keep rows scoring" in s.doc
    assert specs["flip"].type == "bool"
    assert specs["box_format"].type == "choice" and specs["box_format"].choices == ("xyxy", "xywh")
    assert specs["min_side"].type == "int" and specs["min_side"].range is None
    assert specs["class_scale"].type == "float" and specs["class_scale"].per_class
    assert pp.get_param("score_threshold") == 0.3  # the function's default, read from the object
    q = pp.set_params({"score_threshold": 0.55, "flip": True, "iou_threshold": 0.4})
    assert q.steps[0].params == {"score_threshold": 0.55, "flip": True}
    assert q.get_param("iou_threshold") == 0.4 and q.step_function(0) is corner_decoder
    r = q.set_params({"class_scale": 2.0}, class_id=1)  # per class: a list of num_classes values
    assert r.get_param("class_scale") == [1.0, 2.0, 1.0] and r.get_param("class_scale", 1) == 2.0
    # the spec saved and loaded with the function given back: params by name still work
    back = Postprocess.from_dict(r.to_dict(), functions={r.steps[0].name: corner_decoder})
    assert back.get_param("class_scale", 2) == 1.0 and back.get_param("score_threshold") == 0.55
    with pytest.raises(PostprocessError, match="corner_decoder.*'box_format'"):
        pp.set_params({"box_format": "yxyx"})  # not one of the Literal's values
    with pytest.raises(ValueError, match="no step .* takes a param 'bogus'; settable: score_thr"):
        pp.get_param("bogus")


def test_user_function_in_each_step_kind_is_tunable_by_name():
    def only_big(dets, ctx, *, min_area: Annotated[float, Range(0, 1e6)] = 4.0):
        w, h = (dets.boxes[:, 2:] - dets.boxes[:, :2]).T
        return dets[w * h >= min_area]

    def keep_first(dets, ctx, *, limit: int = 10):
        return dets[:limit]

    def shift(dets, ctx, *, dx: float = 0.0):
        return Detections(dets.boxes + [dx, 0, dx, 0], dets.scores, dets.class_ids, "frame")

    steps = [
        {"kind": "decode", "name": corner_decoder},
        {"kind": "filter", "name": only_big},
        {"kind": "cluster", "name": keep_first},
        {"kind": "scale", "name": shift},
    ]
    pp = Postprocess(steps, num_classes=3)
    specs = pp.param_specs()
    assert {n: specs[n].step_kind for n in ("min_area", "limit", "dx")} == {
        "min_area": "filter",
        "limit": "cluster",
        "dx": "scale",
    }
    q = pp.set_params({"min_area": 50.0, "limit": 1, "dx": 5.0})
    layers = {
        "o": np.array([[0, 0, 10, 10, 0.9, 0], [0, 0, 4, 4, 0.8, 1], [20, 20, 40, 40, 0.7, 2]])
    }
    d = q.run(layers, StepContext(network_size=(64, 64)))
    assert len(d) == 1 and d.boxes[0].tolist() == [5, 0, 15, 10]


def test_shared_names_go_to_the_step_the_key_table_names():
    pp = Postprocess.from_nvinfer_config(config("cluster-mode=2\n"), decoder="detectnet_v2")
    specs = pp.param_specs()
    assert specs["pre_cluster_threshold"].step_kind == "filter"  # nvinfer's key: the threshold step
    assert specs["decode.pre_cluster_threshold"].step_kind == "decode"
    assert specs["pre_cluster_threshold"].nvinfer_key == "pre-cluster-threshold"
    q = pp.set_params({"decode.pre_cluster_threshold": 0.7, "pre_cluster_threshold": 0.1})
    assert q.steps[0].params["pre_cluster_threshold"] == 0.7
    assert q.steps[1].params["pre_cluster_threshold"] == 0.1


def test_object_filter_params_add_the_step_after_scaling():
    pp = Postprocess(
        [{"kind": "decode", "name": corner_decoder}, {"kind": "scale", "name": "none"}]
    )
    assert pp.param_specs()["detected_min_w"].step_index is None
    assert pp.get_param("detected_min_w") == 0
    q = pp.set_params({"detected_min_w": 12})
    assert [(s.kind, s.name) for s in q.steps][-1] == ("filter", "objects")
    assert q.get_param("detected_min_w") == 12 and q.param_specs()["detected_min_w"].step_index == 2


def test_every_key_row_names_a_param_its_steps_take():
    """Adding a key is one row: the row must name a real param of each step it lists."""
    for row in NVINFER_PARAMS:
        for step in row.steps:
            kind, name = step.split(":")
            fn = get_step(kind, name)  # type: ignore[arg-type]
            assert row.param in inspect.signature(fn).parameters, (row.key, step)
            assert row.field  # the key is parsed by dsprobe.nvinfer.keys
    assert get_step("filter", "objects") is object_filters
    for mode, (name, fixed) in CLUSTER_MODES.items():
        assert cluster_mode_of(name, fixed) == mode


@pytest.mark.parametrize(
    "text",
    [
        "cluster-mode=2\nmaintain-aspect-ratio=1\nsymmetric-padding=1\n[class-attrs-all]\n"
        "pre-cluster-threshold=0.25\nnms-iou-threshold=0.45\ntopk=30\npost-cluster-threshold=0.1\n"
        "[class-attrs-1]\npre-cluster-threshold=0.6\ndetected-min-w=8\n",
        "cluster-mode=0\nfilter-out-class-ids=0;2\n[class-attrs-all]\ngroup-threshold=2\neps=0.3\n",
        "cluster-mode=3\ncrop-objects-to-roi-boundary=1\n[class-attrs-all]\nminBoxes=3\neps=0.2\n"
        "dbscan-min-score=0.4\nroi-top-offset=16\n[class-attrs-2]\nroi-bottom-offset=4\n",
        "cluster-mode=4\n[class-attrs-all]\ntopk=5\ndetected-max-h=300\n",
    ],
)
def test_key_table_round_trip_config_spec_keys_config(text):
    cfg = config(text)
    pp = Postprocess.from_nvinfer_config(cfg, opencv_build=True)
    exported = to_nvinfer(pp).text()
    back = parse_nvinfer_config(
        exported.replace("[property]", "[property]\ninfer-dims=3;320;320", 1)
    )
    assert back.cluster_mode == cfg.cluster_mode
    for row in NVINFER_PARAMS:
        if row.param in ("maintain_aspect_ratio", "symmetric_padding"):
            assert row.config_value(back, 3) == row.config_value(cfg, 3), row.key
        elif any(row.param in s.params for s in pp.steps):
            assert row.config_value(back, 3) == row.config_value(cfg, 3), row.key
    assert Postprocess.from_nvinfer_config(back, opencv_build=True).to_dict() == pp.to_dict()
