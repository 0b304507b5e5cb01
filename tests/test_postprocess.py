"""Postprocess steps against hand-computed answers and against the nvinfer C++ transcription."""

from __future__ import annotations

import json

import numpy as np
import pytest

import nvinfer_reference as ref
from dsprobe.detections import Detections
from dsprobe.geometry import nvinfer_transform
from dsprobe.nvinfer_config import load_nvinfer_config, parse_nvinfer_config
from dsprobe.postprocess import Postprocess, PostprocessError
from dsprobe.postprocess.cluster import agnostic_nms, cv_group_rectangles, group_rectangles, nms, no_clustering, soft_nms, weighted_merge
from dsprobe.postprocess.decoders import (decode_classifier, decode_detectnet_v2, decode_detr, decode_embedding,
                                          decode_nms_outputs, decode_nms_plugin, decode_ssd, decode_xyxy_score_class,
                                          decode_yolov5, decode_yolov8, seg_masks, decode_yolov8_seg)
from dsprobe.postprocess.filters import object_filters, threshold
from dsprobe.postprocess.layers import LayerNotFoundError
from dsprobe.postprocess.registry import StepContext
from dsprobe.postprocess.scale import scale_nvinfer, scale_ultralytics
from dsprobe.types import FrameRecord, ObjectRecord

CTX = StepContext(network_size=(640, 640), frame_size=(1280, 720))


def random_dets(rng, n, nc, size=100.0, ties=True):
    xy = rng.uniform(0, size, (n, 2)).astype(np.float32)
    wh = rng.uniform(0, size / 3, (n, 2)).astype(np.float32)
    wh[rng.random(n) < 0.05] = 0  # degenerate boxes
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = rng.choice([0.3, 0.5, 0.7], n) if ties else rng.random(n)
    return Detections(boxes, scores.astype(np.float32), rng.integers(0, nc, n), "network")


# ---------------------------------------------------------------------------------------------- NMS
def test_nms_matches_cpp_transcription_on_thousands_of_random_cases():
    rng = np.random.default_rng(0)
    for case in range(1500):
        nc = int(rng.integers(1, 4))
        d = random_dets(rng, int(rng.integers(0, 25)), nc, ties=case % 2 == 0)
        iou = rng.uniform(0.1, 0.9, nc).round(2).tolist()
        post = rng.choice([0.0, 0.3, 0.5], nc).tolist()
        topk = rng.choice([-1, 0, 1, 3], nc).tolist()
        got = nms(d, None, iou_threshold=iou, post_cluster_threshold=post, topk=topk)
        objs = [(int(c), tuple(b), s) for b, s, c in zip(d.boxes, d.scores, d.class_ids)]
        want = ref.cluster_nms(objs, nc, iou, post, topk)
        assert got.class_ids.tolist() == [o[0] for o in want], case
        np.testing.assert_array_equal(got.boxes, np.array([o[1] for o in want], np.float32).reshape(-1, 4))
        np.testing.assert_array_equal(got.scores, np.array([o[2] for o in want], np.float32))


def test_nms_by_hand():
    d = Detections([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10]], [0.9, 0.8, 0.7, 0.95],
                   [0, 0, 0, 1], "network")
    out = nms(d, None, iou_threshold=0.5, topk=-1)
    # class 0: box1 IoU with box0 = 90/110 = 0.818 > 0.5 -> suppressed; class 1 after class 0
    assert out.class_ids.tolist() == [0, 0, 1] and out.scores.tolist() == pytest.approx([0.9, 0.7, 0.95])
    assert len(nms(d, None, iou_threshold=0.5, post_cluster_threshold=0.9)) == 1  # strict '>' drops 0.9
    assert len(nms(d, None, topk=0)) == 0


def test_mode0_without_opencv_is_nms_05_top20():
    rng = np.random.default_rng(1)
    d = random_dets(rng, 200, 2, size=400, ties=False)
    assert group_rectangles(d).equals(nms(d, None, iou_threshold=0.5, topk=20))
    assert np.bincount(group_rectangles(d).class_ids).max() <= 20


def test_group_rectangles_opencv_semantics_by_hand():
    rects = np.array([[10, 10, 20, 20], [11, 10, 20, 21], [12, 11, 19, 20], [100, 100, 10, 10]])
    out = cv_group_rectangles(rects, 1, 0.2)
    # first three cluster (delta = 0.2*(19+20)/2 = 3.9); mean (11, 10.33, 19.67, 20.33) rounded; lone one dropped
    assert out.tolist() == [[11, 10, 20, 20]]
    d = Detections([[10.9, 10.2, 30.9, 30.2]] * 3, [0.9, 0.8, 0.7], [0, 0, 0], "network")
    g = group_rectangles(d, group_threshold=1, eps=0.2, opencv_build=True)
    assert g.boxes.tolist() == [[10, 10, 30, 30]] and g.scores.tolist() == pytest.approx([-0.1])


def test_mode4_topk_only_and_extras():
    d = Detections([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], [0.1, 0.9, 0.5], [0, 0, 0], "network")
    assert no_clustering(d, topk=2).scores.tolist() == pytest.approx([0.9, 0.5])
    a = Detections([[0, 0, 10, 10], [1, 1, 11, 11]], [0.9, 0.8], [0, 1], "network")
    assert len(agnostic_nms(a, iou_threshold=0.5)) == 1 and len(nms(a, None, iou_threshold=0.5)) == 2
    s = soft_nms(a, iou_threshold=0.3, method="linear", per_class_nms=False)
    iou = 81 / 119
    assert s.scores.tolist() == pytest.approx([0.9, 0.8 * (1 - iou)], rel=1e-5)
    w = weighted_merge(Detections([[0, 0, 10, 10], [2, 0, 12, 10]], [0.75, 0.25], [0, 0], "network"),
                       iou_threshold=0.5)
    assert w.boxes.tolist() == [[0.5, 0, 10.5, 10]] and w.scores.tolist() == pytest.approx([0.5])


# ---------------------------------------------------------------------------------------------- filters + scale
def test_threshold_is_inclusive_and_drops_unknown_classes():
    d = Detections(np.zeros((4, 4)), [0.25, 0.2499, 0.9, 0.9], [0, 0, 1, 7], "network")
    out = threshold(d, None, pre_cluster_threshold=[0.25, 0.95], num_classes=2)
    assert out.scores.tolist() == pytest.approx([0.25])


def test_object_filters_roi_and_sizes():
    ctx = StepContext((640, 640), (1280, 720))
    d = Detections([[0, 5, 50, 50], [0, 100, 5, 120], [0, 700, 50, 719], [0, 100, 50, 200]], [1, 1, 1, 1],
                   [0, 0, 0, 1], "frame")
    out = object_filters(d, ctx, detected_min_w=10, roi_top_offset=10, roi_bottom_offset=10, filter_out_class_ids=[1])
    assert len(out) == 0  # 0: crosses top ROI, 1: too narrow, 2: crosses bottom ROI, 3: class filtered
    clipped = object_filters(d[[0, 2]], ctx, roi_top_offset=10, roi_bottom_offset=10, crop_objects_to_roi_boundary=True)
    # nvinfer moves the top down to the ROI without shortening the box; the bottom is cut at the ROI
    assert clipped.boxes.tolist() == [[0, 10, 50, 55], [0, 700, 50, 710]]


def test_scale_matches_transcription_pgie_and_sgie():
    rng = np.random.default_rng(2)
    for case in range(300):
        crop = (float(rng.uniform(0, 500)), float(rng.uniform(0, 300)), float(rng.uniform(4, 700)),
                float(rng.uniform(4, 400)))
        mar, sym = bool(rng.integers(2)), bool(rng.integers(2))
        d = random_dets(rng, 5, 2, size=224)
        ctx = StepContext((224, 160), (1280, 720), crop_rect=crop)
        got = scale_nvinfer(d, ctx, maintain_aspect_ratio=mar, symmetric_padding=sym)
        t = nvinfer_transform(crop, (224, 160), maintain_aspect_ratio=mar, symmetric_padding=sym)
        for b, g in zip(d.boxes, got.boxes):
            left, top, w, h = ref.map_back(b, t.offset_left, t.offset_top, t.ratio_x, t.ratio_y, crop[0], crop[1])
            np.testing.assert_allclose(g, np.float32([left, top, left + w, top + h]), rtol=0, atol=1e-3)


def test_scale_deepstream9_clamps_negative_left_top():
    d = Detections([[-10, -4, 50, 40]], [1], [0], "network")
    ctx = StepContext((640, 640), (640, 640))
    assert scale_nvinfer(d, ctx, deepstream_version=7.1).boxes.tolist() == [[-10, -4, 50, 40]]
    assert scale_nvinfer(d, ctx, deepstream_version=9.0).boxes.tolist() == [[0, 0, 60, 44]]


def test_scale_ultralytics_letterbox():
    d = Detections([[0, 140, 640, 500]], [1], [0], "network")
    out = scale_ultralytics(d, StepContext((640, 640), (1280, 720)))
    assert out.boxes.tolist() == [[0, 0, 1280, 720]]


# ---------------------------------------------------------------------------------------------- decoders
def test_yolov8_decode_by_hand_with_and_without_batch_axis():
    a = np.zeros((4 + 2, 8), np.float32)  # real heads have far more anchors than rows
    a[:4, 0] = [100, 50, 20, 10]
    a[4:, 0] = [0.1, 0.8]
    a[4:, 1] = [0.0005, 0.0]
    a[:4, 2] = [10, 10, 4, 4]
    a[4:, 2] = [0.3, 0.2]
    for layers in ({"output0": a}, {"output0": a[None]}, {"output0": a.T.copy()}):
        d = decode_yolov8(layers, CTX)
        assert d.boxes.tolist() == [[90, 45, 110, 55], [8, 8, 12, 12]]
        assert d.class_ids.tolist() == [1, 0] and d.scores.tolist() == pytest.approx([0.8, 0.3])


def test_yolov5_objectness_times_class():
    a = np.array([[10, 10, 4, 4, 0.5, 0.2, 0.8], [0, 0, 2, 2, 0.0001, 1, 0]], np.float32)
    d = decode_yolov5({"out": a[None]}, CTX, score_threshold=0.01)
    assert d.scores.tolist() == pytest.approx([0.4]) and d.class_ids.tolist() == [1]


def test_xyxy_nms_outputs_plugin_ssd_detr():
    d = decode_xyxy_score_class({"o": np.array([[1, 2, 3, 4, 0.9, 2], [0, 0, 1, 1, 0.1, 0]], np.float32)}, CTX,
                                score_threshold=0.5)
    assert d.boxes.tolist() == [[1, 2, 3, 4]] and d.class_ids.tolist() == [2]
    layers = {"num_detections": np.array([1]), "detection_boxes": np.array([[0.1, 0.2, 0.5, 0.6], [0, 0, 1, 1]]),
              "detection_scores": np.array([0.7, 0.6]), "detection_classes": np.array([3, 1])}
    d = decode_nms_outputs(layers, CTX, normalized=True, box_order="yxyx")
    np.testing.assert_allclose(d.boxes, [[128, 64, 384, 320]], rtol=1e-6)
    assert d.class_ids.tolist() == [3]
    s = decode_ssd(layers, CTX)
    np.testing.assert_allclose(s.boxes, [[128, 64, 384, 320]], rtol=1e-6)
    rec = np.array([0, 2, 0.9, 0.5, 0.5, 1.2, 0.75] + [0] * 7, np.float32)
    p = decode_nms_plugin({"NMS": rec, "NMS_1": np.array([1])}, CTX, tao_clip=True)
    np.testing.assert_allclose(p.boxes, [[320, 320, 320 + 448, 480]], rtol=1e-6)
    assert p.class_ids.tolist() == [2]
    q = decode_detr({"pred_boxes": np.array([[0.5, 0.5, 0.5, 0.25]]), "pred_logits": np.array([[0.0, 2.0]])}, CTX)
    np.testing.assert_allclose(q.boxes, [[160, 240, 480, 400]], rtol=1e-6)
    assert q.scores[0] == pytest.approx(1 / (1 + np.exp(-2)))


def test_detectnet_v2_grid_decode_like_nvinfer():
    ctx = StepContext((64, 32), (64, 32))
    cov = np.zeros((1, 2, 4), np.float32)
    cov[0, 1, 2] = 0.9
    bbox = np.zeros((4, 2, 4), np.float32)
    bbox[:, 1, 2] = [0.1, 0.2, 0.3, 0.4]
    d = decode_detectnet_v2({"conv2d_bbox": bbox, "conv2d_cov/Sigmoid": cov}, ctx, pre_cluster_threshold=0.5)
    # stride 16; cx = (2*16+0.5); x1 = 32.5 - 3.5 = 29, y1 = 16.5 - 7 = 9.5, x2 = 32.5 + 10.5 = 43, y2 -> 30.5
    np.testing.assert_allclose(d.boxes, [[29.0, 9.5, 43.0, 30.5]], rtol=1e-6)
    with pytest.raises(LayerNotFoundError, match="could not find one layer whose name contains 'cov'.*'conv2d_bbox'"):
        decode_detectnet_v2({"conv2d_bbox": bbox}, ctx)


def test_classifier_embedding_seg():
    d = decode_classifier({"color": np.array([0.2, 0.5, 0.3]), "make": np.array([0.4, 0.4])}, CTX,
                          classifier_threshold=0.45)
    assert d.class_ids.tolist() == [1] and d.vectors[:, 0].tolist() == [0]
    e = decode_embedding({"emb": np.array([[3.0, 4.0]])}, CTX)
    np.testing.assert_allclose(e.vectors, [[0.6, 0.8]], rtol=1e-6)
    a = np.zeros((4 + 1 + 2, 10), np.float32)
    a[:4, 0] = [32, 32, 32, 32]
    a[4, 0] = 0.9
    a[5:, 0] = [1.0, -1.0]
    protos = np.stack([np.full((16, 16), 2.0), np.zeros((16, 16))]).astype(np.float32)
    seg = decode_yolov8_seg({"output0": a, "output1": protos}, StepContext((64, 64)), num_masks=2, score_threshold=0.5)
    m = seg_masks(seg, protos, (64, 64), threshold=0.5)
    assert m.shape == (1, 16, 16) and m[0, 6, 6] == 1 and m[0, 1, 1] == 0  # outside the box: zeroed


# ---------------------------------------------------------------------------------------------- Postprocess
def test_from_config_spec_roundtrip_and_user_function(tmp_path):
    cfg = load_nvinfer_config("tests/data/configs/pgie_yolo.txt")
    pp = Postprocess.from_nvinfer_config(cfg, labels=[str(i) for i in range(80)])
    d = pp.to_dict()
    assert [s["name"] for s in d["steps"]] == ["yolov8", "threshold", "nms", "nvinfer"]
    assert d["steps"][1]["params"]["pre_cluster_threshold"][2] == pytest.approx(0.6)
    path = pp.save(tmp_path / "spec.json")
    assert Postprocess.load(path).to_dict() == d
    user = dict(d, steps=[{"kind": "decode", "name": "tests_user_decoders:decode_one", "params": {}}] + d["steps"][1:])
    (tmp_path / "user.json").write_text(json.dumps(user))
    with pytest.raises(PostprocessError, match="allow_import=True"):
        Postprocess.load(tmp_path / "user.json")


def test_bad_specs_name_step_and_param():
    with pytest.raises(PostprocessError, match=r"step 1 \(cluster 'nmz'\): unknown cluster step 'nmz'"):
        Postprocess([{"kind": "decode", "name": "yolov8"}, {"kind": "cluster", "name": "nmz"}])
    with pytest.raises(PostprocessError, match=r"param 'iou_threshold' = 'high'"):
        Postprocess([{"kind": "decode", "name": "yolov8"}, {"kind": "cluster", "name": "nms",
                                                             "params": {"iou_threshold": "high"}}])
    with pytest.raises(PostprocessError, match=r"unknown param 'iou'"):
        Postprocess([{"kind": "decode", "name": "yolov8"}, {"kind": "cluster", "name": "nms", "params": {"iou": 1}}])
    pp = Postprocess([{"kind": "decode", "name": "yolov8", "params": {"layer": "output0"}}])
    with pytest.raises(PostprocessError, match=r"could not find layer 'output0'; the recorded layers are 'x'"):
        pp.run({"x": np.zeros((6, 3), np.float32)}, CTX)


def test_sgie_frames_run_per_object_with_parent_index():
    pp = Postprocess([{"kind": "decode", "name": "xyxy_score_class"}, {"kind": "scale", "name": "nvinfer"}])
    obj = ObjectRecord(rect=(100.5, 50.5, 64, 32), layers={"o": np.array([[0, 0, 32, 16, 0.9, 1]], np.float32)})
    fr = FrameRecord(0, 0, unique_id=2, network_size=(64, 32, 3), frame_size=(1280, 720),
                     objects=[ObjectRecord(rect=(0, 0, 10, 10)), obj])
    d = pp(fr)
    assert d.boxes.tolist() == [[100.5, 50.5, 132.5, 66.5]] and d.object_ids.tolist() == [1]


def test_recording_fast_path_equals_per_frame(tmp_path):
    from dsprobe import Recorder, open_recording
    rng = np.random.default_rng(3)
    with Recorder(tmp_path / "r.h5", images=False) as rec:
        for k in range(20):
            a = np.zeros((8, 50), np.float32)
            a[:2] = rng.uniform(0, 320, (2, 50))
            a[2:4] = rng.uniform(5, 40, (2, 50))
            a[4:] = rng.random((4, 50))
            rec.record(FrameRecord(k % 2, k // 2, network_size=(320, 320, 3), frame_size=(1280, 720),
                                   layers={"output0": a}))
    r = open_recording(tmp_path / "r.h5")
    cfg = parse_nvinfer_config("[property]\nnum-detected-classes=4\ncluster-mode=2\nmaintain-aspect-ratio=1\n"
                               "symmetric-padding=1\ninfer-dims=3;320;320\n[class-attrs-all]\npre-cluster-threshold=0.5\n")
    pp = Postprocess.from_nvinfer_config(cfg)
    df = pp.run_recording(r, batch=7)
    for i in range(len(r)):
        want = pp(r[i])
        got = df[df["row"] == i]
        np.testing.assert_array_equal(got[["x1", "y1", "x2", "y2"]].to_numpy(), want.boxes)
    dec = pp.decode_recording(r)
    again = dec.run(pp.with_params("filter", pre_cluster_threshold=0.9))
    assert all(len(again[i]) <= len(pp(r[i])) for i in again)
