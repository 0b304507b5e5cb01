"""dsprobe compare on real recordings that differ in known ways: an FP16 copy of the sample model vs
the FP32 original, and a preprocessing change (symmetric vs right/bottom padding) on a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from onnx_builders import float16_model, tiny_conv

from dsprobe import Postprocess, open_recording
from dsprobe.analysis.compare import align, compare
from dsprobe.cli.compare import plot
from dsprobe.nvinfer.config import load_nvinfer_config
from dsprobe.postprocess.pipeline import PostprocessError
from dsprobe.reference.recorder import record_onnx
from dsprobe.sample import CONFIG_PATH, MODEL_PATH

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def fp16_recording(sample_videos, tmp_path_factory):
    """The sample streams (10 frames each) through a true FP16 copy of the sample model."""
    tmp = tmp_path_factory.mktemp("fp16")
    model = float16_model(MODEL_PATH, tmp / "model_fp16.onnx")
    out = tmp / "fp16.h5"
    record_onnx(
        sample_videos.paths,
        CONFIG_PATH,
        model,
        out,
        batch=2,
        max_frames=10,
        images=False,
        progress=False,
    )
    return out


def test_fp16_vs_fp32_drift(fp16_recording, sample_recording, tmp_path):
    rep = compare(fp16_recording, sample_recording)
    assert (rep.aligned_frames, rep.only_in_a, rep.only_in_b) == (20, 0, 40)
    (layer,) = rep.layers
    assert (layer.name, layer.dtype_a, layer.dtype_b, layer.compared) == (
        "output0",
        "float16",
        "float32",
        20,
    )
    # FP16 keeps ~3 significant digits: box coordinates (up to 320 px) move by a fraction of a pixel,
    # the tensors stay almost parallel, and nearly every box survives with almost the same extent
    assert 0.01 < layer.max_abs < 2 and 0 < layer.mean_abs < layer.max_abs
    assert 0 < layer.rel_error < 1e-2 and layer.cosine_min > 0.9999
    d = rep.detections
    assert d.matched > 40 and d.missing + d.extra <= 0.05 * d.matched and 0.97 < d.mean_iou < 1
    assert rep.config_differences == {}  # same config: the drift is the model's precision
    assert (
        rep.worst_frames[0]["layer"] == "output0"
        and rep.worst_frames[0]["max_abs"] == layer.max_abs
    )
    text = rep.text()
    assert "float16 vs float32" in text and "20 frames by frame" in text and "matched" in text
    # the per-frame table behind the plot
    pf = rep.per_frame
    assert (
        len(pf) == 20
        and pf["max_abs:output0"].max() == layer.max_abs
        and pf["matched_fraction"].min() > 0.5
    )
    png = tmp_path / "drift.png"
    plot(rep, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_identical_recordings_and_pts_alignment(sample_recording):
    same = compare(sample_recording, sample_recording, by="pts")
    assert same.aligned_frames == 60 and same.align_by == "pts"
    layer = same.layers[0]
    assert layer.max_abs == 0 and layer.rel_error == 0 and layer.cosine_min == pytest.approx(1.0)
    assert same.detections.missing == same.detections.extra == 0 and same.detections.mean_iou == 1.0
    r = open_recording(sample_recording)
    ra, rb = align(r, r, "frame")
    np.testing.assert_array_equal(ra, rb)
    with pytest.raises(ValueError, match="align by 'frame' or 'pts'"):
        align(r, r, "time")


def test_preprocessing_difference_is_reported(sample_videos, tmp_path):
    tiny_conv(tmp_path / "m.onnx", 64, 64)  # writes m.onnx, the model both configs name
    recs = {}
    for sym in (0, 1):
        cfg = tmp_path / f"c{sym}.txt"
        cfg.write_text(
            f"[property]\ninfer-dims=3;64;64\nnet-scale-factor=0.0039215697906911373\nonnx-file=m.onnx\n"
            f"maintain-aspect-ratio=1\nsymmetric-padding={sym}\nnetwork-type=100\n"
        )
        recs[sym] = tmp_path / f"r{sym}.h5"
        record_onnx(
            sample_videos.paths[:1],
            cfg,
            None,
            recs[sym],
            max_frames=3,
            images=False,
            progress=False,
        )
    rep = compare(recs[0], recs[1])
    assert rep.config_differences == {"symmetric_padding": (False, True)}
    feat = next(ld for ld in rep.layers if ld.name == "feat")
    assert feat.max_abs > 0.1 and feat.cosine_min < 0.999
    # the config's default (YOLOv8) postprocess does not fit these layers: said, not raised
    assert rep.detections is None and any("detections not compared" in n for n in rep.notes)
    assert "symmetric_padding A=False B=True" in rep.text()
    spec = tmp_path / "pp.json"
    Postprocess.from_nvinfer_config(load_nvinfer_config(CONFIG_PATH)).save(spec)
    with pytest.raises(PostprocessError):  # an explicit postprocess that does not fit is an error
        compare(recs[0], recs[1], Postprocess.load(spec))


def test_cli_json_plot_and_errors(fp16_recording, sample_recording, tmp_path):
    png = tmp_path / "d.png"
    spec = tmp_path / "pp.json"
    Postprocess.from_nvinfer_config(load_nvinfer_config(CONFIG_PATH)).with_params(
        "filter", pre_cluster_threshold=0.5
    ).save(spec)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dsprobe",
            "compare",
            str(fp16_recording),
            str(sample_recording),
            "--json",
            "--plot",
            str(png),
            "--postprocess",
            str(spec),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert (
        d["aligned_frames"] == 20
        and d["layers"][0]["dtype_a"] == "float16"
        and d["detections"]["matched"] > 0
    )
    assert "threshold" in d["detections"]["postprocess"] and png.stat().st_size > 1000
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "dsprobe",
            "compare",
            str(tmp_path / "none.h5"),
            str(sample_recording),
        ],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "none.h5" in bad.stderr  # a bad recording: one line, exit 2
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
