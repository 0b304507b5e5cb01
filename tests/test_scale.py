"""Scaling and frame-space filters against the transcription of nvinfer's get_converted_buffer +
attach_metadata_detector (tests/nvinfer_reference.py), and the other scale / filter steps by hand."""

from __future__ import annotations

import numpy as np
import nvinfer_reference as ref
import pytest

from dsprobe.detections import Detections
from dsprobe.postprocess import Postprocess
from dsprobe.postprocess.filters import object_filters, threshold
from dsprobe.postprocess.registry import StepContext
from dsprobe.postprocess.scale import (
    nvinfer_attach,
    scale_nvinfer,
    scale_ultralytics,
    ultralytics_letterbox,
)

FRAMES = [(1280, 720), (1920, 1080), (640, 480), (333, 257)]
NETWORKS = [(640, 640), (224, 160), (960, 544), (300, 300), (97, 131)]


def network_boxes(rng: np.random.Generator, n: int, net: tuple[int, int], nc: int) -> Detections:
    """Boxes in network pixels, some crossing the network edges, a few degenerate."""
    nw, nh = net
    xy = rng.uniform(-0.1, 1.0, (n, 2)) * [nw, nh]
    wh = rng.uniform(0, 0.5, (n, 2)) * [nw, nh]
    wh[rng.random(n) < 0.05] = 0
    boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
    return Detections(boxes, rng.random(n).astype(np.float32), rng.integers(0, nc, n), "network")


def random_filters(rng: np.random.Generator, nc: int, frame: tuple[int, int]) -> dict:
    def pc(lo: int, hi: int):
        v = rng.integers(lo, hi, nc).tolist()
        return v if rng.random() < 0.5 else v[0]

    return {
        "filter_out_class_ids": [
            int(c) for c in rng.choice(nc, int(rng.integers(0, 2)), replace=False)
        ],
        "detected_min_w": pc(0, 40),
        "detected_min_h": pc(0, 40),
        "detected_max_w": pc(0, 2) * int(rng.integers(100, 600)),
        "detected_max_h": pc(0, 2) * 300,
        "roi_top_offset": pc(0, frame[1] // 4),
        "roi_bottom_offset": pc(0, frame[1] // 4),
        "crop_objects_to_roi_boundary": bool(rng.random() < 0.5),
    }


def reference(
    d: Detections, frame, net, crop, mar, sym, ds, filters=None, apply_filters=True
) -> list:
    nc = int(d.class_ids.max()) + 1 if len(d) else 1
    f = filters or {}

    def pc(name, c):
        v = f.get(name, 0)
        return v[c] if isinstance(v, list) else v

    fp = [
        ref.FilterParams(
            pc("roi_top_offset", c),
            pc("roi_bottom_offset", c),
            pc("detected_min_w", c),
            pc("detected_min_h", c),
            pc("detected_max_w", c),
            pc("detected_max_h", c),
        )
        for c in range(nc)
    ]
    geometry = ref.converted_buffer_geometry(
        crop or (0, 0, frame[0], frame[1]), net[0], net[1], mar, sym
    )
    return ref.attach_metadata_detector(
        ref.objects_from_boxes(d.boxes, d.scores, d.class_ids),
        geometry,
        frame[0],
        frame[1],
        fp,
        tuple(f.get("filter_out_class_ids", ())),
        f.get("crop_objects_to_roi_boundary", False),
        clamp_negative=ds >= 9,
        parent_rect=crop,
        apply_filters=apply_filters,
    )


def assert_boxes(got: Detections, want: list) -> None:
    """Bit-identical: each nvinfer rect as the box ``left, top, left + width, top + height`` (float32)."""
    assert got.space == "frame"
    assert got.class_ids.tolist() == [o.class_id for o in want]
    np.testing.assert_array_equal(
        got.boxes, np.array([ref.box_of(o) for o in want], np.float32).reshape(-1, 4)
    )
    np.testing.assert_array_equal(got.scores, np.array([o.conf for o in want], np.float32))


def random_case(rng: np.random.Generator):
    frame = FRAMES[rng.integers(len(FRAMES))]
    net = NETWORKS[rng.integers(len(NETWORKS))]
    crop = None
    if rng.random() < 0.5:  # SGIE: the parent's float32 rect
        left, top = rng.uniform(0, frame[0] * 0.8), rng.uniform(0, frame[1] * 0.8)
        crop = tuple(
            float(np.float32(v))
            for v in (left, top, rng.uniform(4, frame[0] - left), rng.uniform(4, frame[1] - top))
        )
    return (
        frame,
        net,
        crop,
        bool(rng.integers(2)),
        bool(rng.integers(2)),
        float(rng.choice([6.2, 7.1, 9.1])),
    )


# ---------------------------------------------------------------------------------------------- vs nvinfer
def test_scale_nvinfer_is_bit_identical_to_attach_metadata_detector():
    rng = np.random.default_rng(0)
    for _case in range(600):
        frame, net, crop, mar, sym, ds = random_case(rng)
        d = network_boxes(rng, int(rng.integers(0, 12)), net, 3)
        ctx = StepContext(net, frame, crop_rect=crop)
        got = scale_nvinfer(
            d, ctx, maintain_aspect_ratio=mar, symmetric_padding=sym, deepstream_version=ds
        )
        assert_boxes(got, reference(d, frame, net, crop, mar, sym, ds, apply_filters=False))


def test_scale_and_object_filters_together_are_bit_identical_to_attach_metadata_detector():
    rng = np.random.default_rng(1)
    for case in range(600):
        frame, net, crop, mar, sym, ds = random_case(rng)
        d = network_boxes(rng, int(rng.integers(0, 12)), net, 3)
        filters = (
            random_filters(rng, 3, frame) if case % 4 else {}
        )  # {}: nvinfer's checks with all-zero params
        ctx = StepContext(net, frame, crop_rect=crop)
        want = reference(d, frame, net, crop, mar, sym, ds, filters)
        got = nvinfer_attach(
            d,
            ctx,
            maintain_aspect_ratio=mar,
            symmetric_padding=sym,
            deepstream_version=ds,
            filters=filters,
        )
        assert_boxes(got, want)
        pp = Postprocess(
            [
                {"kind": "decode", "name": lambda layers, ctx: layers["dets"]},
                {
                    "kind": "scale",
                    "name": "nvinfer",
                    "params": {
                        "maintain_aspect_ratio": mar,
                        "symmetric_padding": sym,
                        "deepstream_version": ds,
                    },
                },
                {"kind": "filter", "name": "objects", "params": filters},
            ]
        )
        assert_boxes(
            pp.run({"dets": d}, ctx), want
        )  # the Postprocess runs the pair as nvinfer does


def test_geometry_flags_default_to_the_recordings_config():
    from dsprobe.nvinfer.config import Preprocessing

    d = Detections([[100, 140, 300, 340]], [1], [0], "network")
    geo = Preprocessing(640, 640, 3, maintain_aspect_ratio=True, symmetric_padding=True)
    got = scale_nvinfer(d, StepContext((640, 640), (1280, 720), geometry=geo))
    # letterbox 1280x720 -> 640x360 centred (offset_top 140), ratio 0.5
    assert got.boxes.tolist() == [[200, 0, 600, 400]]
    assert scale_nvinfer(
        d, StepContext((640, 640), (1280, 720), geometry=geo), symmetric_padding=False
    ).boxes.tolist() == [[200, 280, 600, 680]]


def test_deepstream9_clamps_negative_left_top_keeping_the_size():
    d = Detections([[-10, -4, 50, 40]], [1], [0], "network")
    ctx = StepContext((640, 640), (640, 640))
    assert scale_nvinfer(d, ctx, deepstream_version=6.2).boxes.tolist() == [[-10, -4, 50, 40]]
    assert scale_nvinfer(d, ctx, deepstream_version=9.1).boxes.tolist() == [[0, 0, 60, 44]]


def test_sgie_clamp_and_roi_are_crop_relative_and_the_parent_offset_unrounded():
    # SGIE parent at (100.5, 300.25): nvinfer crops from the even-rounded (102, 302) but adds 100.5
    ctx = StepContext((64, 64), (1280, 720), crop_rect=(100.5, 300.25, 64.0, 64.0))
    d = Detections([[-8, 5, 20, 30], [10, 20, 30, 40]], [0.9, 0.8], [0, 0], "network")
    out = scale_nvinfer(d, ctx, deepstream_version=9.1)
    # box 0: crop-relative left -8 -> 0 (DS9), so frame left = the parent's left, not 0
    assert out.boxes.tolist() == [[100.5, 305.25, 128.5, 330.25], [110.5, 320.25, 130.5, 340.25]]
    # roi-top-offset=10 compares the crop-relative top (5 < 10: dropped), not the frame top (305)
    pp = Postprocess(
        [
            {"kind": "decode", "name": lambda layers, ctx: layers["dets"]},
            {"kind": "scale", "name": "nvinfer", "params": {"deepstream_version": 9.1}},
            {"kind": "filter", "name": "objects", "params": {"roi_top_offset": 10}},
        ]
    )
    assert pp.run({"dets": d}, ctx).boxes.tolist() == [[110.5, 320.25, 130.5, 340.25]]


def test_scale_rejects_frame_space_input():
    with pytest.raises(ValueError, match="expects detections in network pixels, got 'frame'"):
        scale_nvinfer(Detections.empty("frame"), StepContext((640, 640), (1280, 720)))


def test_keypoints_map_like_boxes():
    kp = np.array([[[320, 320, 0.9], [0, 140, 0.5]]], np.float32)
    d = Detections([[0, 140, 640, 500]], [1], [0], "network", keypoints=kp)
    ctx = StepContext((640, 640), (1280, 720))
    out = scale_nvinfer(d, ctx, maintain_aspect_ratio=True, symmetric_padding=True)
    assert out.keypoints.tolist() == [[[640, 360, pytest.approx(0.9)], [0, 0, 0.5]]]
    assert scale_ultralytics(d, ctx).keypoints.tolist() == [
        [[640, 360, pytest.approx(0.9)], [0, 0, 0.5]]
    ]


# ---------------------------------------------------------------------------------------------- Ultralytics
def test_ultralytics_letterbox_both_conventions_by_hand():
    # 1000x563 into 640x640: gain 0.64, resized 640x360 (360.32 rounded), pad_y = round(140 - 0.1) = 140
    gx, gy, px, py = ultralytics_letterbox((640, 640), (1000, 563))
    assert (gx, gy, px, py) == (0.64, 360 / 563, 0, 140)
    fgx, fgy, fpx, fpy = ultralytics_letterbox((640, 640), (1000, 563), pad="float")
    assert (fgx, fgy, fpx) == (0.64, 0.64, 0) and fpy == pytest.approx((640 - 563 * 0.64) / 2)
    d = Detections([[0, 140, 640, 500], [-5, 130, 100, 200]], [1, 1], [0, 0], "network")
    out = scale_ultralytics(d, StepContext((640, 640), (1000, 563)))
    assert out.boxes.tolist() == [
        [0, 0, 1000, 563],
        [0, 0, pytest.approx(156.25), pytest.approx(60 * 563 / 360)],
    ]
    raw = scale_ultralytics(d, StepContext((640, 640), (1000, 563)), clip=False)
    assert raw.boxes[1, 0] == pytest.approx(-5 / 0.64)
    with pytest.raises(ValueError, match="pad must be 'ultralytics' or 'float'"):
        scale_ultralytics(d, StepContext((640, 640), (1000, 563)), pad="centre")


# ---------------------------------------------------------------------------------------------- filters
def test_threshold_is_inclusive_per_class_and_drops_unknown_classes():
    d = Detections(np.zeros((5, 4)), [0.25, 0.2499, 0.9, 0.9, 0.3], [0, 0, 1, 7, -1], "network")
    assert threshold(
        d, None, pre_cluster_threshold=[0.25, 0.95], num_classes=2
    ).scores.tolist() == pytest.approx([0.25])
    # num-detected-classes from the context when the param is 0
    assert threshold(
        d, StepContext((1, 1), num_classes=2), pre_cluster_threshold=0.25
    ).scores.tolist() == pytest.approx([0.25, 0.9])
    with pytest.raises(
        ValueError, match="pre_cluster_threshold has 2 per-class values but class 7 occurs"
    ):
        threshold(d, None, pre_cluster_threshold=[0.2, 0.3])


def test_object_filters_drop_and_clip_by_hand():
    ctx = StepContext((640, 640), (1280, 720))
    d = Detections(
        [
            [0, 5, 50, 50],
            [0, 100, 5, 120],
            [0, 700, 50, 719],
            [0, 100, 50, 200],
            [1250, 100, 1300, 150],
        ],
        [1, 1, 1, 1, 1],
        [0, 0, 0, 1, 0],
        "frame",
    )
    out = object_filters(
        d, ctx, detected_min_w=10, roi_top_offset=10, roi_bottom_offset=10, filter_out_class_ids=[1]
    )
    # 0: crosses the top ROI, 1: too narrow, 2: crosses the bottom ROI, 3: class filtered out, 4: kept
    assert out.boxes.tolist() == [[1250, 100, 1300, 150]]
    assert len(object_filters(d, ctx, detected_max_w=40)) == 1  # only the 5 px wide box is <= 40
    clipped = object_filters(
        d[[0, 2, 4]],
        ctx,
        roi_top_offset=10,
        roi_bottom_offset=10,
        crop_objects_to_roi_boundary=True,
    )
    # nvinfer moves the top down to the ROI without shortening the box; the bottom is cut at the ROI,
    # the right edge at the frame width; boxes are clipped, not dropped
    assert clipped.boxes.tolist() == [[0, 10, 50, 55], [0, 700, 50, 710], [1250, 100, 1280, 150]]
    assert object_filters(d, ctx).equals(d)  # defaults filter nothing


def test_cached_crop_mapping_is_shared_read_only_and_takes_list_geometry():
    """The per-geometry mapping is cached across frames, so its arrays cannot be changed in place; a
    context whose sizes are lists (as loaded from JSON) maps the same as one with tuples."""
    from dsprobe.postprocess.scale import crop_transform

    ctx = StepContext(
        network_size=(640, 640), frame_size=(1280, 720), crop_rect=(10.5, 20.25, 300.0, 200.0)
    )
    m = crop_transform(ctx, True, True)
    assert m is crop_transform(ctx, True, True)
    for a in (m.offset, m.ratio, m.origin):
        with pytest.raises(ValueError):
            a[0] = 0
    assert m.origin.tolist() == [10.5, 20.25] and m.rect == (10.5, 20.25, 300.0, 200.0)
    lists = StepContext(
        network_size=[640, 640], frame_size=[1280, 720], crop_rect=[10.5, 20.25, 300.0, 200.0]
    )
    assert crop_transform(lists, True, True) is m
