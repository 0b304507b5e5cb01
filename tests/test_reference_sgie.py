"""Reference recorder in SGIE mode: a classifier on the sample detector's objects, selected and cropped
as nvinfer does, recorded as per-object tensors like the probe records an SGIE."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from onnx_builders import tiny_classifier

from dsprobe import Postprocess, open_recording
from dsprobe.analysis.compare import compare
from dsprobe.nvinfer.config import load_nvinfer_config, parse_nvinfer_config
from dsprobe.records import ObjectRecord
from dsprobe.reference.preprocess import clip_rect, muxer_scale, preprocess
from dsprobe.reference.recorder import record_onnx
from dsprobe.reference.sgie import min_object_floor, select_objects, should_infer
from dsprobe.reference.video import read_frames
from dsprobe.sample import CONFIG_PATH

ort = pytest.importorskip("onnxruntime")

SGIE_KEYS = (
    "gie-unique-id=2\nprocess-mode=2\noperate-on-gie-id=1\noperate-on-class-ids=0;1;3\n"
    "input-object-min-width=40\nnet-scale-factor=0.0039215697906911373\nnetwork-type=1\n"
    "infer-dims=3;32;32\noutput-tensor-meta=1\n"
)


def sgie_config(tmp_path, seed=0, name="sgie.txt"):
    model = tiny_classifier(tmp_path / f"cls{seed}.onnx", seed=seed)
    p = tmp_path / name
    p.write_text(f"[property]\n{SGIE_KEYS}onnx-file={model.name}\n")
    return p


@pytest.fixture(scope="module")
def sgie_recording(sample_videos, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sgie")
    out = tmp / "sgie.h5"
    s = record_onnx(
        sample_videos.paths,
        CONFIG_PATH,
        None,
        out,
        secondary=[sgie_config(tmp)],
        batch=2,
        max_frames=4,
        object_images=True,
        progress=False,
    )
    return out, tmp, s


def test_sgie_objects_follow_nvinfer_selection(sgie_recording):
    out, _, summary = sgie_recording
    r = open_recording(out)
    assert r.unique_ids == [1, 2] and len(r.frames[r.frames["unique_id"] == 1]) == 8
    assert (
        r.layers["probs"].per_object
        and r.layers["probs"].shape == (4,)
        and r.layers["probs"].unique_id == 2
    )
    cfg2 = r.config(2)
    assert cfg2.process_mode == 2
    pp = Postprocess.from_nvinfer_config(r.config(1))
    n_objects = 0
    for row in np.flatnonzero(r.frames["unique_id"] == 1):
        pgie = r[int(row)]
        assert pgie.detections.same_objects(
            pp(pgie)
        )  # the PGIE's objects come from its config's postprocess
        expected = [pgie.detection_objects[i] for i in select_objects(pgie.detection_objects, cfg2)]
        if not expected:
            continue
        sgie = r.find(pgie.source_id, pgie.frame_num, unique_id=2)
        assert (
            sgie.network_size == (32, 32, 3)
            and sgie.frame_size == (1280, 720)
            and sgie.batch_id == pgie.batch_id
        )
        assert [o.rect for o in sgie.objects] == [o.rect for o in expected]
        for o in sgie.objects:
            assert o.class_id in (0, 1, 3) and o.rect[2] >= 40 and o.unique_component_id == 1
            assert (
                o.layers["probs"].shape == (4,) and abs(float(o.layers["probs"].sum()) - 1) < 1e-5
            )
            assert (
                o.image is not None and o.image.rect == o.rect
            )  # the stored crop covers the object
        n_objects += len(sgie.objects)
    assert n_objects == summary.objects > 5


def test_sgie_tensors_equal_direct_run_on_the_crop(sgie_recording, sample_videos):
    out, tmp, _ = sgie_recording
    r = open_recording(out)
    cfg2 = load_nvinfer_config(tmp / "sgie.txt")
    sess = ort.InferenceSession(str(tmp / "cls0.onnx"))
    frame = list(read_frames(sample_videos.paths[0], max_frames=4))[3]
    muxed = muxer_scale(frame.image, 1280, 720)
    sgie = r.find(0, 3, unique_id=2)
    assert sgie.objects
    for o in sgie.objects:
        x, t = preprocess(muxed, cfg2.preprocessing, clip_rect(o.rect, (1280, 720))[0])
        assert (t.src_left % 2, t.src_top % 2, t.src_width % 2, t.src_height % 2) == (0, 0, 0, 0)
        want = sess.run(None, {"input": x[None]})[0][0]
        np.testing.assert_allclose(o.layers["probs"], want, rtol=1e-5, atol=1e-6)


def test_compare_pairs_sgie_objects(sgie_recording, sample_videos):
    out, tmp, _ = sgie_recording
    same = compare(out, out)
    probs = next(ld for ld in same.layers if ld.per_object)
    assert (
        probs.max_abs == 0
        and probs.compared > 5
        and same.objects[0].only_in_a == same.objects[0].only_in_b == 0
    )
    other = tmp / "other.h5"
    record_onnx(
        sample_videos.paths,
        CONFIG_PATH,
        None,
        other,
        secondary=[sgie_config(tmp, seed=1, name="s1.txt")],
        batch=2,
        max_frames=4,
        images=False,
        progress=False,
    )
    rep = compare(other, out)
    drift = next(ld for ld in rep.layers if ld.per_object)
    assert (
        drift.compared == probs.compared
        and drift.max_abs > 0.01
        and rep.objects[0].paired == probs.compared
    )
    frame_layer = next(ld for ld in rep.layers if not ld.per_object)
    assert frame_layer.max_abs == 0  # the PGIE is identical; only the classifier changed
    assert "objects paired by rect" in rep.text()


def test_selection_rules_by_hand():
    cfg = parse_nvinfer_config(
        "[property]\nprocess-mode=2\noperate-on-gie-id=1\noperate-on-class-ids=0;2\n"
        "input-object-min-width=30\ninput-object-max-height=100\n"
    )

    def obj(w=50.0, h=50.0, cls=0, uid=1):
        return ObjectRecord(rect=(10.0, 10.0, w, h), class_id=cls, unique_component_id=uid)

    assert should_infer(obj(), cfg)
    assert not should_infer(obj(uid=3), cfg)  # another GIE's object
    assert not should_infer(obj(cls=1), cfg)  # class not in operate-on-class-ids
    assert not should_infer(obj(w=29.5), cfg)  # narrower than input-object-min-width
    assert not should_infer(obj(h=100.5), cfg)  # taller than input-object-max-height
    assert should_infer(obj(h=100.0), cfg)
    loose = parse_nvinfer_config("[property]\nprocess-mode=2\n")
    assert min_object_floor(6.2) == 16 and min_object_floor(9.1) == 1
    assert not should_infer(
        obj(w=10), loose, deepstream_version=7.1
    )  # below nvinfer's 16 px floor before 9.0
    assert should_infer(obj(w=10), loose, deepstream_version=9.1)
    assert select_objects([obj(), obj(cls=1), obj(cls=2)], cfg) == [0, 2]


def test_cli_sgie_and_bad_process_mode(tmp_path, sample_videos):
    cfg = sgie_config(tmp_path)
    out = tmp_path / "cli.h5"
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "dsprobe",
            "record-onnx",
            "--config",
            str(CONFIG_PATH),
            "--video",
            str(sample_videos.paths[0]),
            "--max-frames",
            "2",
            "--no-images",
            "--sgie-config",
            str(cfg),
            "--object-images",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    r = open_recording(out)
    assert "SGIE objects" in res.stdout and r.unique_ids == [1, 2]
    assert not r.frames[
        "has_image"
    ].any()  # --no-images: no frame pictures, but the object crops are kept
    sgie = r[int(r.frames.index[(r.frames["unique_id"] == 2)][0])]
    assert sgie.objects and all(o.image is not None for o in sgie.objects)
    primary = tmp_path / "primary_as_sgie.txt"
    primary.write_text(cfg.read_text().replace("process-mode=2", "process-mode=1"))
    with pytest.raises(
        ValueError,
        match="primary_as_sgie.txt: process-mode=1; a secondary GIE needs process-mode=2",
    ):
        record_onnx(
            sample_videos.paths,
            CONFIG_PATH,
            None,
            tmp_path / "x.h5",
            secondary=[primary],
            progress=False,
        )
