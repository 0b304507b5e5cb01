"""dsprobe compare on two real recordings that differ in a known way; mAP by hand; search; export."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from dsprobe import Postprocess, open_recording
from dsprobe.compare import compare
from dsprobe.detections import Detections
from dsprobe.evaluate import GroundTruth, evaluate, load_ground_truth, match
from dsprobe.export import to_nvinfer
from dsprobe.nvinfer_config import load_nvinfer_config
from dsprobe.reference.recorder import record_onnx
from dsprobe.sample import CONFIG_PATH
from dsprobe.search import search


@pytest.fixture(scope="module")
def padded_variant(sample_videos, tmp_path_factory):
    """The same streams recorded with right/bottom padding instead of symmetric padding."""
    cfg = tmp_path_factory.mktemp("cfg") / "rb.txt"
    cfg.write_text(CONFIG_PATH.read_text().replace("symmetric-padding=1", "symmetric-padding=0")
                   .replace("onnx-file=model.onnx", f"onnx-file={CONFIG_PATH.parent / 'model.onnx'}")
                   .replace("labelfile-path=labels.txt", f"labelfile-path={CONFIG_PATH.parent / 'labels.txt'}"))
    out = cfg.parent / "rb.h5"
    record_onnx(sample_videos.paths, cfg, None, out, batch=2, progress=False, images=False, max_frames=15)
    return out


def test_compare_identical_and_padding_variant(sample_recording, padded_variant, tmp_path):
    same = compare(sample_recording, sample_recording)
    assert same.aligned_frames == 60 and same.layers[0].max_abs == 0 and same.layers[0].cosine_min == pytest.approx(1.0)
    assert same.detections.missing == same.detections.extra == 0 and same.detections.mean_iou == 1.0
    rep = compare(padded_variant, sample_recording)
    assert rep.aligned_frames == 30 and rep.only_in_b == 30
    assert rep.layers[0].max_abs > 1  # the boxes moved by the padding offset in network pixels
    # the same postprocess (A's geometry: right/bottom padding) maps B's centred boxes 70 px too low:
    # exactly the preprocessing mismatch the report must make visible
    d = rep.detections
    assert d.missing > 100 and d.matched < 0.2 * (d.matched + d.missing)
    png = tmp_path / "drift.png"
    out = subprocess.run([sys.executable, "-m", "dsprobe.cli", "compare", str(padded_variant), str(sample_recording),
                          "--json", "--plot", str(png)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["aligned_frames"] == 30 and png.stat().st_size > 1000


def test_map_by_hand():
    gt = GroundTruth({"images": [{"id": 0}, {"id": 1}],
                      "annotations": [{"id": 1, "image_id": 0, "category_id": 0, "bbox": [0, 0, 10, 10], "area": 100,
                                       "iscrowd": 0},
                                      {"id": 2, "image_id": 1, "category_id": 0, "bbox": [0, 0, 10, 10], "area": 100,
                                       "iscrowd": 0}],
                      "categories": [{"id": 0, "name": "a"}]}, pd.DataFrame(), ["a"])
    # image 0: a perfect hit (0.9); image 1: a miss at 0.8 scoring above the hit... then the hit at 0.7
    df = pd.DataFrame({"source_id": [0, 0, 0], "frame_num": [0, 1, 1], "x1": [0, 50, 0], "y1": [0, 50, 0],
                       "x2": [10, 60, 10], "y2": [10, 60, 10], "score": [0.9, 0.8, 0.7], "class_id": [0, 0, 0]})
    r = evaluate(df, gt, [(0, 0), (0, 1)])
    # PR points: (R .5, P 1), (R .5, P .5), (R 1, P 2/3); interpolated precision: 1 up to R .5, 2/3 to R 1
    # COCO 101-point AP = (51 * 1 + 50 * 2/3) / 101
    assert r.map50 == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-6)
    assert r.map50_95 == pytest.approx(r.map50)  # exact boxes: same at every IoU


def test_match_is_one_to_one():
    a = Detections([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], [0.9, 0.8, 0.7], [0, 0, 0], "frame")
    b = Detections([[0, 0, 10, 10], [100, 100, 110, 110]], [1, 1], [0, 0], "frame")
    m = match(a, b)
    assert m.pairs.tolist() == [[0, 0]] and m.unmatched_a.tolist() == [1, 2] and m.unmatched_b.tolist() == [1]


def test_search_finds_known_best(sample_recording, sample_videos):
    r = open_recording(sample_recording)
    pp = Postprocess.from_nvinfer_config(r.config())
    gt = load_ground_truth(sample_videos.gt_json, frame_size=(1280, 720))
    res = search(pp.decode_recording(r), gt, {"pre_cluster_threshold": [0.25, 0.999], "iou_threshold": [0.45, 0.99]})
    assert len(res.table) == 4
    # a 0.999 threshold throws nearly everything away, NMS IoU 0.99 keeps duplicates: both must lose
    assert res.best_params == {"pre_cluster_threshold": 0.25, "iou_threshold": 0.45}
    assert res.best.step("cluster").params["iou_threshold"] == 0.45
    assert res.pivot().shape == (2, 2)


def test_export_nvinfer_keys_and_limits():
    pp = Postprocess.from_nvinfer_config(load_nvinfer_config("tests/data/configs/pgie_yolo.txt"))
    text = to_nvinfer(pp).text()
    assert "[class-attrs-all]\npre-cluster-threshold=0.25" in text and "[class-attrs-2]\npre-cluster-threshold=0.6" in text
    assert "cluster-mode=2" in text and "nms-iou-threshold=0.45" in text and "topk=300" in text
    assert "NOT expressible" in text and "yolov8" in text
    soft = pp.with_step("cluster", "soft_nms")
    assert any("soft_nms" in u for u in to_nvinfer(soft).unsupported)
