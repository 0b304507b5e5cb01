"""nvinfer crop/letterbox geometry against values worked out by hand from nvinfer's rules."""

import numpy as np
import pytest

from dsprobe.nvinfer.geometry import crop_to_network, network_to_crop, nvinfer_transform


def test_pgie_letterbox_symmetric_1280x720_into_640():
    t = nvinfer_transform(
        (0, 0, 1280, 720), (640, 640), maintain_aspect_ratio=True, symmetric_padding=True
    )
    # hdest = 640*720/1280 = 360 <= 640 -> dw=640, dh=360; offsets (0, 140)
    assert (t.dst_width, t.dst_height, t.offset_left, t.offset_top) == (640, 360, 0, 140)
    assert t.ratio_x == 0.5 and t.ratio_y == 0.5


def test_right_bottom_padding_has_no_offset():
    t = nvinfer_transform((0, 0, 1280, 720), (640, 640), maintain_aspect_ratio=True)
    assert (t.offset_left, t.offset_top) == (0, 0)


def test_truncated_size_and_odd_padding_goes_right_bottom():
    # 1000x563: even-rounded to 1000x562; hdest = 320*562/1000 = 179.84 -> dh = 179 (truncated)
    t = nvinfer_transform(
        (0, 0, 1000, 563), (320, 320), maintain_aspect_ratio=True, symmetric_padding=True
    )
    assert (t.src_width, t.src_height, t.dst_height) == (1000, 562, 179)
    assert t.offset_top == (320 - 179) // 2 == 70


def test_tall_crop_limits_width():
    # 100x300 into 320x320: hdest = 960 > 320 -> dw = int(320*100/300) = 106
    t = nvinfer_transform(
        (0, 0, 100, 300), (320, 320), maintain_aspect_ratio=True, symmetric_padding=True
    )
    assert (t.dst_width, t.dst_height, t.offset_left) == (106, 320, 107)


def test_sgie_crop_is_even_rounded():
    t = nvinfer_transform((101.7, 50.2, 75.9, 41.3), (224, 224))
    # left 101 -> 102 (up), top 50 -> 50, width 75 -> 74 (down), height 41 -> 40
    assert (t.src_left, t.src_top, t.src_width, t.src_height) == (102, 50, 74, 40)
    assert t.ratio_x == 224 / 74 and t.ratio_y == 224 / 40


def test_stretch_without_aspect_ratio():
    t = nvinfer_transform((0, 0, 1920, 1080), (960, 544))
    assert (t.dst_width, t.dst_height, t.offset_left, t.offset_top) == (960, 544, 0, 0)
    assert t.ratio_y == 544 / 1080


def test_box_mapping_round_trip_and_values():
    t = nvinfer_transform(
        (0, 0, 1280, 720), (640, 640), maintain_aspect_ratio=True, symmetric_padding=True
    )
    net = np.array([[100, 150, 200, 250]], np.float32)
    frame = network_to_crop(net, t)
    np.testing.assert_allclose(frame, [[200, 20, 400, 220]])
    np.testing.assert_allclose(crop_to_network(frame, t), net)


def test_degenerate_crop_is_rejected():
    with pytest.raises(ValueError, match="smaller than 2x2"):
        nvinfer_transform((10, 10, 1.5, 40), (224, 224))
