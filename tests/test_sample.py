"""The bundled sample: scene generator, sample videos + COCO ground truth, shipped model, config, labels."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dsprobe.sample import (
    CONFIG_PATH,
    HELDOUT_SEED,
    LABELS,
    LABELS_PATH,
    MODEL_PATH,
    MUXER_SIZE,
    VIDEO_SEEDS,
    make_clip,
    make_videos,
)
from dsprobe.sample.scenes import BACKGROUNDS, CLASSES, MIN_VISIBLE, Scene, Shape, render


def test_scene_is_deterministic_from_its_seed():
    a = list(Scene(7).frames(3))
    b = list(Scene(7).frames(3))
    for (ia, ba, ca), (ib, bb, cb) in zip(a, b):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ba, bb)
        np.testing.assert_array_equal(ca, cb)
    other, _, _ = next(Scene(8).frames(1))
    assert (other != a[0][0]).mean() > 0.5
    assert not np.array_equal(a[0][0], a[1][0])  # objects move


def test_backgrounds_are_shipped_photos():
    assert len(BACKGROUNDS) >= 5
    bg = Scene(1).bg
    assert bg.shape == (540, 960, 3) and bg.dtype == np.uint8 and bg.std() > 10


def _shape(class_id, cx, cy, r, angle=0.3, color=(250, 20, 20)):
    return Shape(class_id, cx, cy, r, 0.0, 0.0, angle, 0.0, color)


@pytest.mark.parametrize("class_id", range(len(CLASSES)))
def test_box_is_the_tight_extent_of_the_drawn_pixels(class_id):
    bg = np.full((120, 160, 3), 90, np.uint8)
    img, boxes, classes = render(bg, [_shape(class_id, 70.3, 55.6, 30.0)])
    ys, xs = np.nonzero((img != bg).any(2))
    assert classes.tolist() == [class_id]
    assert boxes[0].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_boxes_are_clipped_at_frame_edges_and_hidden_objects_left_out():
    bg = np.zeros((100, 200, 3), np.uint8)
    shapes = [
        _shape(1, 5.0, 50.0, 20.0, angle=0.0),  # half outside on the left
        _shape(0, 150.0, 50.0, 10.0),
        _shape(1, 150.0, 50.0, 30.0, 0.0, (10, 200, 10)),  # covered
        _shape(0, 100.0, -9.0, 10.0, color=(20, 20, 250)),
    ]  # mostly above the frame
    img, boxes, classes = render(bg, shapes)
    assert classes.tolist() == [1, 1]  # the edge square and the covering square
    assert boxes[1].tolist() == pytest.approx([150 - 25.5, 50 - 25.5, 150 + 25.5, 50 + 25.5], abs=1)
    x1, y1, x2, y2 = boxes[0]
    assert x1 == 0 and x2 == pytest.approx(5 + 17, abs=1) and y2 - y1 == pytest.approx(34, abs=1)
    assert (
        0 < (img[:, :, 2] == 250).sum() < MIN_VISIBLE * np.pi * 10**2
    )  # the top circle: drawn, not in GT


def test_scene_boxes_are_tight_on_rendered_pixels():
    scene = Scene(3, num_objects=9)
    n = 0
    for img, boxes, classes in scene.frames(20):
        changed = (img != scene.bg).any(2)
        for x1, y1, x2, y2 in boxes.astype(int):
            assert 0 <= x1 < x2 <= 960 and 0 <= y1 < y2 <= 540
            # every side of the box touches a drawn pixel; nothing of the object lies outside (pixels of
            # other objects may): the object's colour covers at least MIN_VISIBLE of its box area * 0.3
            region = changed[y1:y2, x1:x2]
            assert (
                region[0].any() and region[-1].any() and region[:, 0].any() and region[:, -1].any()
            )
            n += 1
        assert set(classes.tolist()) <= set(range(len(CLASSES)))
    assert n > 60


def test_sample_videos_decode_to_the_rendered_frames_with_matching_ground_truth(tmp_path):
    av = pytest.importorskip("av")
    v = make_videos(tmp_path, seconds=1.0, fps=15)
    assert [p.name for p in v.paths] == [
        "stream0.mp4",
        "stream1.mp4",
    ] and v.gt_json_path == v.gt_json
    coco = json.loads(v.gt_json.read_text())
    assert [c["name"] for c in coco["categories"]] == LABELS and [
        c["id"] for c in coco["categories"]
    ] == [0, 1, 2, 3]
    assert [im["id"] for im in coco["images"]] == [
        k * 1_000_000 + i for k in range(2) for i in range(15)
    ]
    for source_id, (path, seed) in enumerate(zip(v.paths, VIDEO_SEEDS)):
        with av.open(str(path)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == 15 and frames[0].shape == (540, 960, 3)
        rendered = [img for img, _, _ in Scene(seed).frames(15)]
        for i in (
            0,
            7,
            14,
        ):  # frame i of the video is frame i of the scene (lossy, but much closer than i+1)
            err = np.abs(frames[i].astype(int) - rendered[i]).mean()
            assert (
                err < 6 and err < np.abs(frames[i].astype(int) - rendered[i - 1 if i else 1]).mean()
            )
        _, boxes, classes = list(Scene(seed).frames(15))[14]
        anns = [a for a in coco["annotations"] if a["image_id"] == source_id * 1_000_000 + 14]
        assert [a["category_id"] for a in anns] == classes.tolist()
        np.testing.assert_allclose(
            [a["bbox"] for a in anns], np.c_[boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]
        )


def test_make_clip_is_deterministic(tmp_path):
    pytest.importorskip("av")
    coco_a = {"images": [], "annotations": [], "categories": []}
    coco_b = {"images": [], "annotations": [], "categories": []}
    a = make_clip(tmp_path / "a" / "clip.mp4", 5, seconds=0.5, coco=coco_a)
    b = make_clip(tmp_path / "b" / "clip.mp4", 5, seconds=0.5, coco=coco_b)
    assert a.read_bytes() == b.read_bytes() and coco_a == coco_b and len(coco_a["images"]) == 8


def test_config_and_labels_describe_the_shipped_model():
    from dsprobe.nvinfer.config import load_nvinfer_config

    cfg = load_nvinfer_config(CONFIG_PATH)
    assert LABELS_PATH.read_text().split() == LABELS == list(CLASSES)
    assert (CONFIG_PATH.parent / cfg.onnx_file).resolve() == MODEL_PATH
    assert (CONFIG_PATH.parent / cfg.labelfile_path).resolve() == LABELS_PATH
    pre = cfg.preprocessing
    assert (pre.network_width, pre.network_height, pre.network_channels) == (320, 320, 3)
    assert pre.maintain_aspect_ratio and pre.symmetric_padding and pre.model_color_format == 0
    assert pre.net_scale_factor == pytest.approx(1 / 255)
    assert cfg.num_detected_classes == 4 and cfg.network_type == 100 and cfg.output_tensor_meta
    assert cfg.gie_unique_id == 1 and cfg.cluster_mode == 2
    assert (
        0 < cfg.class_attrs_all.pre_cluster_threshold < 1
        and 0 < cfg.class_attrs_all.nms_iou_threshold < 1
    )


@pytest.fixture(scope="module")
def session():
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(MODEL_PATH), providers=["CPUExecutionProvider"])


def test_model_inputs_and_outputs(session):
    assert MODEL_PATH.stat().st_size < 15e6
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.shape, inp.type) == ("images", [1, 3, 320, 320], "tensor(float)")
    assert (out.name, out.shape) == ("output0", [1, 4 + len(CLASSES), 40 * 40 + 20 * 20 + 10 * 10])


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of x1y1x2y2 boxes a (N, 4) and b (M, 4)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None] - inter)


def test_model_detects_the_objects_of_a_held_out_frame(session):
    """nvinfer preprocessing -> model -> numpy decode (best class, threshold, per-class NMS) -> source pixels."""
    from dsprobe.nvinfer.config import load_nvinfer_config
    from dsprobe.nvinfer.geometry import network_to_crop
    from dsprobe.postprocess.iou import greedy_nms
    from dsprobe.reference.preprocess import preprocess_source

    pre = load_nvinfer_config(CONFIG_PATH).preprocessing
    scale = np.array([960 / MUXER_SIZE[0], 540 / MUXER_SIZE[1]] * 2)
    matched, large = [], 0
    for img, gt, gt_cls in list(Scene(HELDOUT_SEED).frames(41))[::10]:
        x, t = preprocess_source(img, MUXER_SIZE, pre)
        out = session.run(None, {"images": x[None]})[0][0]  # (8, 2100)
        cls = out[4:].argmax(0)
        score = out[4:].max(0)
        keep = score > 0.3
        cx, cy, w, h = out[:4, keep]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
        cls, score = cls[keep], score[keep]
        kept = np.concatenate(
            [
                np.flatnonzero(cls == c)[greedy_nms(boxes[cls == c], score[cls == c], 0.45)]
                for c in np.unique(cls)
            ]
        )
        det, det_cls = network_to_crop(boxes[kept], t) * scale, cls[kept]
        assert len(det) < 3 * len(gt) + 3
        for g, c in zip(gt, gt_cls):
            if min(g[2] - g[0], g[3] - g[1]) < 40:  # large objects only: a real, stable assertion
                continue
            large += 1
            same = det[det_cls == c]
            matched.append(_iou(g[None], same).max() if len(same) else 0.0)
    assert large >= 10
    matched = np.array(matched)
    assert (matched > 0.5).mean() >= 0.9 and np.median(matched) > 0.75, matched
