"""Hostile and malformed nvinfer configs, label files and postprocess specs: one clear error naming
the file and line (configs) or the step and param (specs), never a hang, a huge allocation or a raw
exception; export-nvinfer writes only what nvinfer accepts. docs/reliability.md counts the cases."""

import json
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dsprobe import Postprocess
from dsprobe.analysis.export import to_nvinfer
from dsprobe.cli import main as cli_main
from dsprobe.nvinfer.config import NvinferConfigError, load_nvinfer_config, parse_nvinfer_config
from dsprobe.postprocess.registry import PostprocessError

BASE = "[property]\ngie-unique-id=1\nnum-detected-classes=4\ncluster-mode=2\n"

BAD_CONFIGS = {
    "cluster-mode 9": (BASE + "[class-attrs-all]\n" + "cluster-mode=9\n", None),
    "property cluster-mode 9": (
        "[property]\ncluster-mode=9\n",
        ":2: cluster-mode=9 must be one of",
    ),
    "NaN threshold": (
        BASE + "[class-attrs-all]\npre-cluster-threshold=nan\n",
        ":6: pre-cluster-threshold=nan must be a finite",
    ),
    "IoU 2": (
        BASE + "[class-attrs-all]\nnms-iou-threshold=2\n",
        ":6: nms-iou-threshold=2.0 must be in [0, 1]",
    ),
    "negative dims": (
        "[property]\ninfer-dims=3;-640;640\n",
        ":2: infer-dims=3;-640;640 value -640 must be >= 1",
    ),
    "huge num-detected-classes": (
        "[property]\nnum-detected-classes=999999999999\n",
        ":2: num-detected-classes=999999999999 must be <=",
    ),
    "negative topk": (BASE + "[class-attrs-all]\ntopk=-2\n", ":6: topk=-2 must be >= 0"),
    "process-mode 3": ("[property]\nprocess-mode=3\n", ":2: process-mode=3 must be one of 1, 2"),
    "batch-size 0": ("[property]\nbatch-size=0\n", ":2: batch-size=0 must be >= 1"),
    "inf net-scale-factor": (
        "[property]\nnet-scale-factor=inf\n",
        ":2: net-scale-factor=inf must be a finite",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_values_name_file_and_line(tmp_path, case):
    text, words = BAD_CONFIGS[case]
    path = tmp_path / "cfg.txt"
    path.write_text(text)
    if words is None:  # a [property] key in a class section is unknown there, not an error
        assert "class-attrs-all:cluster-mode" in load_nvinfer_config(path).unknown_keys
        return
    with pytest.raises(NvinferConfigError) as err:
        load_nvinfer_config(path)
    assert f"{path}{words}" in str(err.value), str(err.value)


def test_yaml_alias_bomb_is_refused_at_once(tmp_path):
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi")
    )
    path = tmp_path / "bomb.yml"
    path.write_text("property:\n  gie-unique-id: 1\n" + bomb)
    t0 = time.monotonic()
    with pytest.raises(NvinferConfigError, match=r"bomb\.yml:3: YAML anchors and aliases"):
        load_nvinfer_config(path)
    assert time.monotonic() - t0 < 2


def test_nested_yaml_values_are_refused_with_the_line(tmp_path):
    path = tmp_path / "n.yml"
    path.write_text("property:\n  gie-unique-id: 1\n  offsets: {a: [1, 2]}\n")
    with pytest.raises(NvinferConfigError, match=r"n\.yml:3: property: values are numbers"):
        load_nvinfer_config(path)


def test_non_utf8_config_and_bad_label_files(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"[property]\n# caf\xe9\ngie-unique-id=1\n")
    with pytest.raises(NvinferConfigError, match=r"latin1\.txt:2: not UTF-8 text"):
        load_nvinfer_config(bad)
    for name, make in (
        ("dir", lambda p: p.mkdir()),
        ("binary", lambda p: p.write_bytes(b"car\0\x01\x02")),
        ("latin", lambda p: p.write_bytes(b"caf\xe9\n")),
    ):
        label = tmp_path / name
        make(label)
        cfg = parse_nvinfer_config(
            f"[property]\nlabelfile-path={name}\n", source=str(tmp_path / "c.txt")
        )
        with pytest.raises(NvinferConfigError, match=rf"c\.txt: labelfile-path .*{name}"):
            cfg.labels()
    missing = parse_nvinfer_config(
        "[property]\nlabelfile-path=nope\n", source=str(tmp_path / "c.txt")
    )
    with pytest.warns(UserWarning, match="does not exist: no labels"):
        assert missing.labels() == []


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                sorted(
                    [
                        "gie-unique-id",
                        "num-detected-classes",
                        "cluster-mode",
                        "infer-dims",
                        "offsets",
                        "net-scale-factor",
                        "pre-cluster-threshold",
                        "topk",
                        "nms-iou-threshold",
                        "eps",
                        "batch-size",
                        "filter-out-class-ids",
                        "[class-attrs-all]",
                        "[class-attrs-2]",
                        "junk",
                    ]
                )
            ),
            st.text(alphabet="0123456789-.;xnaie ", max_size=12),
        ),
        max_size=8,
    )
)
def test_fuzzed_configs_parse_or_name_the_line(lines):
    text = "[property]\n" + "".join(
        (k + "\n") if k.startswith("[") else f"{k}={v}\n" for k, v in lines
    )
    try:
        cfg = parse_nvinfer_config(text, source="fz.txt")
    except NvinferConfigError as exc:
        assert str(exc).startswith("fz.txt")
        return
    assert 0 <= cfg.num_detected_classes <= 1 << 16
    assert all(math.isfinite(v) for v in cfg.preprocessing.offsets)


# ------------------------------------------------------------------ specs
GOOD_SPEC = {
    "format": "dsprobe-postprocess",
    "version": 1,
    "labels": ["a", "b"],
    "num_classes": 2,
    "steps": [
        {"kind": "decode", "name": "yolov8", "params": {}},
        {"kind": "filter", "name": "threshold", "params": {"pre_cluster_threshold": 0.25}},
        {"kind": "cluster", "name": "nms", "params": {"iou_threshold": 0.45, "topk": 100}},
    ],
}


def spec(**changes):
    d = json.loads(json.dumps(GOOD_SPEC))
    for path, value in changes.items():
        *head, last = path.split("__")
        node = d
        for k in head:
            node = node[int(k)] if isinstance(node, list) else node[k]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return d


def deep(n):
    v = 0.5
    for _ in range(n):
        v = [v]
    return v


BAD_SPECS = {
    "a list": ([1, 2], "format="),
    "no steps": ({k: v for k, v in GOOD_SPEC.items() if k != "steps"}, "needs 'steps'"),
    "version 1.0 text": (spec(version="1.0"), "version must be a whole number"),
    "steps not a list": (spec(steps={"a": 1}), "needs 'steps'"),
    "step a string": (spec(steps__1="nms"), "step 1: a step is an object"),
    "unknown step key": (spec(steps__1__extra=1), "step 1: unknown keys ['extra']"),
    "IoU 2": (
        spec(steps__2__params__iou_threshold=2),
        "step 2 (cluster 'nms'): param iou_threshold=2 must be in [0, 1]",
    ),
    "NaN threshold": (
        spec(steps__1__params__pre_cluster_threshold=float("nan")),
        "param pre_cluster_threshold=nan must be a finite",
    ),
    "topk 3.5": (spec(steps__2__params__topk=3.5), "param topk=3.5 must be a whole number"),
    "per-class IoU out of range": (
        spec(steps__2__params__iou_threshold=[0.5, 1.5]),
        "(item 1) must be in [0, 1]",
    ),
    "per-class map bad key": (
        spec(steps__2__params__iou_threshold={"x": 0.5}),
        "per-class keys are class ids",
    ),
    "sigma 0": (
        spec(steps__2={"kind": "cluster", "name": "soft_nms", "params": {"sigma": 0}}),
        "param sigma=0 must be > 0",
    ),
    "unknown geometry key": (
        spec(geometry={"network_width": 640, "letterbox": True}),
        "geometry: unknown keys ['letterbox']",
    ),
    "geometry negative": (spec(geometry={"network_width": -1}), "geometry: network_width=-1"),
    "deep nesting": (spec(steps__1__params__pre_cluster_threshold=deep(50)), "nested deeper"),
    "huge num_classes": (spec(num_classes=10**12), "num_classes must be a whole number"),
    "labels not text": (spec(labels=[1, 2]), "labels must be a list"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_malformed_specs_name_the_step_and_param(tmp_path, case):
    d, words = BAD_SPECS[case]
    with pytest.raises(PostprocessError) as err:
        Postprocess.from_dict(d)
    assert words in str(err.value), str(err.value)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(d))
    assert cli_main(["export-nvinfer", str(path)]) == 1  # one line, no traceback, nothing written


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {"format": st.just("dsprobe-postprocess")},
        optional={
            "version": json_values,
            "steps": st.lists(
                st.fixed_dictionaries(
                    {
                        "kind": st.sampled_from(["decode", "filter", "cluster", "scale", "x"]),
                        "name": st.sampled_from(["yolov8", "nms", "threshold", "soft_nms", "q"]),
                    },
                    optional={
                        "params": st.dictionaries(
                            st.sampled_from(
                                ["iou_threshold", "topk", "sigma", "pre_cluster_threshold", "other"]
                            ),
                            json_values,
                            max_size=3,
                        )
                    },
                )
                | json_values,
                max_size=4,
            ),
            "labels": json_values,
            "num_classes": json_values,
            "geometry": json_values,
        },
    )
)
def test_fuzzed_specs_load_or_give_one_postprocess_error(d):
    try:
        Postprocess.from_dict(d)
    except PostprocessError:
        pass


def test_spec_with_null_labels_loads_without_labels():
    """Found by the fuzz test above: "labels": null passed the spec check, then raised TypeError."""
    d = {"format": "dsprobe-postprocess", "steps": [{"kind": "decode", "name": "yolov8"}]}
    assert list(Postprocess.from_dict({**d, "labels": None}).labels) == []


def test_export_refuses_values_nvinfer_rejects():
    pp = Postprocess.from_dict(GOOD_SPEC)
    assert "nms-iou-threshold=0.45" in to_nvinfer(pp).text()
    bad = pp.with_params("cluster", iou_threshold=3.0)  # set in Python, after any spec check
    with pytest.raises(ValueError, match="nvinfer would refuse .*nms-iou-threshold=3.0 must be in"):
        to_nvinfer(bad)
