"""nvinfer preprocessing in numpy: geometry, resampling conventions, normalisation, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from dsprobe.nvinfer.config import Preprocessing, parse_nvinfer_config
from dsprobe.nvinfer.geometry import muxer_content_size
from dsprobe.reference.preprocess import (
    clip_rect,
    load_mean_file,
    muxer_scale,
    nearest_index,
    network_image,
    normalize,
    preprocess,
    preprocess_source,
    resize,
)


def test_letterbox_symmetric_and_normalisation_by_hand():
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[:, :, 0] = 255
    pre = Preprocessing(
        320,
        320,
        3,
        maintain_aspect_ratio=True,
        symmetric_padding=True,
        net_scale_factor=0.5,
        offsets=(10, 20, 30),
        model_color_format=1,
    )
    img, t = network_image(frame, pre)
    # 1280x720 -> 320x180 (hdest = 320*720/1280 = 180), offset_top = (320-180)//2 = 70
    assert (t.offset_left, t.offset_top, t.dst_width, t.dst_height) == (0, 70, 320, 180)
    assert img[:70].max() == 0 and img[250:].max() == 0 and img[70:250, :, 0].min() == 255
    x = normalize(img, pre)
    # BGR: network channel 0 is the blue (0) channel; the pad is s*(0 - offset), not 0
    assert x.shape == (3, 320, 320) and x.dtype == np.float32
    assert (
        x[0, 100, 100] == 0.5 * (0 - 10)
        and x[2, 100, 100] == 0.5 * (255 - 30)
        and x[2, 0, 0] == 0.5 * (0 - 30)
    )


def test_letterbox_right_bottom_and_truncated_size():
    frame = np.full((700, 1001, 3), 9, np.uint8)
    img, t = network_image(frame, Preprocessing(320, 320, 3, maintain_aspect_ratio=True))
    # crop rounded down to even: 1000x700; hdest = 320*700/1000 = 224.0; no offsets without symmetric-padding
    assert (t.src_width, t.src_height, t.dst_width, t.dst_height, t.offset_top) == (
        1000,
        700,
        320,
        224,
        0,
    )
    assert img[:224].min() == 9 and img[224:].max() == 0
    img2, t2 = network_image(
        np.full((333, 1000, 3), 9, np.uint8), Preprocessing(320, 320, 3, True, True)
    )
    # hdest = 320*332/1000 = 106.24 -> 106 (truncated); offset (320-106)//2 = 107, odd pixel at the bottom
    assert (t2.dst_height, t2.offset_top) == (106, 107)
    assert img2[:107].max() == 0 and img2[107:213].min() == 9 and img2[213:].max() == 0


def test_stretch_without_maintain_aspect_ratio():
    frame = np.arange(720 * 1280, dtype=np.uint32).reshape(720, 1280) % 251
    frame = np.repeat(frame.astype(np.uint8)[..., None], 3, axis=2)
    img, t = network_image(frame, Preprocessing(640, 360, 3))
    assert (t.dst_width, t.dst_height, t.ratio_x, t.ratio_y) == (640, 360, 0.5, 0.5)
    # nearest, pixel centres: network pixel d samples frame pixel floor((d + 0.5) * 2) = 2d + 1
    np.testing.assert_array_equal(img, frame[1::2, 1::2])


def test_sgie_crop_is_even_rounded():
    frame = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    img, t = network_image(frame, Preprocessing(100, 50, 3), crop_rect=(3.7, 5.2, 101.9, 51.3))
    # left/top truncated then rounded up to even (4, 6), width/height rounded down to even (100, 50)
    assert (t.src_left, t.src_top, t.src_width, t.src_height) == (4, 6, 100, 50)
    np.testing.assert_array_equal(img, frame[6:56, 4:104])
    with pytest.raises(ValueError, match="outside the 1280x720 frame"):
        network_image(frame, Preprocessing(64, 64, 3), crop_rect=(1250.0, 10.0, 60.0, 60.0))


def test_nearest_index_uses_pixel_centres():
    assert nearest_index(4, 2).tolist() == [1, 3]  # floor((d + .5) * 2)
    assert nearest_index(3, 2).tolist() == [0, 2]  # floor(.75), floor(2.25)
    assert nearest_index(2, 5).tolist() == [0, 0, 1, 1, 1]  # upscaling: floor((d + .5) * .4)
    img = np.arange(16, dtype=np.uint8).reshape(4, 4, 1) * 10
    assert resize(img, 2, 2, 0)[:, :, 0].tolist() == [[50, 70], [130, 150]]
    assert resize(img, 2, 2, 6)[:, :, 0].tolist() == [[50, 70], [130, 150]]  # 6 = Default = nearest


def test_bilinear_by_hand():
    img = np.arange(16, dtype=np.uint8).reshape(4, 4, 1) * 10
    # 2x downscale: sample points 0.5, 2.5 -> the mean of each 2x2 block
    assert resize(img, 2, 2, 1)[:, :, 0].tolist() == [[25, 45], [105, 125]]
    row = np.array([[[0], [100]]], np.uint8)
    # 2 -> 4 upscale: positions clip(-0.25)=0, 0.25, 0.75, clip(1.25)=1 -> 0, 25, 75, 100
    assert resize(row, 4, 1, 1)[0, :, 0].tolist() == [0, 25, 75, 100]
    # quantised to uint8 with rounding: 0.5 * 3 = 1.5 -> 2
    assert resize(np.array([[[0], [3]]], np.uint8), 1, 1, 1)[0, 0, 0] == 2


def test_gray_nhwc_and_scale_factor_off():
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 100
    x = normalize(rgb, Preprocessing(4, 4, 1, model_color_format=2, net_scale_factor=1.0))
    assert x.shape == (1, 4, 4) and x[0, 0, 0] == np.rint(0.299 * 100)
    luma = np.full((4, 4, 1), 77, np.uint8)  # a decoded luma plane goes through untouched
    assert normalize(luma, Preprocessing(4, 4, 1, model_color_format=2))[0, 0, 0] == 77
    nhwc = normalize(rgb, Preprocessing(4, 4, 3, network_input_order=1, net_scale_factor=2.0))
    assert nhwc.shape == (4, 4, 3) and nhwc[0, 0].tolist() == [200, 0, 0]
    # net-scale-factor <= 0 disables scale and offsets (nvinfer applies them only when > 0)
    raw = normalize(rgb, Preprocessing(4, 4, 3, net_scale_factor=0.0, offsets=(1, 2, 3)))
    assert raw[0, 0, 0] == 100
    with pytest.raises(ValueError, match="offsets has 2 values but the network has 3 channels"):
        normalize(rgb, Preprocessing(4, 4, 3, offsets=(1, 2)))


def test_mean_file_binary_and_text(tmp_path):
    mean = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    p6 = tmp_path / "mean.ppm"
    p6.write_bytes(b"P6\n# a comment\n3 2\n255\n" + mean.tobytes())
    np.testing.assert_array_equal(load_mean_file(p6, 3, 2), mean)
    p3 = tmp_path / "mean_text.ppm"
    p3.write_text("P3 3 2 255\n" + " ".join(str(v) for v in mean.reshape(-1)))
    m = load_mean_file(p3, 3, 2)
    np.testing.assert_array_equal(m, mean)
    img = np.full((2, 3, 3), 50, np.uint8)
    x = normalize(
        img, Preprocessing(3, 2, 3, net_scale_factor=0.5, offsets=(1000, 1000, 1000)), mean=m
    )
    # mean-file wins over offsets; byte position = network channel
    assert x[:, 1, 2].tolist() == [0.5 * (50 - v) for v in mean[1, 2]]
    with pytest.raises(ValueError, match="mean-file is 3x2 but the network input is 4x4"):
        load_mean_file(p6, 4, 4)
    bad = tmp_path / "bad.ppm"
    bad.write_bytes(b"GIF89a....")
    with pytest.raises(ValueError, match="bad.ppm: mean-file must be a PPM"):
        load_mean_file(bad, 3, 2)


@pytest.mark.parametrize(
    "sym, src",
    [(True, (540, 960)), (False, (1080, 1920)), (True, (720, 1280)), (False, (481, 853))],
)
def test_composed_source_preprocessing_equals_two_stage(sym, src):
    frame = np.random.default_rng(7).integers(0, 255, (*src, 3), dtype=np.uint8)
    pre = Preprocessing(
        320, 320, 3, maintain_aspect_ratio=True, symmetric_padding=sym, net_scale_factor=1 / 255
    )
    a, ta = preprocess_source(frame, (1280, 720), pre)
    b, tb = preprocess(muxer_scale(frame, 1280, 720), pre)
    assert ta == tb
    np.testing.assert_array_equal(a, b)
    # bilinear stages and a padded muxer take the two-stage path and agree with it too
    pre_bl = Preprocessing(320, 320, 3, True, sym, scaling_filter=1)
    np.testing.assert_array_equal(
        preprocess_source(frame, (1280, 720), pre_bl, keep_aspect=True, muxer_filter=1)[0],
        preprocess(muxer_scale(frame, 1280, 720, keep_aspect=True, scaling_filter=1), pre_bl)[0],
    )


def test_muxer_keep_aspect_pads_right_and_bottom():
    frame = np.full((480, 640, 3), 200, np.uint8)  # 4:3 into 16:9
    out = muxer_scale(frame, 1280, 720, keep_aspect=True)
    assert muxer_content_size((640, 480), (1280, 720)) == (960, 720)
    assert out.shape == (720, 1280, 3) and out[:, :960].min() == 200 and out[:, 960:].max() == 0


def test_clip_rect():
    assert clip_rect((10, 20, 30, 40), (1280, 720)) == ((10.0, 20.0, 30.0, 40.0), False)
    assert clip_rect((-5, 700, 30, 40), (1280, 720)) == ((0.0, 700.0, 25.0, 20.0), True)


def test_config_values_reach_preprocessing():
    cfg = parse_nvinfer_config(
        "[property]\ninfer-dims=3;64;96\nnet-scale-factor=0.5\noffsets=1;2;3\n"
        "model-color-format=1\nmaintain-aspect-ratio=1\nsymmetric-padding=1\nscaling-filter=1\n"
    )
    pre = cfg.preprocessing
    frame = np.random.default_rng(1).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    x, t = preprocess(frame, pre)
    assert x.shape == (3, 64, 96) and (t.dst_width, t.dst_height, t.offset_top) == (96, 54, 5)
    img = resize(frame, 96, 54, 1)
    np.testing.assert_allclose(x[0, 5:59], 0.5 * (img[..., 2].astype(np.float32) - 1))
