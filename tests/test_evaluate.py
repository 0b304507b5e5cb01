"""Evaluation: COCO ground truth scaled to frame pixels, mAP against values computed by hand, greedy
box matching, error tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from dsprobe.analysis.cocoeval import coco_results
from dsprobe.analysis.evaluate import (
    box_iou,
    evaluate,
    frame_image_id,
    ground_truth_from_detections,
    load_ground_truth,
    match,
    source_to_frame_scale,
)
from dsprobe.detections import Detections

pytest.importorskip("pycocotools")


def write_gt(path, images, annotations, categories=("a", "b", "c")):
    path.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": i, "name": n} for i, n in enumerate(categories)],
            }
        )
    )
    return path


def ann(i, image_id, cat, bbox):
    return {
        "id": i,
        "image_id": image_id,
        "category_id": cat,
        "bbox": bbox,
        "area": bbox[2] * bbox[3],
        "iscrowd": 0,
    }


def dets(rows):
    """DataFrame of (source_id, frame_num, x1, y1, x2, y2, score, class_id) rows."""
    return pd.DataFrame(
        rows, columns=["source_id", "frame_num", "x1", "y1", "x2", "y2", "score", "class_id"]
    )


@pytest.fixture
def gt_file(tmp_path):
    images = [
        {"id": 0, "width": 960, "height": 540, "source_id": 0, "frame_num": 0},
        {"id": frame_image_id(1, 5), "width": 960, "height": 540},
    ]  # stream/frame from the id
    annotations = [
        ann(1, 0, 0, [96, 54, 96, 54]),
        ann(2, 1_000_005, 0, [0, 0, 96, 54]),
        ann(3, 1_000_005, 1, [480, 270, 48, 27]),
    ]
    return write_gt(tmp_path / "gt.json", images, annotations)


def test_ground_truth_is_scaled_to_muxer_pixels(gt_file):
    gt = load_ground_truth(gt_file, frame_size=(1280, 720))  # 960x540 -> 1280x720: x 4/3, y 4/3
    b = gt.boxes.sort_values(["source_id", "frame_num", "class_id"])
    assert b[["source_id", "frame_num"]].values.tolist() == [[0, 0], [1, 5], [1, 5]]
    np.testing.assert_allclose(
        b.iloc[0][["x1", "y1", "x2", "y2"]].to_numpy(float), [128, 72, 256, 144]
    )
    np.testing.assert_allclose(
        b.iloc[2][["x1", "y1", "x2", "y2"]].to_numpy(float), [640, 360, 704, 396]
    )
    f = gt.for_frame(1, 5)
    assert len(f) == 2 and f.space == "frame" and sorted(f.class_ids.tolist()) == [0, 1]
    assert gt.categories == ["a", "b", "c"]
    raw = load_ground_truth(gt_file)  # no frame size: source pixels
    np.testing.assert_allclose(raw.boxes.iloc[0][["x1", "x2"]].to_numpy(float), [96, 192])


def test_ground_truth_with_muxer_padding(gt_file):
    # enable-padding: one scale, picture at the top-left; 960x540 into 1000x1000 -> 1000x562 (562.5 truncated)
    assert source_to_frame_scale((960, 540), (1000, 1000), keep_aspect=True) == (
        1000 / 960,
        562 / 540,
    )
    gt = load_ground_truth(gt_file, frame_size=(1000, 1000), muxer_keep_aspect=True)
    np.testing.assert_allclose(
        gt.boxes.iloc[0][["x1", "y1"]].to_numpy(float), [100, 54 * 562 / 540]
    )


def test_ground_truth_errors(tmp_path):
    with pytest.raises(ValueError, match=r"missing\.json: cannot read COCO ground truth"):
        load_ground_truth(tmp_path / "missing.json")
    (tmp_path / "x.json").write_text(json.dumps({"images": []}))
    with pytest.raises(
        ValueError, match=r"x\.json: not COCO ground truth \(no 'annotations' list\)"
    ):
        load_ground_truth(tmp_path / "x.json")
    p = write_gt(tmp_path / "nosize.json", [{"id": 0}], [ann(1, 0, 0, [0, 0, 1, 1])])
    with pytest.raises(ValueError, match="image 0 has no width/height"):
        load_ground_truth(p, frame_size=(1280, 720))
    p = write_gt(
        tmp_path / "orphan.json",
        [{"id": 0, "width": 10, "height": 10}],
        [ann(7, 3, 0, [0, 0, 1, 1])],
    )
    with pytest.raises(ValueError, match="annotation 7 refers to image 3"):
        load_ground_truth(p)


def test_map_two_classes_by_hand(tmp_path):
    images = [
        {"id": 0, "width": 100, "height": 100},
        {"id": 1, "width": 100, "height": 100},
        {"id": 2, "width": 100, "height": 100},
    ]
    gt = load_ground_truth(
        write_gt(
            tmp_path / "g.json",
            images,
            [
                ann(1, 0, 0, [0, 0, 10, 10]),
                ann(2, 1, 0, [0, 0, 10, 10]),
                ann(3, 1, 1, [50, 50, 10, 10]),
            ],
        )
    )
    d = dets(
        [
            (0, 0, 0, 0, 10, 10, 0.9, 0),  # class a, frame 0: exact hit
            (0, 1, 30, 30, 40, 40, 0.8, 0),  # class a, frame 1: wrong place (false positive)
            (0, 2, 0, 0, 10, 10, 0.7, 2),
        ]
    )  # class c has no ground truth anywhere: not scored
    r = evaluate(d, gt, [(0, 0), (0, 1), (0, 2)])
    # class a: ranked TP, FP -> recall 0.5 at precision 1, never more; COCO's 101-point AP = 51/101
    assert r.per_class_ap50["a"] == pytest.approx(51 / 101)
    assert r.per_class_ap50["b"] == 0.0  # ground truth, no detection
    assert math.isnan(r.per_class_ap50["c"])  # no ground truth: left out of the mean
    assert r.map50 == pytest.approx((51 / 101 + 0) / 2)
    assert r.map50_95 == pytest.approx(r.map50)  # the one hit is exact, so it counts at every IoU
    assert r.num_images == 3 and r.num_detections == 3 and "c n/a" in r.summary()
    rec, prec = r.pr_curves["a"]
    assert rec.max() == pytest.approx(1.0) and prec[rec <= 0.5].min() == pytest.approx(1.0)
    assert prec[rec > 0.51].max() == 0.0


def test_map_over_iou_thresholds_by_hand(tmp_path):
    gt = load_ground_truth(
        write_gt(
            tmp_path / "g.json",
            [{"id": 0, "width": 100, "height": 100}],
            [ann(1, 0, 0, [0, 0, 100, 100])],
            ["a"],
        )
    )
    # IoU 0.78: a hit at thresholds 0.50 .. 0.75 (6 of 10), a miss at 0.80 .. 0.95
    r = evaluate(dets([(0, 0, 0, 0, 100, 78, 0.9, 0)]), gt, [(0, 0)])
    assert r.map50 == pytest.approx(1.0) and r.map50_95 == pytest.approx(0.6)
    assert r.per_class_ap50_95["a"] == pytest.approx(0.6)


def test_misses_on_frames_without_detections_count(tmp_path):
    images = [{"id": i, "width": 100, "height": 100} for i in range(2)]
    gt = load_ground_truth(
        write_gt(
            tmp_path / "g.json",
            images,
            [ann(1, 0, 0, [0, 0, 10, 10]), ann(2, 1, 0, [0, 0, 10, 10])],
            ["a"],
        )
    )
    d = dets([(0, 0, 0, 0, 10, 10, 0.9, 0)])
    with pytest.warns(UserWarning, match="boxes on 1 other frames"):  # and say so
        assert evaluate(d, gt).map50 == pytest.approx(
            1.0
        )  # frames default to those with detections
    # recall stops at 0.5 when frame 1 (no detection) is evaluated too: 51 of 101 recall points
    assert evaluate(d, gt, [(0, 0), (0, 1)]).map50 == pytest.approx(51 / 101)
    empty = evaluate(d.iloc[:0], gt, [(0, 0)])
    assert empty.map50 == 0.0 and empty.per_class_ap50 == {"a": 0.0}


def test_reference_detections_as_ground_truth():
    d = dets(
        [(0, 0, 0, 0, 10, 10, 0.9, 0), (0, 1, 5, 5, 20, 20, 0.3, 1), (1, 0, 1, 1, 4, 4, 0.8, 1)]
    )
    gt = ground_truth_from_detections(d, ["a", "b"])
    assert evaluate(d, gt).map50 == pytest.approx(1.0)
    strict = ground_truth_from_detections(d, ["a", "b"], min_score=0.5)
    assert len(strict.boxes) == 2
    with pytest.raises(ValueError, match=r"class ids \[1\] but only 1 labels"):
        ground_truth_from_detections(d, ["a"])


def test_coco_results_are_xywh_in_frame_pixels():
    d = dets([(0, 3, 10, 20, 40, 60, 0.5, 2), (1, 4, 0, 0, 1, 1, 0.1, 0)])
    res = coco_results(d, {frame_image_id(0, 3)})
    assert res == [
        {"image_id": 3, "category_id": 2, "bbox": [10.0, 20.0, 30.0, 40.0], "score": 0.5}
    ]
    assert len(coco_results(d)) == 2 and coco_results(d)[1]["image_id"] == 1_000_004


def test_box_iou_and_greedy_match_by_hand():
    assert box_iou([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0] == pytest.approx(50 / 150)
    assert box_iou([[0, 0, 0, 0]], [[0, 0, 0, 0]])[0, 0] == 0.0  # empty boxes never match
    a = Detections(
        [[0, 0, 10, 10], [0, 0, 10, 9], [50, 50, 60, 60]], [0.5, 0.9, 0.7], [0, 0, 0], "frame"
    )
    b = Detections([[0, 0, 10, 10], [100, 100, 110, 110]], [1, 1], [0, 0], "frame")
    m = match(a, b)
    # highest IoU first (1.0 beats 0.9) even though box 1 scores higher; one-to-one
    assert m.pairs.tolist() == [[0, 0]] and m.ious.tolist() == [1.0]
    assert m.unmatched_a.tolist() == [1, 2] and m.unmatched_b.tolist() == [1]
    # equal IoU: the higher score wins
    twins = Detections([[0, 0, 10, 10], [0, 0, 10, 10]], [0.2, 0.6], [0, 0], "frame")
    assert match(twins, b).pairs.tolist() == [[1, 0]]
    # classes must agree unless same_class=False; the threshold is inclusive
    other = Detections([[0, 0, 10, 10]], [0.5], [3], "frame")
    assert len(match(other, b).pairs) == 0 and match(other, b, same_class=False).pairs.tolist() == [
        [0, 0]
    ]
    half = Detections([[0, 0, 10, 5]], [0.5], [0], "frame")
    assert len(match(half, b, 0.5).pairs) == 1 and len(match(half, b, 0.51).pairs) == 0
    assert len(match(Detections.empty("frame"), b).unmatched_b) == 2


def test_frames_rec_scores_every_recorded_frame_and_scales_the_ground_truth(sample_videos):
    """evaluate(df, path, frames=rec): every recorded frame is scored (as the explicit pairs are) and
    the ground truth is scaled to the recording's frame size (the sample: 960x540 video, 1280x720
    muxer); unscaled ground truth of another size is refused with the fix; frames left out warn."""
    import dsprobe

    rec = dsprobe.open_recording("recordings/sample.h5")
    pp = dsprobe.Postprocess.from_nvinfer_config(rec.config())
    df = pp.run_recording(rec)
    gt_path = "recordings/sample_gt.json"
    size = rec[0].frame_size
    gt = load_ground_truth(gt_path, frame_size=size)
    pairs = sorted(set(zip(rec.frames["source_id"].tolist(), rec.frames["frame_num"].tolist())))
    explicit = evaluate(df, gt, pairs)
    by_rec = evaluate(df, gt_path, frames=rec)
    assert by_rec.num_images == len(pairs) == explicit.num_images
    assert (by_rec.map50, by_rec.map50_95) == (explicit.map50, explicit.map50_95)
    assert evaluate(df, gt, frames=rec).map50_95 == explicit.map50_95

    with pytest.raises(ValueError, match=r"frame_size=\(1280, 720\)"):
        evaluate(df, load_ground_truth(gt_path), frames=rec)  # boxes left in video pixels
    with pytest.raises(ValueError, match="scaled to 640x360"):
        evaluate(df, load_ground_truth(gt_path, frame_size=(640, 360)), frames=rec)

    few = df[df["frame_num"] < 3]
    with pytest.warns(UserWarning, match="only the .* frames with a detection are scored"):
        partial = evaluate(few, gt)
    assert partial.num_images < explicit.num_images
