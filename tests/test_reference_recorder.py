"""Reference recorder: real video decoding, nvinfer preprocessing, ONNX Runtime, real recordings."""

from __future__ import annotations

import numpy as np
import pytest

from dsprobe import Postprocess, open_recording
from dsprobe.evaluate import evaluate, load_ground_truth
from dsprobe.nvinfer_config import Preprocessing, load_nvinfer_config
from dsprobe.reference.preprocess import network_image, normalize, preprocess, resize
from dsprobe.reference.recorder import record_onnx
from dsprobe.reference.runner import ModelError
from dsprobe.reference.video import VideoError, read_frames
from dsprobe.sample import CONFIG_PATH, MODEL_PATH


def test_recording_holds_every_frame_with_context(sample_recording, sample_videos):
    r = open_recording(sample_recording)
    assert len(r) == 60 and sorted(set(r.frames["source_id"])) == [0, 1]
    assert list(r.frames["batch_id"][:4]) == [0, 1, 0, 1]  # interleaved like nvstreammux batches of 2
    f = r.find(1, 10)
    assert f.network_size == (320, 320, 3) and f.frame_size == (1280, 720) and f.unique_id == 1
    assert f.tensors["output0"].shape == (8, 2100) and f.tensors["output0"].dtype == np.float32
    assert f.image.shape == (360, 640, 3) and f.pts_ns == pytest.approx(10 / 15 * 1e9, abs=1e6)
    assert r.config().preprocessing.symmetric_padding and "model.onnx" in r.config_text()


def test_sample_model_detects_on_the_recording(sample_recording, sample_videos):
    r = open_recording(sample_recording)
    pp = Postprocess.from_nvinfer_config(r.config())
    df = pp.run_recording(r)
    gt = load_ground_truth(sample_videos.gt_json, frame_size=(1280, 720))
    res = evaluate(df, gt, list(zip(r.frames["source_id"], r.frames["frame_num"])))
    assert res.map50 > 0.7, res.summary()


def test_recorded_tensor_equals_direct_onnx_run(sample_recording, sample_videos):
    import onnxruntime as ort
    cfg = load_nvinfer_config(CONFIG_PATH)
    frame = next(read_frames(sample_videos.paths[0]))
    from dsprobe.reference.preprocess import muxer_scale
    x, _ = preprocess(muxer_scale(frame.image, 1280, 720), cfg.preprocessing)
    want = ort.InferenceSession(str(MODEL_PATH)).run(None, {"images": x[None]})[0][0]
    got = open_recording(sample_recording).find(0, 0).tensors["output0"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_preprocessing_letterbox_and_normalisation_by_hand():
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[:, :, 0] = 255
    pre = Preprocessing(320, 320, 3, maintain_aspect_ratio=True, symmetric_padding=True, net_scale_factor=0.5,
                        offsets=(10, 20, 30), model_color_format=1)
    img, t = network_image(frame, pre)
    assert (t.offset_top, t.dst_height) == (70, 180)
    assert img[:70].max() == 0 and img[250:].max() == 0 and img[70:250, :, 0].min() == 255
    x = normalize(img, pre)
    # BGR: network channel 0 is the blue (0) channel; pad is s*(0 - offset)
    assert x.shape == (3, 320, 320) and x[0, 100, 100] == 0.5 * (0 - 10) and x[2, 100, 100] == 0.5 * (255 - 30)
    assert x[2, 0, 0] == 0.5 * (0 - 30)
    rightbottom, t2 = network_image(frame, Preprocessing(320, 320, 3, True, False))
    assert t2.offset_top == 0 and rightbottom[:180, :, 0].min() == 255 and rightbottom[180:].max() == 0
    nhwc = normalize(img, Preprocessing(320, 320, 3, network_input_order=1))
    assert nhwc.shape == (320, 320, 3)


@pytest.mark.parametrize("sym, src", [(True, (540, 960)), (False, (1080, 1920)), (True, (720, 1280))])
def test_composed_source_preprocessing_equals_two_stage(sym, src):
    from dsprobe.reference.preprocess import muxer_scale, preprocess_source
    rng = np.random.default_rng(7)
    frame = rng.integers(0, 255, (*src, 3), dtype=np.uint8)
    pre = Preprocessing(320, 320, 3, maintain_aspect_ratio=True, symmetric_padding=sym, net_scale_factor=1 / 255)
    a, ta = preprocess_source(frame, (1280, 720), pre)
    b, tb = preprocess(muxer_scale(frame, 1280, 720), pre)
    assert ta == tb
    np.testing.assert_array_equal(a, b)


def test_nearest_and_bilinear_resize():
    img = np.arange(16, dtype=np.uint8).reshape(4, 4, 1) * 10
    assert resize(img, 2, 2, 0)[:, :, 0].tolist() == [[50, 70], [130, 150]]  # pixel centres 1 and 3
    assert resize(img, 2, 2, 1)[:, :, 0].tolist() == [[25, 45], [105, 125]]  # mean of each 2x2 block


def test_bad_inputs_name_the_file(tmp_path, sample_videos):
    with pytest.raises(VideoError, match="nope.mp4: video file not found"):
        record_onnx([tmp_path / "nope.mp4"], CONFIG_PATH, None, tmp_path / "x.h5", progress=False)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(VideoError, match="bad.mp4: cannot open video"):
        list(read_frames(bad))
    cfg = tmp_path / "c.txt"
    cfg.write_text(CONFIG_PATH.read_text().replace("infer-dims=3;320;320", "infer-dims=3;416;416"))
    with pytest.raises(ModelError, match=r"model.onnx: input 'images' is NCHW \[1, 3, 320, 320\].*infer-dims=3;416;416"):
        record_onnx(sample_videos.paths, cfg, MODEL_PATH, tmp_path / "y.h5", progress=False)


def test_live_postprocess_in_reference_recorder(tmp_path, sample_videos):
    pp = Postprocess.from_nvinfer_config(load_nvinfer_config(CONFIG_PATH))
    out = tmp_path / "live.h5"
    record_onnx(sample_videos.paths, CONFIG_PATH, None, out, postprocess=pp, images=False, progress=False,
                max_frames=10)
    r = open_recording(out)
    assert len(r) == 20
    for i in range(len(r)):
        assert r[i].detections.same_objects(pp(r[i]))
    assert sum(len(r[i].detections) for i in range(len(r))) > 20
