"""Decoders and layer lookup against hand-computed answers (and, for DetectNet_v2, a literal per-cell
loop transcription of nvinfer's parser); batch-axis variants; error messages."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest

from dsprobe.detections import Detections
from dsprobe.postprocess import Postprocess
from dsprobe.postprocess.decoders import (
    attach_masks,
    classify,
    decode_boxes_scores,
    decode_classifier,
    decode_detectnet_v2,
    decode_detr,
    decode_embedding,
    decode_nms_outputs,
    decode_nms_plugin,
    decode_ssd,
    decode_xyxy_score_class,
    decode_yolov5,
    decode_yolov8,
    decode_yolov8_pose,
    decode_yolov8_seg,
    decode_yolox,
    seg_masks,
)
from dsprobe.postprocess.filters import threshold
from dsprobe.postprocess.layers import LayerNotFoundError, expect, find_layer, matches, strip_batch
from dsprobe.postprocess.registry import StepContext, get_step, step_names
from dsprobe.postprocess.scale import scale_nvinfer

CTX = StepContext(network_size=(640, 640), frame_size=(1280, 720))
DECODERS = [
    "boxes_scores",
    "classifier",
    "detectnet_v2",
    "detr",
    "embedding",
    "nms_outputs",
    "nms_plugin",
    "ssd",
    "xyxy_score_class",
    "yolov5",
    "yolov8",
    "yolov8_pose",
    "yolov8_seg",
    "yolox",
]


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.float64(x)))


# ---------------------------------------------------------------------------------------------- layer lookup
def test_find_layer_by_name_tf_suffix_substring_and_shape():
    layers = {
        "num_detections:0": np.array([3.0]),
        "detection_boxes:0": np.zeros((1, 10, 4)),
        "raw_detection_boxes:0": np.zeros((1, 500, 4)),
        "conv2d_cov/Sigmoid": np.zeros((4, 34, 60)),
        "conv2d_bbox": np.zeros((16, 34, 60)),
    }
    assert find_layer(layers, "conv2d_bbox")[0] == "conv2d_bbox"
    assert (
        find_layer(layers, "detection_boxes")[0] == "detection_boxes:0"
    )  # not raw_detection_boxes:0
    assert (
        find_layer(layers, "cov")[0] == "conv2d_cov/Sigmoid"
    )  # a name falls back to a unique substring
    assert find_layer(layers, contains="bbox")[0] == "conv2d_bbox"
    assert find_layer(layers, shape=(1,))[0] == "num_detections:0"
    assert (
        find_layer(layers, shape=(500, 4))[0] == "raw_detection_boxes:0"
    )  # batch axis of 1 dropped
    assert find_layer(layers, shape=(None, 34, 60), contains="cov")[0] == "conv2d_cov/Sigmoid"
    assert (
        find_layer(layers, ndim=3, contains="conv2d", exclude=["conv2d_bbox"])[0]
        == "conv2d_cov/Sigmoid"
    )
    seg = {
        "output0": np.zeros((1, 116, 8400)),
        "output1": np.zeros((1, 32, 160, 160)),
    }  # batch axis on both
    assert find_layer(seg, ndim=3)[0] == "output1" and find_layer(seg, ndim=2)[0] == "output0"


def test_missing_or_ambiguous_layer_lists_every_layer_with_its_shape():
    layers = {
        "output0": np.zeros((1, 84, 8400), np.float32),
        "output1": np.zeros((1, 32, 160, 160), np.float16),
    }
    with pytest.raises(LayerNotFoundError) as e:
        find_layer(layers, contains="cov", step="decode detectnet_v2")
    msg = str(e.value)
    assert msg == (
        "decode detectnet_v2: could not find one layer whose name contains 'cov' (found 0); the recorded "
        "layers are 'output0' float32[1, 84, 8400], 'output1' float16[1, 32, 160, 160]"
    )
    assert isinstance(e.value, KeyError) and isinstance(e.value, ValueError)
    with pytest.raises(
        LayerNotFoundError, match=r"layer 'output' \(found 2 layers whose name contains it\)"
    ):
        find_layer(layers, "output")
    with pytest.raises(LayerNotFoundError, match=r"a single layer of shape \(\*, 4\) \(found 0\)"):
        find_layer(layers, shape=(None, 4))
    with pytest.raises(LayerNotFoundError, match=r"a single layer \(found 2\)"):
        find_layer(layers)


def test_strip_batch_matches_and_expect():
    a = np.zeros((1, 1, 6, 8))
    assert strip_batch(a, 2).shape == (6, 8) and strip_batch(a, 3).shape == (1, 6, 8)
    assert strip_batch(np.zeros((1, 6)), 2).shape == (1, 6)  # one box of 6: nothing to drop
    assert (
        matches(a, (6, None))
        and not matches(a, (None, 4))
        and not matches(np.zeros((2, 6, 8)), (6, 8))
    )
    with pytest.raises(
        ValueError, match=r"step x: layer 'l' has shape \[2, 6, 8\], expected \(N, 6\)"
    ):
        expect(np.zeros((2, 6, 8)), 2, "step x", "l", "(N, 6)")


# ---------------------------------------------------------------------------------------------- YOLOv8 family
def yolov8_head():
    """(4 + 2 classes, 8 anchors): anchor 0 class 1 @ 0.8, anchor 2 class 0 @ 0.3, the rest below 0.001."""
    a = np.zeros((4 + 2, 8), np.float32)
    a[:4, 0], a[4:, 0] = [100, 50, 20, 10], [0.1, 0.8]
    a[:4, 1], a[4:, 1] = [5, 5, 2, 2], [0.0005, 0.0]
    a[:4, 2], a[4:, 2] = [10, 10, 4, 4], [0.3, 0.2]
    return a


@pytest.mark.parametrize("variant", ["plain", "batch", "transposed", "transposed+batch"])
def test_yolov8_by_hand_with_and_without_batch_axis_and_transposed(variant):
    a = yolov8_head()
    a = a.T.copy() if "transposed" in variant else a
    a = a[None] if "batch" in variant else a
    d = decode_yolov8({"output0": a}, CTX)
    assert d.space == "network" and d.boxes.dtype == np.float32
    assert d.boxes.tolist() == [[90, 45, 110, 55], [8, 8, 12, 12]]
    assert d.class_ids.tolist() == [1, 0] and d.scores.tolist() == pytest.approx([0.8, 0.3])


@pytest.mark.parametrize("values", ["continuous", "ties", "nan"])
def test_best_class_equals_a_per_anchor_loop(values):
    """best_class on channels-first (transposed view) and channels-last scores gives, per anchor, what a
    plain loop gives: kept when the max >= threshold, the FIRST class holding the max (ties happen on
    FP16 / INT8 engines), that max as the score; an anchor with a NaN score is never kept."""
    from dsprobe.postprocess.decoders.base import best_class

    rng = np.random.default_rng(len(values))
    for nc in (1, 2, 7, 80, 81):
        a = rng.random((nc, 97)).astype(np.float64 if nc == 7 else np.float32)
        if values == "ties":
            a = np.round(a * 4) / 4
        elif values == "nan":
            a.flat[rng.integers(0, a.size, 5)] = np.nan
        for thr in (0.0, 0.5, 0.75, 1.0):
            want = []
            for anchor in range(a.shape[1]):
                col = a[:, anchor].tolist()
                if any(v != v for v in col) or max(col) < np.float32(thr):
                    continue
                want.append((anchor, col.index(max(col)), max(col)))
            for scores in (a.T, np.ascontiguousarray(a.T)):
                rows, cls, conf = best_class(scores, thr, False)
                assert conf.dtype == a.dtype and cls.dtype == np.int32
                assert list(zip(rows.tolist(), cls.tolist(), conf.tolist())) == want


def test_yolov8_threshold_multi_label_box_format_and_layout():
    a = yolov8_head()
    assert decode_yolov8({"o": a}, CTX, score_threshold=0.3).class_ids.tolist() == [
        1,
        0,
    ]  # inclusive cut
    assert decode_yolov8({"o": a}, CTX, score_threshold=0.31).class_ids.tolist() == [1]
    m = decode_yolov8({"o": a}, CTX, score_threshold=0.1, multi_label=True)
    # anchor order, then class order: (0, c0 0.1), (0, c1 0.8), (2, c0 0.3), (2, c1 0.2)
    assert m.class_ids.tolist() == [0, 1, 0, 1] and m.scores.tolist() == pytest.approx(
        [0.1, 0.8, 0.3, 0.2]
    )
    assert m.boxes[:2].tolist() == [[90, 45, 110, 55]] * 2
    x = decode_yolov8({"o": a}, CTX, box_format="xyxy", score_threshold=0.5)
    assert x.boxes.tolist() == [[100, 50, 20, 10]]
    sq = np.zeros(
        (6, 6), np.float32
    )  # square: "auto" reads it channels-first; the layout param overrides
    sq[:4, 1], sq[4:, 1] = [10, 10, 2, 2], [0.9, 0.0]
    assert decode_yolov8({"o": sq}, CTX, score_threshold=0.5).boxes.tolist() == [[9, 9, 11, 11]]
    assert len(decode_yolov8({"o": sq}, CTX, score_threshold=0.5, layout="channels_last")) == 0


def test_yolov8_errors_name_the_decoder_param_and_layer():
    a = yolov8_head()
    with pytest.raises(
        ValueError,
        match=r"decode yolov8: param 'score_threshold' = 'high' \(str\) is not valid; "
        r"expected a number",
    ):
        decode_yolov8({"o": a}, CTX, score_threshold="high")
    with pytest.raises(
        ValueError, match=r"param 'layout' = 'nchw' .*expected one of 'auto', 'channels_first'"
    ):
        decode_yolov8({"o": a}, CTX, layout="nchw")
    with pytest.raises(
        ValueError, match=r"param 'multi_label' = 1 \(int\) .*expected true or false"
    ):
        decode_yolov8({"o": a}, CTX, multi_label=1)
    with pytest.raises(
        ValueError,
        match=r"decode yolov8: layer 'o' has shape \[2, 6, 8\], expected \(4 \+ classes, "
        r"anchors\)",
    ):
        decode_yolov8({"o": np.zeros((2, 6, 8))}, CTX, layer="o")
    with pytest.raises(
        ValueError,
        match=r"layer 'o' has shape \[3, 4\], expected \(4 \+ classes, anchors\) or "
        r"its transpose$",
    ):  # no class channel either way
        decode_yolov8({"o": np.zeros((3, 4))}, CTX)
    with pytest.raises(
        LayerNotFoundError, match=r"decode yolov8: could not find a single 2-D layer \(found 0\)"
    ):
        decode_yolov8({"o": np.zeros((2, 6, 8))}, CTX)


def test_yolov8_pose_keypoints_in_network_pixels():
    k = 2
    a = np.zeros((4 + 1 + 3 * k, 10), np.float32)
    a[:4, 3], a[4, 3] = [50, 60, 10, 20], 0.9
    a[5:, 3] = [
        45,
        55,
        0.7,
        52,
        66,
        0.2,
    ]  # keypoint 0 (45, 55, vis 0.7), keypoint 1 (52, 66, vis 0.2)
    for layers in ({"output0": a}, {"output0": a.T[None]}):
        d = decode_yolov8_pose(layers, CTX, num_keypoints=k, score_threshold=0.5)
        assert d.boxes.tolist() == [[45, 50, 55, 70]] and d.class_ids.tolist() == [0]
        assert d.keypoints.shape == (1, 2, 3)
        np.testing.assert_allclose(d.keypoints[0], [[45, 55, 0.7], [52, 66, 0.2]], rtol=1e-6)
    two = np.delete(a, [7, 10], axis=0)  # (x, y) only
    d2 = decode_yolov8_pose({"o": two}, CTX, num_keypoints=k, keypoint_dims=2, score_threshold=0.5)
    assert d2.keypoints[0].tolist() == [[45, 55, 1], [52, 66, 1]]
    with pytest.raises(ValueError, match=r"param 'keypoint_dims' = 4 .*expected one of 2, 3"):
        decode_yolov8_pose({"o": a}, CTX, keypoint_dims=4)


def test_yolov8_seg_coefficients_and_masks_by_hand():
    a = np.zeros((4 + 1 + 2, 10), np.float32)
    a[:4, 0], a[4, 0], a[5:, 0] = (
        [8, 8, 8, 8],
        0.9,
        [1.0, -1.0],
    )  # box (4, 4, 12, 12) in a 16x16 input
    protos = np.zeros((2, 4, 4), np.float32)  # logits = 1*P0 - 1*P1 = 0 everywhere -> sigmoid 0.5
    ctx = StepContext((16, 16))
    seg = decode_yolov8_seg(
        {"output0": a[None], "output1": protos[None]}, ctx, score_threshold=0.5
    )  # M from protos
    assert seg.vectors.tolist() == [[1.0, -1.0]] and seg.boxes.tolist() == [[4, 4, 12, 12]]
    m = seg_masks(seg, protos, (16, 16))
    want = np.zeros((4, 4), np.float32)
    want[1:3, 1:3] = 0.5  # box / 4 = (1, 1, 3, 3): cells 1 and 2 inside on both axes
    np.testing.assert_array_equal(m[0], want)
    assert (
        seg_masks(seg, protos, (16, 16), threshold=0.4)[0].tolist()
        == (want > 0).astype(float).tolist()
    )
    ramp = np.zeros((2, 4, 4), np.float32)
    ramp[0] = [0, 2, 2, 0]  # logit profile along x, constant along y
    tall = Detections([[0, 0, 16, 8]], [0.9], [0], "network", vectors=[[1.0, 0.0]])
    up = seg_masks(tall, ramp, (16, 16), size=(8, 8))
    # logits resized 4 -> 8 (half-pixel centres): [0, .5, 1.5, 2, 2, 1.5, .5, 0]; then sigmoid; the box is
    # (0, 0, 8, 4) on the 8x8 grid: rows 0-3 inside
    u = sigmoid(np.array([0, 0.5, 1.5, 2, 2, 1.5, 0.5, 0]))
    np.testing.assert_allclose(up[0, :4], np.tile(u, (4, 1)), rtol=1e-6)
    assert not up[0, 4:].any()
    with pytest.raises(ValueError, match=r"seg_masks: detections need 3 mask coefficients"):
        seg_masks(seg, np.zeros((3, 4, 4)), (16, 16))
    with pytest.raises(ValueError, match=r"before the scale step"):
        seg_masks(scale_nvinfer(seg, StepContext((16, 16), (32, 32))), protos, (16, 16))


def test_attach_masks_box_relative_sampling_survives_scaling():
    protos = np.tile(np.arange(4, dtype=np.float32), (4, 1))[None]  # logit = proto column index
    d = Detections(
        [[0, 0, 16, 16], [8, 4, 24, 12]], [0.9, 0.8], [0, 0], "network", vectors=[[1.0], [1.0]]
    )
    out = attach_masks(d, protos, (16, 16), mask_size=(2, 1))
    # box 0: sample x = 4, 12 px -> grid 4 * 4/16 - 0.5 = 0.5, 2.5; box 1: x = 12, 20 -> 2.5, 4.5 (clamped to 3)
    np.testing.assert_allclose(out.masks[0], [[sigmoid(0.5), sigmoid(2.5)]], rtol=1e-6)
    np.testing.assert_allclose(out.masks[1], [[sigmoid(2.5), sigmoid(3.0)]], rtol=1e-6)
    assert attach_masks(d, protos, (16, 16)).masks.shape == (
        2,
        4,
        4,
    )  # default: the prototype grid size
    scaled = scale_nvinfer(out, StepContext((16, 16), (32, 32)))
    assert scaled.space == "frame" and np.array_equal(scaled.masks, out.masks)
    assert attach_masks(d, protos, (16, 16), mask_size=(2, 1), threshold=0.9).masks.tolist() == [
        [[0, 1]],
        [[1, 1]],
    ]


# ---------------------------------------------------------------------------------------------- YOLOv5 / X
def test_yolov5_objectness_times_class_and_objectness_only():
    a = np.array(
        [[10, 10, 4, 4, 0.5, 0.2, 0.8], [0, 0, 2, 2, 0.0001, 1, 0], [20, 20, 2, 2, 0.9, 0.5, 0.25]],
        np.float32,
    )
    for layers in ({"out": a}, {"out": a[None]}, {"out": a.T.copy()}):
        d = decode_yolov5(layers, CTX, score_threshold=0.01)
        assert d.scores.tolist() == pytest.approx([0.4, 0.45]) and d.class_ids.tolist() == [1, 0]
        assert d.boxes.tolist() == [[8, 8, 12, 12], [19, 19, 21, 21]]
    o = decode_yolov5({"out": a}, CTX, score_threshold=0.01, score="objectness")
    assert o.scores.tolist() == pytest.approx([0.5, 0.9]) and o.class_ids.tolist() == [1, 0]
    m = decode_yolov5({"out": a}, CTX, score_threshold=0.2, multi_label=True)
    assert m.scores.tolist() == pytest.approx([0.4, 0.45, 0.225]) and m.class_ids.tolist() == [
        1,
        0,
        1,
    ]
    assert decode_yolox({"out": a}, CTX, score_threshold=0.01).equals(d)
    with pytest.raises(
        ValueError,
        match=r"decode yolov5: layer 'out' has shape \[3, 5\], expected \(anchors, 5 \+ ",
    ):
        decode_yolov5({"out": a[:, :5]}, CTX)


# ---------------------------------------------------------------------------------------------- (N, 6) and boxes+scores
def test_xyxy_score_class_plain_transposed_and_deepstream_yolo_clamp():
    a = np.array(
        [
            [1, 2, 3, 4, 0.9, 2.9],
            [0, 0, 1, 1, 0.1, 0],
            [-5, 10, 700, 20.5, 0.6, 1],
            [639.5, 0, 700, 10, 0.7, 0],
        ],
        np.float32,
    )
    d = decode_xyxy_score_class({"o": a[None]}, CTX, score_threshold=0.5)
    assert d.boxes.tolist() == [[1, 2, 3, 4], [-5, 10, 700, 20.5], [639.5, 0, 700, 10]]
    assert d.class_ids.tolist() == [2, 1, 0]  # class 2.9 truncated as C does
    assert decode_xyxy_score_class({"o": a.T.copy()}, CTX, score_threshold=0.5).equals(d)
    y = decode_xyxy_score_class({"o": a}, CTX, score_threshold=0.5, parser="deepstream_yolo")
    # clamped to [0, 640]; the last box is 0.5 px wide after clamping -> dropped (width < 1)
    assert y.boxes.tolist() == [[1, 2, 3, 4], [0, 10, 640, 20.5]] and y.class_ids.tolist() == [2, 1]
    with pytest.raises(
        ValueError, match=r"layer 'o' has shape \[4, 5\], expected \(N, 6\) or \(6, N\)"
    ):
        decode_xyxy_score_class({"o": a[:, :5]}, CTX)


def test_boxes_scores_best_class_or_classes_layer():
    boxes = np.array([[[0, 0, 10, 10], [5, 5, 15, 25]]], np.float32)
    scores = np.array([[[0.1, 0.7, 0.2], [0.0, 0.0, 0.0005]]], np.float32)
    d = decode_boxes_scores({"boxes": boxes, "scores": scores}, CTX)
    assert (
        d.boxes.tolist() == [[0, 0, 10, 10]]
        and d.class_ids.tolist() == [1]
        and d.scores[0] == np.float32(0.7)
    )
    c = decode_boxes_scores(
        {"boxes": boxes, "scores": np.array([[0.4], [0.6]]), "classes": np.array([[3.0], [1.0]])},
        CTX,
        classes_layer="classes",
        box_format="cxcywh",
        score_threshold=0.5,
    )
    assert c.boxes.tolist() == [[-2.5, -7.5, 12.5, 17.5]] and c.class_ids.tolist() == [1]
    with pytest.raises(
        ValueError, match=r"layer 'scores' has shape \[1, 3, 3\], expected \(2, classes\)"
    ):
        decode_boxes_scores({"boxes": boxes, "scores": np.zeros((1, 3, 3))}, CTX)


# ---------------------------------------------------------------------------------------------- NMS in graph
def test_nms_outputs_pixels_normalised_and_orders():
    layers = {
        "num_detections": np.array([[2]], np.int32),
        "detection_boxes": np.array([[[10, 20, 30, 60], [0, 0, 5, 5], [1, 1, 2, 2]]]),
        "detection_scores": np.array([[0.9, 0.3, 0.8]]),
        "detection_classes": np.array([[4, 1, 2]], np.int32),
    }
    d = decode_nms_outputs(
        layers, CTX
    )  # EfficientNMS: xyxy pixels, the first num_detections records
    assert d.boxes.tolist() == [[10, 20, 30, 60], [0, 0, 5, 5]] and d.class_ids.tolist() == [4, 1]
    assert decode_nms_outputs(layers, CTX, score_threshold=0.5).class_ids.tolist() == [4]
    yx = decode_nms_outputs(layers, CTX, box_order="yxyx")
    assert yx.boxes[0].tolist() == [20, 10, 60, 30]
    tf = {f"{k}:0": np.asarray(v, np.float32) for k, v in layers.items()}
    tf["num_detections:0"] = np.array([5.0], np.float32)  # count above K is capped
    tf["detection_boxes:0"] = tf["detection_boxes:0"] / 640
    n = decode_nms_outputs(tf, CTX, normalized=True)
    np.testing.assert_allclose(n.boxes, [[10, 20, 30, 60], [0, 0, 5, 5], [1, 1, 2, 2]], rtol=1e-5)
    assert n.class_ids.tolist() == [4, 1, 2]


def test_nms_outputs_layers_by_order_when_names_say_nothing():
    layers = {
        "BatchedNMS": np.array([1], np.int32),
        "BatchedNMS_1": np.array([[[0.5, 0.25, 0.75, 0.5]]], np.float32),
        "BatchedNMS_2": np.array([[0.6]], np.float32),
        "BatchedNMS_3": np.array([[2.0]], np.float32),
    }
    d = decode_nms_outputs(layers, CTX, normalized=True)
    assert d.boxes.tolist() == [[320, 160, 480, 320]] and d.class_ids.tolist() == [2]
    with pytest.raises(
        LayerNotFoundError,
        match=r"could not tell which layer is which \(num_layer, boxes_layer, "
        r"scores_layer, classes_layer not found by name.*'BatchedNMS_3'",
    ):
        decode_nms_outputs({**layers, "extra": np.zeros(3)}, CTX)


def test_tf_ssd_parser_clips_to_w_minus_1_and_drops_empty():
    ctx = StepContext((300, 200))
    layers = {
        "num_detections": np.array([3.0], np.float32),
        "detection_boxes": np.array(
            [[0.1, 0.25, 0.5, 1.5], [0.5, 0.5, 0.5, 0.75], [-0.5, 1.2, 0.25, 1.5]], np.float32
        ),  # ymin, xmin, ymax, xmax
        "detection_scores": np.array([0.7, 0.6, 0.5], np.float32),
        "detection_classes": np.array([3.0, 1.0, 2.0], np.float32),
    }
    for d in (decode_ssd(layers, ctx), decode_nms_outputs(layers, ctx, parser="tf_ssd")):
        # box 0: x 75 .. 450 -> 299, y 20 .. 100; box 1: zero height -> dropped; box 2: x 360 -> 299 both -> dropped
        np.testing.assert_allclose(d.boxes, [[75, 20, 299, 100]], rtol=1e-6)
        assert d.class_ids.tolist() == [3]
    with pytest.raises(
        ValueError,
        match=r"parser 'tf_ssd' reads yxyx boxes; param 'box_order' = 'xyxy' contradicts",
    ):
        decode_nms_outputs(layers, ctx, parser="tf_ssd", box_order="xyxy")


def test_tao_batched_nms_and_efficientdet_parsers():
    ctx = StepContext((640, 480), num_classes=3)
    n = 205
    boxes = np.tile(np.array([0.25, 0.5, 1.25, 0.75], np.float32), (n, 1))
    boxes[0] = [0.5, 0.5, 0.25, 0.75]  # x2 < x1 -> dropped
    classes = np.zeros(n, np.float32)
    classes[1] = 3  # >= num-detected-classes -> dropped
    scores = np.full(n, 0.5, np.float32)
    scores[2] = 0.1  # below the threshold (TAO: pre-cluster-threshold[0]) -> dropped
    layers = {
        "BatchedNMS": np.array([n], np.int32),
        "BatchedNMS_1": boxes[None],
        "BatchedNMS_2": scores[None],
        "BatchedNMS_3": classes[None],
    }
    d = decode_nms_outputs(layers, ctx, parser="tao_batched_nms", score_threshold=0.2)
    assert len(d) == 201  # the loop runs while objectList.size() <= 200
    assert d.boxes[0].tolist() == [160, 240, 639, 360]  # x2 = 800 clipped to W - 1
    assert (
        len(decode_nms_outputs(layers, ctx, score_threshold=0.2)) == 204
    )  # plain: only the low score dropped

    eff = {
        "num_detections": np.array([3], np.int32),
        "detection_boxes": np.array(
            [[10, -5, 50, 700], [10, 10, 5, 20], [0, 0, 470, 20]], np.float32
        ),  # yxyx px
        "detection_scores": np.array([0.9, 0.8, 0.7], np.float32),
        "detection_classes": np.array([1, 0, 2], np.int32),
    }
    e = decode_nms_outputs(eff, ctx, parser="tao_efficientdet")
    # box 0: left 0 (clipped from -5), width 705 -> 639, top 10, height 40; box 1: y2 < y1 dropped;
    # box 2: height 470 <= H - 1 = 479, kept
    assert e.boxes.tolist() == [[0, 10, 639, 50], [0, 0, 20, 470]] and e.class_ids.tolist() == [
        1,
        2,
    ]


# ---------------------------------------------------------------------------------------------- NMS plugin
def test_nms_plugin_plain_tao_and_ssd_sample():
    ctx = StepContext((300, 300))
    rec = np.array(
        [[0, 2, 0.9, 0.25, -0.1, 1.5, 0.5], [0, 1, 0.05, 0, 0, 0.5, 0.5], [-1, 0, 0, 0, 0, 0, 0]],
        np.float32,
    )
    layers = {"NMS": rec[None, None], "NMS_1": np.array([[2]], np.int32)}
    p = decode_nms_plugin(layers, ctx, score_threshold=0.1)
    np.testing.assert_allclose(p.boxes, [[75, -30, 450, 150]], rtol=1e-6)
    assert p.class_ids.tolist() == [2] and p.scores.tolist() == pytest.approx([0.9])
    t = decode_nms_plugin(layers, ctx, parser="tao", score_threshold=0.1)
    # left 75, top clip(-30) = 0, width clip(1.25 * 300 = 375) = 299, height clip(0.6 * 300 = 180) = 180
    np.testing.assert_allclose(t.boxes, [[75, 0, 374, 180]], rtol=1e-6)
    s = decode_nms_plugin(layers, ctx, parser="ssd_sample", score_threshold=0.1)
    # unsigned truncation (negative -> 0), clip to 299, width = x2 - x1 + 1
    assert s.boxes.tolist() == [[75, 0, 300, 151]]
    no_count = decode_nms_plugin(
        {"detection_out": rec}, ctx
    )  # only the (K, 7) layer: padding rows skipped
    assert no_count.class_ids.tolist() == [2, 1]
    counted = decode_nms_plugin({"nms_out": rec, "keep_count": np.array([1], np.int32)}, ctx)
    assert counted.class_ids.tolist() == [2]
    with pytest.raises(ValueError, match=r"layer 'NMS' has shape \[3, 6\], expected records of 7"):
        decode_nms_plugin({"NMS": rec[:, :6]}, ctx)


# ---------------------------------------------------------------------------------------------- DetectNet_v2
def detectnet_loop(cov, bbox, w, h, thr, n_cls, parser="builtin"):
    """A literal per-cell transcription of docs/nvinfer-semantics.md §2 (float32 arithmetic)."""
    f = np.float32
    c_n, gh, gw = cov.shape
    sx, sy = -(-w // gw), -(-h // gh)
    norm = f(35.0)
    out = []
    for c in range(min(c_n, n_cls)):
        for j in range(gh):
            for i in range(gw):
                conf = cov[c, j, i]
                if conf < thr[c]:
                    continue
                gx, gy = f(i * sx + 0.5) / norm, f(j * sy + 0.5) / norm
                x1 = (bbox[4 * c, j, i] - gx) * -norm
                y1 = (bbox[4 * c + 1, j, i] - gy) * -norm
                x2 = (bbox[4 * c + 2, j, i] + gx) * norm
                y2 = (bbox[4 * c + 3, j, i] + gy) * norm
                if parser == "custom_resnet":
                    x1, x2 = (min(max(v, f(0)), f(w - 1)) for v in (x1, x2))
                    y1, y2 = (min(max(v, f(0)), f(h - 1)) for v in (y1, y2))
                    out.append((c, [x1, y1, x2 + f(1), y2 + f(1)], conf))
                    continue
                x1, x2 = (f(w - 1) if v >= w else v for v in (x1, x2))
                y1, y2 = (f(h - 1) if v >= h else v for v in (y1, y2))
                x1, y1, x2, y2 = (f(0) if v < 0 else v for v in (x1, y1, x2, y2))
                if x2 - x1 < 0 or y2 - y1 < 0:
                    continue
                out.append((c, [x1, y1, x2, y2], conf))
    return out


def test_detectnet_v2_grid_decode_by_hand():
    ctx = StepContext((64, 32), (64, 32))
    cov = np.zeros((1, 2, 4), np.float32)
    bbox = np.zeros((4, 2, 4), np.float32)
    cov[0, 1, 2], bbox[:, 1, 2] = 0.9, [0.1, 0.2, 0.3, 0.4]  # a normal box
    cov[0, 0, 0], bbox[:, 0, 0] = 0.5, [0.1, 0.0, 1.0, 0.0]  # x1 = 0.5 - 3.5 < 0 -> 0; x2 = 35.5
    cov[0, 0, 3], bbox[:, 0, 3] = (
        0.6,
        [-1.0, 0.0, 1.0, 0.0],
    )  # x1 = x2 = 83.5 >= 64 -> 63: zero width kept
    cov[0, 0, 1], bbox[:, 0, 1] = 0.7, [-0.2, 0.0, -0.3, 0.0]  # x1 = 23.5 > x2 = 6: dropped
    cov[0, 1, 0] = 0.49  # below the threshold
    layers = {"conv2d_bbox": bbox, "conv2d_cov/Sigmoid": cov}
    d = decode_detectnet_v2(layers, ctx, pre_cluster_threshold=0.5)
    # stride 16 (64 / 4 and 32 / 2); centre of cell (j, i) = (16 i + 0.5, 16 j + 0.5); norm 35
    np.testing.assert_allclose(
        d.boxes,
        [[0, 0.5, 35.5, 0.5], [63, 0.5, 63, 0.5], [29.0, 9.5, 43.0, 30.5]],
        rtol=1e-6,
        atol=1e-5,
    )
    assert d.scores.tolist() == pytest.approx([0.5, 0.6, 0.9])  # row-major cell order
    r = decode_detectnet_v2(layers, ctx, pre_cluster_threshold=0.5, parser="custom_resnet")
    assert len(r) == 4 and r.boxes[1].tolist() == pytest.approx(
        [23.5, 0.5, 7.0, 1.5]
    )  # +1, nothing dropped
    batched = decode_detectnet_v2(
        {k: v[None] for k, v in layers.items()}, ctx, pre_cluster_threshold=0.5
    )
    assert batched.equals(d)


def test_detectnet_v2_matches_the_loop_transcription_with_per_class_thresholds():
    rng = np.random.default_rng(5)
    for case in range(40):
        c_n, gh, gw = int(rng.integers(1, 4)), int(rng.integers(1, 9)), int(rng.integers(1, 12))
        w, h = int(rng.integers(16, 200)), int(rng.integers(16, 200))
        cov = rng.random((c_n, gh, gw)).astype(np.float32)
        bbox = rng.normal(0, 1.5, (4 * c_n, gh, gw)).astype(np.float32)
        thr = rng.choice([0.2, 0.5, 0.9], c_n).astype(np.float32)
        n_cls = int(rng.integers(1, 4))
        for parser in ("builtin", "custom_resnet"):
            got = decode_detectnet_v2(
                {"cov": cov, "bbox": bbox},
                StepContext((w, h), num_classes=n_cls),
                pre_cluster_threshold=thr.tolist(),
                parser=parser,
            )
            want = detectnet_loop(cov, bbox, w, h, thr, n_cls, parser)
            assert got.class_ids.tolist() == [o[0] for o in want], case
            np.testing.assert_array_equal(
                got.boxes, np.array([o[1] for o in want], np.float32).reshape(-1, 4)
            )
            np.testing.assert_array_equal(got.scores, np.array([o[2] for o in want], np.float32))
            later = threshold(
                decode_detectnet_v2(
                    {"cov": cov, "bbox": bbox},
                    StepContext((w, h)),
                    parser=parser,
                    num_classes=n_cls,
                ),
                None,
                pre_cluster_threshold=thr.tolist(),
            )
            assert later.equals(got), (
                case
            )  # thresholds left to the filter step: same boxes, same order


def test_detectnet_v2_thresholds_as_dict_classes_and_errors():
    ctx = StepContext((64, 32))
    cov = np.full((3, 1, 1), 0.4, np.float32)
    bbox = np.zeros((12, 1, 1), np.float32)
    layers = {"output_cov/Sigmoid:0": cov, "output_bbox/BiasAdd:0": bbox}
    d = decode_detectnet_v2(layers, ctx, pre_cluster_threshold={"1": 0.5, "default": 0.3})
    assert d.class_ids.tolist() == [0, 2]
    assert decode_detectnet_v2(
        layers, ctx, pre_cluster_threshold=0.3, num_classes=2
    ).class_ids.tolist() == [0, 1]
    assert decode_detectnet_v2(layers, ctx).class_ids.tolist() == [
        0,
        1,
        2,
    ]  # no threshold: the filter step's job
    with pytest.raises(
        ValueError, match=r"param 'pre_cluster_threshold' has 2 per-class values, expected 3"
    ):
        decode_detectnet_v2(layers, ctx, pre_cluster_threshold=[0.1, 0.2])
    with pytest.raises(
        LayerNotFoundError,
        match=r"decode detectnet_v2: could not find one layer whose name contains "
        r"'cov' \(found 0\); the recorded layers are "
        r"'output_bbox/BiasAdd:0' float32\[12, 1, 1\]",
    ):
        decode_detectnet_v2({"output_bbox/BiasAdd:0": bbox}, ctx)
    with pytest.raises(
        ValueError,
        match=r"layer 'output_bbox/BiasAdd:0' has shape \[8, 1, 1\], expected \[12, 1, 1\]",
    ):
        decode_detectnet_v2({**layers, "output_bbox/BiasAdd:0": bbox[:8]}, ctx)


# ---------------------------------------------------------------------------------------------- DETR
def test_detr_sigmoid_softmax_topk_and_thresholds():
    boxes = np.array(
        [[0.5, 0.5, 0.5, 0.25], [0.25, 0.25, 0.1, 0.1], [0.75, 0.75, 0.2, 0.2]], np.float32
    )
    logits = np.array([[0.0, 2.0], [1.0, -1.0], [-3.0, -2.0]], np.float32)
    layers = {"pred_boxes": boxes[None], "pred_logits": logits[None]}
    d = decode_detr(layers, CTX)
    np.testing.assert_allclose(d.boxes[0], [160, 240, 480, 400], rtol=1e-6)
    assert d.class_ids.tolist() == [1, 0, 1]
    assert d.scores.tolist() == pytest.approx([sigmoid(2), sigmoid(1), sigmoid(-2)])
    assert len(decode_detr(layers, CTX, top_k=2)) == 2
    per_class = decode_detr(
        layers, CTX, score_threshold=[0.5, 0.9]
    )  # class 1 needs 0.9: sigmoid(2) = 0.88
    assert per_class.class_ids.tolist() == [0]
    assert decode_detr(layers, CTX, skip_class=1).class_ids.tolist() == [0]
    sm = decode_detr(
        {
            "pred_boxes": boxes,
            "pred_logits": np.log(
                np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3], [0.1, 0.1, 0.8]], np.float32)
            ),
        },
        CTX,
        activation="softmax",
    )
    # the last class is "no object": query 2 keeps its best real class (0.1 vs 0.1: first index)
    assert sm.class_ids.tolist() == [0, 1, 0] and sm.scores.tolist() == pytest.approx(
        [0.6, 0.5, 0.1], rel=1e-5
    )
    with pytest.raises(ValueError, match=r"decode detr: param 'activation' = 'relu'"):
        decode_detr(layers, CTX, activation="relu")
    with pytest.raises(
        ValueError, match=r"layers 'pred_boxes' \[3, 4\] and 'pred_logits' \[2, 2\] do not fit"
    ):
        decode_detr({"pred_boxes": boxes, "pred_logits": logits[:2]}, CTX)


def test_detr_tao_ddetr_parser():
    ctx = StepContext((100, 50))
    boxes = np.array(
        [[0.5, 0.5, 0.2, 0.4], [0.5, 0.5, 0.4, 0.4], [0.05, 0.9, 0.2, 0.4], [0.5, 0.5, 0.1, 0.1]],
        np.float32,
    )
    logits = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 3.0], [5.0, 0.0]], np.float32)
    d = decode_detr({"pred_boxes": boxes, "pred_logits": logits}, ctx, parser="tao_ddetr")
    # query 3 is class 0 (skipped); queries 0 and 1 tie at sigmoid(1): the later one (1) replaces the earlier
    assert d.scores.tolist() == pytest.approx(
        [sigmoid(3), sigmoid(1)]
    ) and d.class_ids.tolist() == [1, 1]
    # query 2: x1 = (0.05 - 0.1) * 100 = -5 -> 0, x2 = -5 + 20 = 15; y1 = 35, y2 = 55 -> 49 (H - 1)
    # query 1: x1 = 30, x2 = 70, y1 = 15, y2 = 35
    np.testing.assert_allclose(d.boxes, [[0, 35, 15, 49], [30, 15, 70, 35]], rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- heads
def test_classifier_nvinfer_rule_strict_threshold_first_max():
    layers = {
        "color": np.array([[0.2, 0.5, 0.3]]),
        "make": np.array([0.4, 0.4, 0.2]),
        "type": np.array([0.45, 0.5, 0.05])[None, :, None, None],
    }
    attrs = classify(
        layers, classifier_threshold=0.45, labels=["red;green;blue", "a;b;c", "car;van;bus"]
    )
    # color: 0.5 > 0.45; make: 0.4 is not > 0.45; type: 0.5 > 0.45 (strict '>' on 0.45 rules out class 0)
    assert [(a.index, a.layer, a.class_id, a.label) for a in attrs] == [
        (0, "color", 1, "green"),
        (2, "type", 1, "van"),
    ]
    assert [a.class_id for a in classify(layers, classifier_threshold=0.0)] == [
        1,
        0,
        1,
    ]  # tie: first index
    assert classify(layers, classifier_threshold=0.5) == []  # strict: 0.5 is not > 0.5
    d = decode_classifier(layers, CTX, classifier_threshold=0.45)
    assert d.boxes.tolist() == [[0, 0, 640, 640]] * 2 and d.class_ids.tolist() == [1, 1]
    assert d.vectors[:, 0].tolist() == [0, 2] and d.scores.tolist() == pytest.approx([0.5, 0.5])
    only = decode_classifier(layers, CTX, layer_names=["type", "color"], classifier_threshold=0.45)
    assert only.vectors[:, 0].tolist() == [0, 1]  # attribute index = position in layer_names
    assert len(decode_classifier(layers, CTX, classifier_threshold=0.9)) == 0


def test_classifier_tao_non_softmax():
    logits = {"predictions": np.array([0.0, np.log(3.0)], np.float32)}
    (a,) = classify(logits, softmax=True)
    assert a.class_id == 1 and a.confidence == pytest.approx(
        0.75, rel=1e-6
    )  # exp: 1, 3 -> 0.25, 0.75
    assert (
        classify({"p": np.array([100.0, 0.0], np.float32)}, softmax=True) == []
    )  # float sum overflows: p = 0


def test_embedding_vector_head():
    e = decode_embedding({"emb": np.array([[3.0, 4.0]])}, CTX)
    np.testing.assert_allclose(e.vectors, [[0.6, 0.8]], rtol=1e-6)
    assert (
        e.boxes.tolist() == [[0, 0, 640, 640]]
        and e.scores.tolist() == [1]
        and e.class_ids.tolist() == [0]
    )
    assert decode_embedding(
        {"emb": np.array([3.0, 4.0])[None, :, None, None]}, CTX, l2_normalize=False
    ).vectors.tolist() == [[3, 4]]
    assert decode_embedding({"emb": np.zeros(4)}, CTX).vectors.tolist() == [[0, 0, 0, 0]]
    with pytest.raises(LayerNotFoundError, match=r"a single layer \(found 2\)"):
        decode_embedding({"a": np.zeros(4), "b": np.zeros(4)}, CTX)


# ---------------------------------------------------------------------------------------------- registry
def test_every_decoder_is_registered_with_json_defaults_and_keyword_params():
    assert set(DECODERS) <= set(step_names("decode"))
    for name in DECODERS:
        fn = get_step("decode", name)
        params = list(inspect.signature(fn).parameters.values())[2:]
        assert all(p.kind == p.KEYWORD_ONLY for p in params), name
        json.dumps({p.name: p.default for p in params})
        Postprocess([{"kind": "decode", "name": name}])  # annotations resolvable by the spec checks


def test_params_of_the_wrong_type_fail_when_the_spec_is_built():
    from dsprobe.postprocess import PostprocessError

    with pytest.raises(PostprocessError, match=r"param 'parser' = 'tao' .*does not fit"):
        Postprocess([{"kind": "decode", "name": "nms_outputs", "params": {"parser": "tao"}}])
    with pytest.raises(PostprocessError, match=r"param 'pre_cluster_threshold' = 'x'"):
        Postprocess(
            [{"kind": "decode", "name": "detectnet_v2", "params": {"pre_cluster_threshold": "x"}}]
        )
    pp = Postprocess(
        [
            {
                "kind": "decode",
                "name": "detectnet_v2",
                "params": {"pre_cluster_threshold": {"0": 0.3, "default": 0.5}},
            }
        ]
    )
    assert pp.steps[0].params["pre_cluster_threshold"] == {"0": 0.3, "default": 0.5}


def test_a_head_read_with_the_wrong_decoder_warns_about_the_class_count():
    """A YOLOv8 head (4 + 4 classes, 2100 anchors) read as YOLOv5 gives no boxes; the class count
    against num-detected-classes says why (a warning, as nvinfer parsers print one)."""
    from dsprobe.postprocess.decoders.yolo import decode_yolov5, decode_yolov8
    from dsprobe.postprocess.registry import StepContext

    head = {"output0": np.random.default_rng(0).random((8, 2100), np.float32)}
    ctx = StepContext((640, 384), num_classes=4)
    with pytest.warns(
        UserWarning, match=r"8 channels, 5 \+ classes = 3 classes, .*num-detected-classes=4"
    ):
        decode_yolov5(head, ctx)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decode_yolov8(head, ctx)  # the right decoder: silent
        decode_yolov5(head, StepContext((640, 384)))  # unknown class count: silent
