"""Automatic search on a real recording (known best setting) and export of nvinfer keys."""

from __future__ import annotations

from dsprobe import Postprocess, open_recording
from dsprobe.analysis.evaluate import load_ground_truth
from dsprobe.analysis.export import to_nvinfer
from dsprobe.analysis.search import search
from dsprobe.nvinfer.config import load_nvinfer_config


def test_search_finds_known_best(sample_recording, sample_videos):
    r = open_recording(sample_recording)
    pp = Postprocess.from_nvinfer_config(r.config())
    gt = load_ground_truth(sample_videos.gt_json, frame_size=(1280, 720))
    res = search(
        pp.decode_recording(r),
        gt,
        {"pre_cluster_threshold": [0.25, 0.999], "iou_threshold": [0.45, 0.99]},
    )
    assert len(res.table) == 4
    # a 0.999 threshold throws nearly everything away, NMS IoU 0.99 keeps duplicates: both must lose
    assert res.best_params == {"pre_cluster_threshold": 0.25, "iou_threshold": 0.45}
    assert res.best.step("cluster").params["iou_threshold"] == 0.45
    assert res.pivot().shape == (2, 2)


def test_export_nvinfer_keys_and_limits():
    pp = Postprocess.from_nvinfer_config(load_nvinfer_config("tests/data/configs/pgie_yolo.txt"))
    text = to_nvinfer(pp).text()
    assert (
        "[class-attrs-all]\npre-cluster-threshold=0.25" in text
        and "[class-attrs-2]\npre-cluster-threshold=0.6" in text
    )
    assert "cluster-mode=2" in text and "nms-iou-threshold=0.45" in text and "topk=300" in text
    assert "NOT expressible" in text and "yolov8" in text
    soft = pp.with_step("cluster", "soft_nms")
    assert any("soft_nms" in u for u in to_nvinfer(soft).unsupported)
