"""Clustering steps: nvinfer's cluster modes against the C++ transcription (tests/nvinfer_reference.py)
on thousands of random cases, the OpenCV / soft-NMS / weighted-merge semantics by hand."""

from __future__ import annotations

import numpy as np
import nvinfer_reference as ref
import pytest

from dsprobe.detections import Detections
from dsprobe.postprocess import cluster
from dsprobe.postprocess import iou as sweeps
from dsprobe.postprocess.cluster import (
    agnostic_nms,
    cv_group_rectangles,
    dbscan,
    group_rectangles,
    nms,
    no_clustering,
    soft_nms,
    weighted_merge,
)
from dsprobe.postprocess.iou import iou_matrix, iou_pairs


def random_dets(
    rng: np.random.Generator, n: int, nc: int, size: float = 100.0, ties: bool = True
) -> Detections:
    """Random boxes with fractional coordinates (negative ones too, where ``x1 + (x2 - x1) != x2`` in
    float32 happens most), ~5% degenerate (zero width/height), ~5% exact duplicates; scores from a
    small set (ties) or continuous."""
    xy = rng.uniform(-size / 2, size, (n, 2))  # boxes across the left/top edge too
    wh = rng.uniform(0, size / 3, (n, 2))
    wh[rng.random(n) < 0.05] = 0
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)  # corners rounded independently
    dup = rng.random(n) < 0.05
    if n > 1:
        boxes[dup] = boxes[0]
    scores = rng.choice([0.3, 0.5, 0.7], n) if ties else rng.random(n)
    return Detections(boxes, scores.astype(np.float32), rng.integers(0, nc, n), "network")


def assert_same_as_reference(got: Detections, want: list) -> None:
    """Same nvinfer objects, bit for bit: class, (left, top, width, height) and confidence, in order."""
    assert got.class_ids.tolist() == [o.class_id for o in want]
    rects = np.array([(o.left, o.top, o.width, o.height) for o in want], np.float32).reshape(-1, 4)
    np.testing.assert_array_equal(got.to_rects(), rects)
    np.testing.assert_array_equal(got.scores, np.array([o.conf for o in want], np.float32))


# ---------------------------------------------------------------------------------------------- NMS (mode 2)
@pytest.mark.parametrize("rounds", [0, 2, sweeps.NMS_ROUNDS])  # 0: all pairs; 2: rounds, then pairs
def test_nms_is_bit_identical_to_the_cpp_loop_on_thousands_of_random_cases(rounds, monkeypatch):
    monkeypatch.setattr(sweeps, "NMS_ROUNDS", rounds)
    rng = np.random.default_rng(rounds)
    for case in range(2000 if rounds > 2 else 500):
        nc = int(rng.integers(1, 4))
        d = random_dets(rng, int(rng.integers(0, 30)), nc, ties=case % 2 == 0)
        iou = rng.choice([0.0, 0.1, 0.3, 0.45, 0.5, 0.9, 1.0], nc).tolist()
        post = rng.choice([0.0, 0.3, 0.5], nc).tolist()
        topk = rng.choice([-1, 0, 1, 3], nc).tolist()
        got = nms(d, None, iou_threshold=iou, post_cluster_threshold=post, topk=topk)
        objs = ref.objects_from_boxes(d.boxes, d.scores, d.class_ids)
        want = ref.cluster_nms(ref.split_per_class(objs, nc), iou, post, topk)
        assert_same_as_reference(got, want)


def test_nms_on_boxes_with_positive_area_is_bit_identical_to_the_cpp_loop():
    """Boxes with positive width, height and area take the shorter IoU formula (no C++ overlap1D
    ordering, no union == 0 case): still nvinfer's result bit for bit, across NMS rounds and pairs."""
    rng = np.random.default_rng(11)
    for case in range(1500):
        nc = int(rng.integers(1, 4))
        n = int(rng.integers(1, 60))
        xy = rng.uniform(-50, 100, (n, 2))
        wh = rng.uniform(0.01, 40, (n, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
        scores = (rng.choice([0.3, 0.5, 0.7], n) if case % 2 else rng.random(n)).astype(np.float32)
        d = Detections(boxes, scores, rng.integers(0, nc, n), "network")
        e, plain = sweeps.plain_edges(d.boxes)
        assert plain and np.array_equal(e, sweeps.edges(d.boxes))
        iou = rng.choice([0.0, 0.1, 0.3, 0.45, 0.5, 0.9], nc).tolist()
        got = nms(d, None, iou_threshold=iou if case % 3 else iou[0])
        objs = ref.objects_from_boxes(d.boxes, d.scores, d.class_ids)
        want = ref.cluster_nms(
            ref.split_per_class(objs, nc), iou if case % 3 else [iou[0]] * nc, [0.0] * nc, [-1] * nc
        )
        assert_same_as_reference(got, want)


def test_nms_above_the_one_pass_limit_equals_the_one_pass(monkeypatch):
    rng = np.random.default_rng(5)
    d = random_dets(rng, 400, 3, size=300, ties=True)
    one_pass = nms(d, None, iou_threshold=0.4, topk=7)
    monkeypatch.setattr(cluster, "ONE_PASS_LIMIT", 10)
    per_class = nms(d, None, iou_threshold=0.4, topk=7)
    assert per_class.equals(one_pass) and len(one_pass) > 3


def test_nms_by_hand():
    d = Detections(
        [[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30], [0, 0, 10, 10]],
        [0.9, 0.8, 0.7, 0.95],
        [0, 0, 0, 1],
        "network",
    )
    out = nms(d, None, iou_threshold=0.5)
    # class 0: IoU(box1, box0) = 90/110 = 0.818 > 0.5 -> suppressed; class 1 comes after class 0
    assert out.class_ids.tolist() == [0, 0, 1] and out.scores.tolist() == pytest.approx(
        [0.9, 0.7, 0.95]
    )
    assert len(nms(d, None, iou_threshold=90 / 110)) == 4  # suppression needs IoU > thr (float32)
    assert (
        len(nms(d, None, iou_threshold=0.5, post_cluster_threshold=0.9)) == 1
    )  # strict '>' drops 0.9
    assert len(nms(d, None, topk=0)) == 0  # topk=0 keeps nothing
    assert nms(d, None, iou_threshold=[0.5, 0.5], topk=[1, -1]).scores.tolist() == pytest.approx(
        [0.9, 0.95]
    )
    with pytest.raises(ValueError, match="iou_threshold has 1 per-class values but class 1 occurs"):
        nms(d, None, iou_threshold=[0.5])


def test_iou_uses_left_plus_width_as_the_right_edge():
    # x2 - x1 rounds in float32, so left + width is not always x2: nvinfer's IoU sees left + width
    rng = np.random.default_rng(1)
    d = random_dets(rng, 60, 1, size=1000.0)
    objs = ref.objects_from_boxes(d.boxes, d.scores, d.class_ids)
    m = iou_matrix(d.boxes)
    for i in range(len(objs)):
        for j in range(len(objs)):
            assert m[i, j] == ref.compute_iou(objs[i], objs[j])
    b = d.boxes
    assert np.any(b[:, 0] + (b[:, 2] - b[:, 0]) != b[:, 2])  # the convention matters on these boxes
    assert iou_pairs(b[:1], b[:1])[0] == (1.0 if d.widths[0] * d.heights[0] > 0 else 0.0)


def test_nms_decides_with_nvinfers_edges_at_the_threshold():
    """Boxes whose x2 != left + width in float32, with the IoU threshold set to nvinfer's IoU exactly:
    nvinfer keeps the second box (IoU <= thr); an IoU from the raw x2 would have suppressed it."""
    rng = np.random.default_rng(7)
    found = 0
    for _ in range(20000):
        if found == 20:
            break
        x1 = np.float32(rng.uniform(-60, 0))
        b = np.array(
            [
                [x1, 0, np.float32(rng.uniform(20, 90)), 10],
                [x1 + np.float32(rng.uniform(0, 5)), 0, np.float32(rng.uniform(20, 90)), 10],
            ],
            np.float32,
        )
        d = Detections(b, [0.9, 0.8], [0, 0], "network")
        o = ref.objects_from_boxes(d.boxes, d.scores, d.class_ids)
        nv = ref.compute_iou(o[0], o[1])
        inter = np.float32(min(b[0, 2], b[1, 2]) - max(b[0, 0], b[1, 0])) * np.float32(10)
        union = np.float32((b[0, 2] - b[0, 0]) * 10) + np.float32((b[1, 2] - b[1, 0]) * 10) - inter
        if np.float32(inter / union) <= nv:
            continue
        found += 1
        assert len(nms(d, None, iou_threshold=float(nv))) == 2
        assert_same_as_reference(
            nms(d, None, iou_threshold=float(nv)), ref.cluster_nms([o], [float(nv)], [0.0], [-1])
        )
    assert found == 20


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_iou_nan_suppresses_like_nvinfer():
    # nvinfer keeps a box only while IoU <= thr: a NaN IoU (inf boxes) suppresses
    d = Detections([[0, 0, np.inf, 10], [0, 0, np.inf, 10]], [0.9, 0.8], [0, 0], "network")
    objs = ref.objects_from_boxes(d.boxes, d.scores, d.class_ids)
    want = ref.cluster_nms(ref.split_per_class(objs, 1), [0.5], [0.0], [-1])
    assert len(nms(d, None, iou_threshold=0.5)) == len(want) == 1


# ---------------------------------------------------------------------------------------------- mode 0
def test_mode0_without_opencv_is_nms_05_top20():
    rng = np.random.default_rng(1)
    d = random_dets(rng, 300, 2, size=400, ties=False)
    got = group_rectangles(d, group_threshold=3, eps=0.2, post_cluster_threshold=0.1)
    assert got.equals(nms(d, None, iou_threshold=0.5, post_cluster_threshold=0.1, topk=20))
    assert np.bincount(got.class_ids).max() == 20
    objs = ref.objects_from_boxes(d.boxes, d.scores, d.class_ids)
    assert_same_as_reference(
        got, ref.cluster_nms(ref.split_per_class(objs, 2), [0.5] * 2, [0.1] * 2, [20] * 2)
    )


def test_group_rectangles_opencv_semantics_by_hand():
    rects = np.array([[10, 10, 20, 20], [11, 10, 20, 21], [12, 11, 19, 20], [100, 100, 10, 10]])
    # first three cluster (delta = 0.2 * (19 + 20) / 2 = 3.9); mean (11, 10.33, 19.67, 20.33) rounded;
    # the lone one has n = 1 <= group_threshold and is dropped
    assert cv_group_rectangles(rects, 1, 0.2).tolist() == [[11, 10, 20, 20]]
    assert (
        cv_group_rectangles(rects, 0, 0.2).tolist() == rects.tolist()
    )  # group_threshold 0: untouched
    # rounding of the mean is half to even (cvRound): (10 + 11) / 2 = 10.5 -> 10, (11 + 12) / 2 -> 12
    assert cv_group_rectangles(np.array([[10, 11, 20, 20], [11, 12, 20, 20]]), 1, 0.2).tolist() == [
        [10, 12, 20, 20]
    ]
    # inner-rect rule: a cluster of 2 inside a cluster of 4 is dropped (n2 = 4 > max(3, 2))
    big = np.array([[0, 0, 100, 100]] * 4)
    small = np.array([[40, 40, 10, 10]] * 2)
    assert cv_group_rectangles(np.concatenate([small, big]), 1, 0.1).tolist() == [[0, 0, 100, 100]]
    # ... but not when the outer cluster is not stronger (n2 = 3 is not > max(3, 3))
    out = cv_group_rectangles(np.concatenate([np.array([[40, 40, 10, 10]] * 3), big[:3]]), 1, 0.1)
    assert out.tolist() == [[40, 40, 10, 10], [0, 0, 100, 100]]


def test_group_rectangles_opencv_build_truncates_and_sets_confidence():
    d = Detections(
        [[10.9, 10.2, 30.9, 30.2]] * 3 + [[-3.7, 0, 5, 5]],
        [0.9, 0.8, 0.7, 0.6],
        [0, 0, 0, 1],
        "network",
    )
    g = group_rectangles(d, group_threshold=[1, 0], eps=0.2, opencv_build=True)
    # class 0: cv::Rect(int(10.9), int(10.2), int(20.0), int(20.0)) x3 -> one; class 1: group 0 -> as is,
    # left truncated toward zero (-3.7 -> -3), width int(8.7) = 8
    assert g.boxes.tolist() == [[10, 10, 30, 30], [-3, 0, 5, 5]]
    assert g.scores.tolist() == pytest.approx([-0.1, -0.1]) and g.class_ids.tolist() == [0, 1]


# ---------------------------------------------------------------------------------------------- mode 4, 1, 3
def test_mode4_matches_the_cpp_fill_as_a_set_and_sorts_within_class():
    rng = np.random.default_rng(2)
    for case in range(300):
        nc = int(rng.integers(1, 4))
        d = random_dets(rng, int(rng.integers(0, 20)), nc, ties=case % 2 == 0)
        topk = rng.choice([-1, 0, 2], nc).tolist()
        got = no_clustering(d, topk=topk)
        want = ref.fill_unclustered(
            ref.split_per_class(ref.objects_from_boxes(d.boxes, d.scores, d.class_ids), nc), topk
        )
        # nvinfer leaves a class with topk < 0 in parser order; dsprobe sorts it by confidence (stable)
        want = sorted(want, key=lambda o: (o.class_id, -o.conf))
        assert_same_as_reference(got, want)


def test_dbscan_approximation_contract():
    d = Detections(
        [[0, 0, 10, 10], [0.5, 0, 10.5, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 10, 10]],
        [0.9, 0.6, 0.3, 0.8, 0.4],
        [0, 0, 0, 0, 1],
        "network",
    )
    # min_boxes = 0: no clustering (as nvinfer), only post (>=, not >) and top-k
    passthrough = dbscan(d, post_cluster_threshold=0.4, topk=-1)
    assert passthrough.scores.tolist() == pytest.approx([0.9, 0.8, 0.6, 0.4])
    # min_boxes = 2, eps = 0.3: the three overlapping class-0 boxes merge (weighted mean, max score),
    # the lone class-0 box is noise; class 1 is not clustered (min_boxes 0 for it)
    merged = dbscan(d, eps=0.3, min_boxes=[2, 0])
    assert merged.class_ids.tolist() == [0, 1] and merged.scores.tolist() == pytest.approx(
        [0.9, 0.4]
    )
    w = np.array([0.9, 0.6, 0.3]) / 1.8
    assert merged.boxes[0].tolist() == pytest.approx(
        [0.5 * w[1] + 1 * w[2], 0, 10 + 0.5 * w[1] + 1 * w[2], 10], rel=1e-5
    )
    assert (
        len(dbscan(d, eps=0.3, min_boxes=[2, 0], min_score=[2.0, 0.0])) == 1
    )  # summed score 1.8 < 2
    hybrid = dbscan(d, eps=0.3, min_boxes=[2, 0], then_nms=True, iou_threshold=0.5, topk=1)
    assert hybrid.equals(nms(merged, None, iou_threshold=0.5, topk=1))


# ---------------------------------------------------------------------------------------------- beyond nvinfer
def test_agnostic_nms_suppresses_across_classes():
    a = Detections(
        [[0, 0, 10, 10], [1, 1, 11, 11], [30, 30, 40, 40]], [0.9, 0.8, 0.7], [0, 1, 1], "network"
    )
    assert agnostic_nms(a, iou_threshold=0.5).scores.tolist() == pytest.approx([0.9, 0.7])
    assert len(nms(a, None, iou_threshold=0.5)) == 3
    assert len(agnostic_nms(a, iou_threshold=0.5, max_det=1)) == 1
    assert len(agnostic_nms(a, iou_threshold=0.5, score_threshold=0.7)) == 1  # strict '>'


def test_soft_nms_linear_and_gaussian_by_hand():
    a = Detections(
        [[0, 0, 10, 10], [1, 1, 11, 11], [40, 40, 50, 50]], [0.9, 0.8, 0.5], [0, 1, 0], "network"
    )
    iou = 81 / 119
    lin = soft_nms(a, iou_threshold=0.3, method="linear", per_class_nms=False)
    assert lin.scores.tolist() == pytest.approx(
        [0.9, 0.5, 0.8 * (1 - iou)], rel=1e-5
    )  # class order
    gauss = soft_nms(a, sigma=0.5, method="gaussian", per_class_nms=False)
    assert sorted(gauss.scores.tolist()) == pytest.approx(
        sorted([0.9, 0.8 * np.exp(-(iou**2) / 0.5), 0.5]), rel=1e-5
    )
    assert soft_nms(a, method="linear").scores.tolist() == pytest.approx(
        [0.9, 0.5, 0.8]
    )  # per class: no overlap
    assert len(soft_nms(a, method="linear", per_class_nms=False, score_threshold=0.4)) == 2
    with pytest.raises(ValueError, match="method must be 'linear' or 'gaussian'"):
        soft_nms(a, method="box")


def test_weighted_merge_by_hand():
    w = weighted_merge(
        Detections(
            [[0, 0, 10, 10], [2, 0, 12, 10], [50, 50, 60, 60]],
            [0.75, 0.25, 0.5],
            [0, 0, 0],
            "network",
        ),
        iou_threshold=0.5,
    )
    assert w.boxes.tolist() == [[0.5, 0, 10.5, 10], [50, 50, 60, 60]]
    assert w.scores.tolist() == pytest.approx([0.5, 0.5])


@pytest.mark.parametrize(
    "case", ["ties", "signed_zero_inf_negative", "class_ids_out_of_int16", "nan", "float64"]
)
def test_class_score_order_equals_a_stable_sort_by_class_then_descending_score(case):
    """The packed-key fast path and its fallbacks give Python's stable sort by (class, -score):
    equal scores (and -0.0 vs 0.0) keep their input order; NaN scores or class ids beyond int16 take
    the lexsort path."""
    rng = np.random.default_rng(3)
    for n in (1, 2, 17, 600):
        scores = rng.choice([0.25, 0.5, 0.75], n)
        cls = rng.integers(0, 4, n)
        if case == "signed_zero_inf_negative":
            scores = rng.choice([-0.0, 0.0, np.inf, -np.inf, -3.5, 1e-40, 0.5], n)
            cls = rng.integers(-3, 3, n)
        elif case == "class_ids_out_of_int16":
            cls = rng.choice([0, 40000, -40000], n)
        elif case == "nan":
            scores[rng.integers(0, n)] = np.nan
        order = cluster.class_score_order(
            scores.astype(np.float64 if case == "float64" else np.float32), cls.astype(np.int32)
        )
        want = sorted(
            range(n), key=lambda i: (cls[i], -np.float32(scores[i]))
        )  # Python's sort is stable
        if case == "nan":  # NaN last within its class (numpy's order), the rest as above
            want = sorted(
                range(n),
                key=lambda i: (
                    cls[i],
                    np.isnan(scores[i]),
                    -np.float32(scores[i]) if not np.isnan(scores[i]) else 0,
                ),
            )
        assert order.tolist() == want
