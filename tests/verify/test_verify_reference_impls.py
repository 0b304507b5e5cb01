"""Clustering and scaling against torchvision, OpenCV and Ultralytics (``make verify``; its own venv
``.venv-verify``). Skipped with the reason when those packages are absent (the light ``make test``
venv deselects them anyway: they are marked slow). The YOLOv8 decoders + NMS against Ultralytics'
own postprocess are in test_verify_ultralytics.py."""

from __future__ import annotations

import numpy as np
import pytest

from dsprobe.detections import Detections
from dsprobe.postprocess.cluster import agnostic_nms, cv_group_rectangles, group_rectangles, nms
from dsprobe.postprocess.registry import StepContext
from dsprobe.postprocess.scale import scale_ultralytics

pytestmark = pytest.mark.slow


def _random(rng: np.random.Generator, n: int, nc: int) -> Detections:
    xy = rng.uniform(-20, 300, (n, 2))
    wh = rng.uniform(4, 80, (n, 2))
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    return Detections(boxes, rng.random(n).astype(np.float32), rng.integers(0, nc, n))


def test_agnostic_and_per_class_nms_vs_torchvision():
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    rng = np.random.default_rng(0)
    for case in range(300):
        d = _random(rng, int(rng.integers(1, 300)), 5)
        thr = float(np.float32(rng.uniform(0.2, 0.8)))
        b, s = torch.from_numpy(d.boxes), torch.from_numpy(d.scores)
        c = torch.from_numpy(d.class_ids.astype(np.int64))
        want = tv.ops.nms(b, s, thr).numpy()  # indices by descending score
        got = agnostic_nms(d, iou_threshold=thr, max_det=10**6)
        np.testing.assert_array_equal(got.boxes, d.boxes[want], err_msg=f"case {case}")
        want_b = tv.ops.batched_nms(b, s, c, thr).numpy()
        want_b = want_b[
            np.lexsort((-d.scores[want_b], d.class_ids[want_b]))
        ]  # nvinfer emits class by class
        got_b = nms(d, None, iou_threshold=thr)
        np.testing.assert_array_equal(got_b.boxes, d.boxes[want_b], err_msg=f"case {case}")
        np.testing.assert_array_equal(got_b.class_ids, d.class_ids[want_b])


def opencv_with_group_rectangles():
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2, "groupRectangles"):
        pytest.skip(
            f"OpenCV {cv2.__version__} has no groupRectangles (removed in 5.0; make verify pins < 5)"
        )
    return cv2


def test_group_rectangles_vs_opencv():
    cv2 = opencv_with_group_rectangles()
    rng = np.random.default_rng(1)
    for case in range(500):
        n = int(rng.integers(1, 40))
        base = rng.integers(0, 200, (max(1, n // 4), 4)) + [0, 0, 20, 20]
        rects = base[rng.integers(0, len(base), n)] + rng.integers(-3, 4, (n, 4))
        g, eps = int(rng.integers(1, 4)), float(np.float32(rng.choice([0.1, 0.2, 0.5, 0.7])))
        want, _ = cv2.groupRectangles(rects.astype(np.int32).tolist(), g, eps)
        got = cv_group_rectangles(rects.astype(np.int64), g, eps)
        assert np.asarray(want).reshape(-1, 4).tolist() == got.tolist(), (
            case
        )  # same rects, same order


def test_mode0_opencv_build_vs_opencv_per_class():
    cv2 = opencv_with_group_rectangles()
    rng = np.random.default_rng(2)
    for case in range(200):
        n = int(rng.integers(1, 30))
        centres = rng.uniform(0, 300, (max(1, n // 5), 2))
        xy = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 2, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(20, 24, (n, 2))], 1).astype(np.float32)
        d = Detections(boxes, rng.random(n).astype(np.float32), rng.integers(0, 2, n))
        got = group_rectangles(d, group_threshold=1, eps=0.2, opencv_build=True)
        want_boxes, want_classes = [], []
        for c in (0, 1):
            b = d.boxes[d.class_ids == c]
            rects = [
                [int(x1), int(y1), int(np.float32(x2 - x1)), int(np.float32(y2 - y1))]
                for x1, y1, x2, y2 in b
            ]
            out, _ = cv2.groupRectangles(rects, 1, float(np.float32(0.2))) if rects else ((), None)
            for x, y, w, h in np.asarray(out).reshape(-1, 4):
                want_boxes.append([x, y, x + w, y + h])
                want_classes.append(c)
        assert got.boxes.tolist() == want_boxes and got.class_ids.tolist() == want_classes, case


def test_ultralytics_letterbox_vs_scale_boxes():
    torch = pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    from ultralytics.utils.ops import scale_boxes

    rng = np.random.default_rng(3)
    for case in range(200):
        net = (int(rng.choice([320, 640, 416])), int(rng.choice([320, 640, 384])))
        frame = (int(rng.integers(100, 2000)), int(rng.integers(100, 2000)))
        d = _random(rng, 20, 3)
        ours = scale_ultralytics(
            Detections(d.boxes * 2, d.scores, d.class_ids), StepContext(net, frame)
        )
        theirs = scale_boxes(
            (net[1], net[0]), torch.from_numpy(d.boxes * 2).double(), (frame[1], frame[0])
        ).numpy()
        np.testing.assert_allclose(
            ours.boxes, theirs.astype(np.float32), rtol=0, atol=1e-3, err_msg=str(case)
        )
