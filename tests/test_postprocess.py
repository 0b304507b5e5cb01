"""Decoders against hand-computed answers (clustering, scaling and the Postprocess composition are
tested in test_cluster.py, test_scale.py and test_pipeline.py)."""

from __future__ import annotations

import numpy as np
import pytest

from dsprobe.postprocess.decoders import (decode_classifier, decode_detectnet_v2, decode_detr, decode_embedding,
                                          decode_nms_outputs, decode_nms_plugin, decode_ssd, decode_xyxy_score_class,
                                          decode_yolov5, decode_yolov8, seg_masks, decode_yolov8_seg)
from dsprobe.postprocess.layers import LayerNotFoundError
from dsprobe.postprocess.registry import StepContext

CTX = StepContext(network_size=(640, 640), frame_size=(1280, 720))


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
