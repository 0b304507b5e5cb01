"""dsprobe's YOLOv8 decoders + NMS against Ultralytics' own postprocess on the same raw tensors
(``make verify``, its own venv with torch and ultralytics; skipped with the reason elsewhere).

The models are built from Ultralytics' yaml files with a fixed seed (random weights, nothing is
downloaded) and run in torch. An untrained head scores ~0.5 everywhere, so the class-score channels
are replaced by a detector-like distribution (a few percent of anchors above the threshold) while the
network's real box, keypoint and mask-coefficient outputs are kept.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from dsprobe.postprocess import Postprocess
from dsprobe.postprocess.decoders import seg_masks
from dsprobe.postprocess.registry import StepContext

pytestmark = pytest.mark.slow
CONF, IOU = 0.25, 0.45


@pytest.fixture(autouse=True)
def _needs_ultralytics():
    """Checked here, not at collection: ``make test`` collects this file without torch."""
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")


def ultralytics_nms():
    try:
        from ultralytics.utils.nms import non_max_suppression  # ultralytics >= 8.3.x
    except ImportError:
        from ultralytics.utils.ops import non_max_suppression
    extra = (
        {"max_time_img": 1000.0}
        if "max_time_img" in inspect.signature(non_max_suppression).parameters
        else {}
    )
    return lambda pred, **kw: non_max_suppression(pred, CONF, IOU, max_det=100000, **extra, **kw)


def raw_outputs(model_cls, yaml: str, size: int, images: int = 2, seed: int = 0):
    """``(head (B, C, anchors), protos (B, M, mh, mw) or None)`` of a random-weight model, with
    detector-like class scores."""
    import torch

    torch.manual_seed(seed)
    model = model_cls(yaml, verbose=False).eval()
    with torch.no_grad():
        out = model(torch.rand(images, 3, size, size))
    flat = []

    def walk(o):
        if isinstance(o, torch.Tensor):
            flat.append(o)
        elif isinstance(o, (list, tuple)):
            for x in o:
                walk(x)

    walk(out[0] if isinstance(out, (list, tuple)) else out)
    head = next(t for t in flat if t.ndim == 3)
    protos = next((t for t in flat if t.ndim == 4), None)
    return head.clone(), protos


def detector_like_scores(head, nc: int, seed: int = 1) -> None:
    import torch

    g = torch.Generator().manual_seed(seed)
    head[:, 4 : 4 + nc] = torch.rand(head[:, 4 : 4 + nc].shape, generator=g) ** 200


def pipeline(decoder: str, **params) -> Postprocess:
    return Postprocess(
        [
            {"kind": "decode", "name": decoder, "params": {"score_threshold": CONF, **params}},
            {"kind": "filter", "name": "threshold", "params": {"pre_cluster_threshold": CONF}},
            {"kind": "cluster", "name": "nms", "params": {"iou_threshold": IOU}},
        ]
    )


def rows(boxes, class_ids, scores) -> list[tuple]:
    return sorted(
        zip(
            map(tuple, np.asarray(boxes, np.float32).tolist()),
            np.asarray(class_ids).astype(int).tolist(),
            np.asarray(scores, np.float32).tolist(),
        )
    )


@pytest.mark.parametrize("multi_label", [False, True])
def test_yolov8_detect_decode_and_nms_equal_ultralytics(multi_label):
    from ultralytics.nn.tasks import DetectionModel

    head, _ = raw_outputs(DetectionModel, "yolov8n.yaml", 640)
    assert head.shape[1:] == (84, 8400)  # the real YOLOv8-640 layout
    detector_like_scores(head, 80)
    theirs = ultralytics_nms()(head, multi_label=multi_label)
    pp = pipeline("yolov8", multi_label=multi_label)
    for b in range(head.shape[0]):
        t = theirs[b].numpy()
        # Ultralytics keeps conf > thr, nvinfer's pre-cluster filter conf >= thr: no score equals 0.25 here
        for layer in (
            head[b].numpy(),
            head[b : b + 1].numpy(),
            head[b].numpy().T.copy(),
        ):  # batch axis, transposed
            ours = pp.run({"output0": layer}, StepContext((640, 640)))
            assert len(ours) > 20
            assert rows(ours.boxes, ours.class_ids, ours.scores) == rows(t[:, :4], t[:, 5], t[:, 4])


def test_yolov8_pose_keypoints_equal_ultralytics():
    from ultralytics.nn.tasks import PoseModel

    head, _ = raw_outputs(PoseModel, "yolov8n-pose.yaml", 320)
    assert head.shape[1] == 56
    detector_like_scores(head, 1)
    head[:, 4] = head[:, 4] ** 0.02  # one class: lift a few hundred anchors above the threshold
    theirs = ultralytics_nms()(head, nc=1)
    pp = pipeline("yolov8_pose", num_keypoints=17)
    for b in range(head.shape[0]):
        t = theirs[b].numpy()
        ours = pp.run({"output0": head[b : b + 1].numpy()}, StepContext((320, 320)))
        assert len(ours) == len(t) > 5
        order_o = np.lexsort(ours.boxes.T[::-1])
        order_t = np.lexsort(t[:, :4].T[::-1])
        np.testing.assert_array_equal(ours.boxes[order_o], t[order_t, :4])
        np.testing.assert_array_equal(ours.keypoints[order_o], t[order_t, 6:].reshape(-1, 17, 3))


def test_yolov8_seg_masks_equal_ultralytics_process_mask():
    from ultralytics.nn.tasks import SegmentationModel
    from ultralytics.utils.ops import process_mask

    size = 320
    head, protos = raw_outputs(SegmentationModel, "yolov8n-seg.yaml", size)
    assert head.shape[1] == 4 + 80 + 32 and protos.shape[1:] == (32, size // 4, size // 4)
    detector_like_scores(head, 80)
    theirs = ultralytics_nms()(head, nc=80)
    pp = pipeline("yolov8_seg")
    for b in range(head.shape[0]):
        t = theirs[b]
        want = process_mask(protos[b], t[:, 6:], t[:, :4], (size, size), upsample=True).numpy()
        ours = pp.run(
            {"output0": head[b].numpy(), "output1": protos[b].numpy()}, StepContext((size, size))
        )
        assert len(ours) == len(t) > 5
        got = seg_masks(ours, protos[b].numpy(), (size, size), size=(size, size), threshold=0.5)
        order_o = np.lexsort(ours.boxes.T[::-1])
        order_t = np.lexsort(t[:, :4].numpy().T[::-1])
        np.testing.assert_array_equal(ours.boxes[order_o], t[order_t, :4].numpy())
        np.testing.assert_array_equal(ours.vectors[order_o], t[order_t, 6:].numpy())
        g, w = got[order_o].astype(bool), want[order_t].astype(bool)
        # bilinear resize in numpy vs torch: float rounding may flip pixels whose logit is ~0
        assert (g != w).mean() < 1e-4, (g != w).sum()
        assert w.sum() > 1000
