"""Reference recorder: real video decoding, nvinfer preprocessing, ONNX Runtime, real recordings."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from onnx_builders import tiny_conv

from dsprobe import Postprocess, open_recording
from dsprobe.analysis.evaluate import evaluate, load_ground_truth
from dsprobe.nvinfer.config import load_nvinfer_config
from dsprobe.reference.preprocess import muxer_scale, preprocess
from dsprobe.reference.recorder import record_onnx
from dsprobe.reference.runner import ModelError
from dsprobe.reference.video import VideoError, read_frames
from dsprobe.sample import CONFIG_PATH, MODEL_PATH

ort = pytest.importorskip("onnxruntime")


def conv_config(tmp_path, model, name="c.txt", **keys) -> object:
    """An nvinfer config for a tiny_conv model; ``keys`` are extra/overriding property lines."""
    props = {
        "gie-unique-id": 1,
        "net-scale-factor": 0.0039215697906911373,
        "infer-dims": "3;36;64",
        "onnx-file": str(model),
        "output-tensor-meta": 1,
        "network-type": 100,
    }
    props.update({k.replace("_", "-"): v for k, v in keys.items()})
    p = tmp_path / name
    p.write_text("[property]\n" + "".join(f"{k}={v}\n" for k, v in props.items()))
    return p


def test_recording_holds_every_frame_with_context(sample_recording, sample_videos):
    r = open_recording(sample_recording)
    assert len(r) == 60 and sorted(set(r.frames["source_id"])) == [0, 1]
    assert list(r.frames["batch_id"][:4]) == [
        0,
        1,
        0,
        1,
    ]  # interleaved like nvstreammux batches of 2
    assert list(r.frames["source_id"][:4]) == [0, 1, 0, 1] and list(r.frames["frame_num"][:4]) == [
        0,
        0,
        1,
        1,
    ]
    f = r.find(1, 10)
    assert f.network_size == (320, 320, 3) and f.frame_size == (1280, 720) and f.unique_id == 1
    assert f.tensors["output0"].shape == (8, 2100) and f.tensors["output0"].dtype == np.float32
    assert f.image.shape == (360, 640, 3) and f.image_rect == (0, 0, 1280, 720)
    assert f.pts_ns == pytest.approx(10 / 15 * 1e9, abs=1e6)
    assert r.config().preprocessing.symmetric_padding and "model.onnx" in r.config_text()
    ref = r.stats["reference"]
    assert ref["frames"] == 60 and ref["stage_seconds"]["inference"] > 0
    assert r.notes["recorded_by"] == "dsprobe record-onnx" and r.notes["muxer"] == [1280, 720]


def test_sample_model_detects_on_the_recording(sample_recording, sample_videos):
    r = open_recording(sample_recording)
    pp = Postprocess.from_nvinfer_config(r.config())
    df = pp.run_recording(r)
    gt = load_ground_truth(sample_videos.gt_json, frame_size=(1280, 720))
    res = evaluate(df, gt, list(zip(r.frames["source_id"], r.frames["frame_num"])))
    assert res.map50 > 0.7, res.summary()


def test_recorded_tensor_equals_direct_onnx_run(sample_recording, sample_videos):
    cfg = load_nvinfer_config(CONFIG_PATH)
    frames = list(read_frames(sample_videos.paths[1], max_frames=4))
    r = open_recording(sample_recording)
    sess = ort.InferenceSession(str(MODEL_PATH))
    for f in frames:
        x, _ = preprocess(muxer_scale(f.image, 1280, 720), cfg.preprocessing)
        want = sess.run(None, {"images": x[None]})[0][0]
        got = r.find(1, f.frame_num).tensors["output0"]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_nhwc_dynamic_batch_and_every_output(tmp_path, sample_videos):
    model = tiny_conv(tmp_path / "nhwc.onnx", 64, 36, nhwc=True, batch="N")
    cfg = conv_config(tmp_path, model, network_input_order=1, maintain_aspect_ratio=1)
    out = tmp_path / "nhwc.h5"
    s = record_onnx(
        sample_videos.paths, cfg, None, out, batch=3, max_frames=3, images=False, progress=False
    )
    assert s.frames == 6
    r = open_recording(out)
    assert list(r.frames["batch_id"]) == [0, 1, 2, 0, 1, 2]
    assert set(r.layers) == {"feat", "pooled"} and r.layers["feat"].shape == (2, 36, 64)
    frame = list(read_frames(sample_videos.paths[0], max_frames=3))[2]
    x, t = preprocess(muxer_scale(frame.image, 1280, 720), load_nvinfer_config(cfg).preprocessing)
    assert x.shape == (36, 64, 3) and (t.dst_width, t.dst_height) == (64, 36)
    want = ort.InferenceSession(str(model)).run(None, {"images": x[None]})
    got = r.find(0, 2)
    np.testing.assert_allclose(got.tensors["feat"], want[0][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.tensors["pooled"], want[1][0], rtol=1e-5, atol=1e-6)


def test_fixed_batch_model_is_padded_and_interval_skips_batches(tmp_path, sample_videos):
    model = tiny_conv(tmp_path / "b2.onnx", 64, 36, batch=2)
    cfg = conv_config(tmp_path, model, interval=1)
    out = tmp_path / "b2.h5"
    s = record_onnx(
        sample_videos.paths[:1],
        cfg,
        None,
        out,
        batch=3,
        max_frames=12,
        images=False,
        progress=False,
    )
    # batches of 3 frames: 0-2 inferred, 3-5 skipped (interval=1), 6-8 inferred, 9-11 skipped
    r = open_recording(out)
    assert list(r.frames["frame_num"]) == [0, 1, 2, 6, 7, 8] and s.skipped_frames == 6
    frame = list(read_frames(sample_videos.paths[0], max_frames=9))[8]
    x, _ = preprocess(muxer_scale(frame.image, 1280, 720), load_nvinfer_config(cfg).preprocessing)
    # the third frame of a batch ran in a padded 2-frame chunk: same result as alone
    want = ort.InferenceSession(str(model)).run(None, {"images": np.stack([x, np.zeros_like(x)])})[
        0
    ][0]
    np.testing.assert_allclose(r.find(0, 8).tensors["feat"], want, rtol=1e-5, atol=1e-6)


def test_gray_model_reads_the_luma_plane_and_mean_file(tmp_path, sample_videos):
    model = tiny_conv(tmp_path / "gray.onnx", 64, 36, channels=1)
    mean = tmp_path / "mean.pgm"
    mean.write_bytes(b"P5 64 36 255\n" + bytes(range(64)) * 36)
    cfg = conv_config(
        tmp_path, model, infer_dims="1;36;64", model_color_format=2, mean_file="mean.pgm"
    )
    out = tmp_path / "gray.h5"
    record_onnx(sample_videos.paths[:1], cfg, None, out, max_frames=2, progress=False)
    r = open_recording(out)
    f = next(read_frames(sample_videos.paths[0], gray=True))
    luma = muxer_scale(f.image, 1280, 720)[10::20, 10::20, 0].astype(
        np.float32
    )  # nearest 1280x720 -> 64x36
    want_input = (luma - np.tile(np.arange(64, dtype=np.float32), (36, 1))) * np.float32(
        0.0039215697906911373
    )
    want = ort.InferenceSession(str(model)).run(None, {"images": want_input[None, None]})[0][0]
    np.testing.assert_allclose(r.find(0, 0).tensors["feat"], want, rtol=1e-5, atol=1e-6)
    assert r.find(0, 0).image.shape == (360, 640, 3)  # the luma picture stored as RGB


def test_muxer_keep_aspect(tmp_path, sample_videos):
    model = tiny_conv(tmp_path / "m.onnx", 64, 36)
    cfg = conv_config(tmp_path, model)
    out = tmp_path / "pad.h5"
    record_onnx(
        sample_videos.paths[:1],
        cfg,
        None,
        out,
        muxer=(1280, 1280),
        muxer_keep_aspect=True,
        max_frames=1,
        progress=False,
    )
    f = open_recording(out)[0]
    assert f.frame_size == (1280, 1280) and f.image.shape == (640, 640, 3)
    assert (
        f.image[400:].max() == 0 and f.image[:350].max() > 0
    )  # 960x540 -> 1280x720 at the top, black below


def test_bad_inputs_name_the_file(tmp_path, sample_videos):
    with pytest.raises(VideoError, match="nope.mp4: video file not found"):
        record_onnx([tmp_path / "nope.mp4"], CONFIG_PATH, None, tmp_path / "x.h5", progress=False)
    cfg = tmp_path / "c.txt"
    cfg.write_text(CONFIG_PATH.read_text().replace("infer-dims=3;320;320", "infer-dims=3;416;416"))
    with pytest.raises(
        ModelError,
        match=r"model.onnx: input 'images' is NCHW \[1, 3, 320, 320\].*infer-dims=3;416;416",
    ):
        record_onnx(sample_videos.paths, cfg, MODEL_PATH, tmp_path / "y.h5", progress=False)
    blobs = tmp_path / "blobs.txt"
    blobs.write_text(CONFIG_PATH.read_text() + "\n[property]\noutput-blob-names=boxes;scores\n")
    with pytest.raises(
        ModelError, match=r"output-blob-names \['boxes', 'scores'\] .* outputs are \['output0'\]"
    ):
        record_onnx(sample_videos.paths, blobs, MODEL_PATH, tmp_path / "z.h5", progress=False)
    gray = tmp_path / "gray.txt"
    gray.write_text(
        CONFIG_PATH.read_text()
        .replace("model-color-format=0", "model-color-format=2")
        .replace("infer-dims=3;320;320", "infer-dims=1;320;320")
    )
    with pytest.raises(
        ModelError, match="model.onnx: input 'images' is NCHW .*infer-dims=1;320;320"
    ):
        record_onnx(sample_videos.paths, gray, MODEL_PATH, tmp_path / "g.h5", progress=False)
    with pytest.raises(ModelError, match="missing.onnx: model file not found"):
        record_onnx(
            sample_videos.paths,
            CONFIG_PATH,
            tmp_path / "missing.onnx",
            tmp_path / "m.h5",
            progress=False,
        )
    assert not (tmp_path / "y.h5").exists()  # nothing is written before the inputs are checked


def test_live_postprocess_in_reference_recorder(tmp_path, sample_videos):
    pp = Postprocess.from_nvinfer_config(load_nvinfer_config(CONFIG_PATH))
    out = tmp_path / "live.h5"
    record_onnx(
        sample_videos.paths,
        CONFIG_PATH,
        None,
        out,
        postprocess=pp,
        images=False,
        progress=False,
        max_frames=10,
    )
    r = open_recording(out)
    assert len(r) == 20
    for i in range(len(r)):
        assert r[i].detections.same_objects(pp(r[i]))
    assert sum(len(r[i].detections) for i in range(len(r))) > 20
    assert {o.label for i in range(len(r)) for o in r[i].detection_objects} <= set(pp.labels)


def test_cli_records_and_reports_errors(tmp_path, sample_videos):
    out = tmp_path / "cli.h5"
    cmd = [
        sys.executable,
        "-m",
        "dsprobe",
        "record-onnx",
        "--config",
        str(CONFIG_PATH),
        "--video",
        str(sample_videos.paths[0]),
        "--video",
        str(sample_videos.paths[1]),
        "--muxer",
        "1280x720",
        "--batch",
        "2",
        "--max-frames",
        "2",
        "--no-images",
        "-o",
        str(out),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "recorded 4 frames" in res.stdout and len(open_recording(out)) == 4
    bad = subprocess.run(
        cmd[:-1] + [str(tmp_path / "b.h5"), "--model", str(tmp_path / "none.onnx")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "none.onnx: model file not found" in bad.stderr
    size = subprocess.run(cmd + ["--muxer", "wide"], capture_output=True, text=True)
    assert size.returncode == 2 and "expected WIDTHxHEIGHT" in size.stderr
