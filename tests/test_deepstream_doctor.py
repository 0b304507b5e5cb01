"""``dsprobe doctor`` on configs shaped like NVIDIA's samples, and nvinferserver (protobuf text)
configs loading wherever an nvinfer config does (Recorder, Postprocess, dsprobe inspect)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dsprobe import Postprocess, Recorder, load_nvinfer_config, open_recording
from dsprobe.cli import main
from dsprobe.cli.doctor import diagnose
from dsprobe.deepstream.checks import platform_findings
from dsprobe.nvinfer.config import NvinferConfigError
from dsprobe.records import FrameRecord

DATA = Path(__file__).parent / "data" / "deepstream"


def keys(path, **kw):
    return {(f.level, f.key) for f in diagnose([str(DATA / path)], platform=False, **kw)}


def test_doctor_flags_each_sample_config():
    assert keys("pgie_detector.txt") == {("warning", "output-tensor-meta")}
    assert ("error", "classifier-async-mode") in keys("sgie_classifier_async.txt")
    assert ("info", "input-object-min-width/height") in keys("sgie_classifier_async.txt")
    assert ("warning", "operate-on-gie-id") in keys("sgie_classifier_async.txt")  # no PGIE given
    assert keys("pgie_host_copy_off.txt") == {("error", "disable-output-host-copy")}
    assert keys("pgie_preprocess.txt") == {("error", "input-tensor-from-meta")}
    assert keys("ssd_nopostprocess.txt") == set()
    assert keys("triton_detector.txt", live=True) == {("info", "network-type")}


def test_doctor_cross_checks_gies_and_exit_status(capsys):
    found = diagnose(
        [str(DATA / "pgie_detector.txt"), str(DATA / "sgie_classifier_async.txt")], platform=False
    )
    assert not any(f.key == "operate-on-gie-id" for f in found)  # the SGIE names the PGIE's id 1
    dup = diagnose(
        [str(DATA / "pgie_detector.txt"), str(DATA / "pgie_preprocess.txt")], platform=False
    )
    assert any(f.key == "gie-unique-id" and f.level == "error" for f in dup)
    assert main(["doctor", "--no-platform", str(DATA / "ssd_nopostprocess.txt")]) == 0
    capsys.readouterr()
    assert main(["doctor", "--no-platform", "--json", str(DATA / "sgie_classifier_async.txt")]) == 1
    out = json.loads(capsys.readouterr().out)
    assert {f["key"] for f in out} >= {"classifier-async-mode", "output-tensor-meta"}


def test_doctor_json_names_the_fix(capsys):
    assert main(["doctor", "--no-platform", "--json", str(DATA / "pgie_host_copy_off.txt")]) == 1
    (f,) = json.loads(capsys.readouterr().out)
    assert f["key"] == "disable-output-host-copy" and f["fix"] == "set disable-output-host-copy=0"


def test_doctor_unreadable_config_is_an_error_naming_it(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("infer_config {\n  unique_id: 3\n")
    (f,) = diagnose([str(bad)], platform=False)
    assert f.level == "error" and str(bad) in f.source and "never closed" in f.problem


def test_platform_findings_numpy2_with_pyds_12():
    (f,) = platform_findings("1.2.0", "2.1.0")
    assert f.level == "error" and "numpy<2" in f.fix
    assert platform_findings("1.2.0", "1.26.4") == []
    assert platform_findings(None, "1.26.4")[0].key == "pyds"


def test_nvinferserver_config_fields():
    cfg = load_nvinfer_config(DATA / "triton_detector.txt")
    pre = cfg.preprocessing
    assert cfg.gie_unique_id == 1 and cfg.network_type == 0 and cfg.num_detected_classes == 4
    assert cfg.output_tensor_meta and cfg.interval == 2 and cfg.cluster_mode == 2
    assert (pre.model_color_format, pre.network_input_order) == (1, 0)
    assert pre.maintain_aspect_ratio and pre.symmetric_padding
    assert pre.net_scale_factor == pytest.approx(1 / 255)
    assert cfg.class_attrs_all.pre_cluster_threshold == 0.25
    assert cfg.class_attrs_all.nms_iou_threshold == 0.45 and cfg.class_attrs_all.topk == 100
    assert (
        cfg.attrs_for(2).pre_cluster_threshold == 0.6
        and cfg.attrs_for(1).pre_cluster_threshold == 0.25
    )
    ssd = load_nvinfer_config(DATA / "ssd_nopostprocess.txt")
    assert ssd.gie_unique_id == 5 and ssd.network_type == 100 and ssd.batch_size == 4
    assert ssd.preprocessing.network_size == (300, 300)  # dims [300, 300, 3]: HWC
    assert ssd.preprocessing.network_channels == 3
    assert ssd.labelfile_path.endswith("labels.txt")


def test_nvinferserver_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text('infer_config {\n  unique_id: 3\n  preprocess { network_format: "x }\n}\n')
    with pytest.raises(NvinferConfigError, match=r"bad\.txt:3"):
        load_nvinfer_config(bad)


def test_nvinferserver_config_in_recorder_postprocess_and_inspect(tmp_path, capsys):
    cfg_path = DATA / "triton_detector.txt"
    rec = Recorder(tmp_path / "t.h5", nvinfer_config=str(cfg_path), images=False)
    rec.record(FrameRecord(0, 0, unique_id=1, layers={"out": np.zeros((6, 10), np.float32)}))
    rec.close()
    r = open_recording(tmp_path / "t.h5")
    assert r.config(1).cluster_mode == 2 and r.config(1).text.startswith("# nvinferserver")
    pp = Postprocess.from_nvinfer_config(load_nvinfer_config(cfg_path))
    steps = {s.kind + ":" + s.name: s.params for s in pp.steps}
    assert steps["filter:threshold"]["pre_cluster_threshold"] == [0.4, 0.25, 0.6, 0.25]
    assert steps["cluster:nms"]["iou_threshold"] == 0.45 and steps["cluster:nms"]["topk"] == 100
    assert steps["scale:nvinfer"]["symmetric_padding"] is True
    assert main(["inspect", str(tmp_path / "t.h5")]) == 0
    assert "t.h5" in capsys.readouterr().out


def test_nvinferserver_tensor_meta_is_recorded(tmp_path):
    """nvinferserver attaches the same NvDsInferTensorMeta (unique_id = infer_config.unique_id); the
    probe finds its config through the element's config-file-path."""
    import pyds_double as pyds

    from dsprobe.deepstream import attach_recorder

    with pyds.installed():
        pipe = pyds.Pipeline(
            (1280, 720),
            gie_factory="nvinferserver",
            gie_properties={
                "config-file-path": str(DATA / "ssd_nopostprocess.txt"),
                "unique-id": 5,
            },
        )
        gie = pyds.GieOutput(5, {"num_detections": (0, (1,)), "detection_boxes": (0, (100, 4))})
        rec = Recorder(tmp_path / "triton.h5", images=False)
        handle = attach_recorder(pipe.pad, rec)
        fm = pipe.frame(0, 0, 0, (1920, 1080))
        boxes = np.random.default_rng(0).random((100, 4)).astype(np.float32)
        fm._user.append(
            pipe.tensor_meta(gie, {"num_detections": np.float32([3]), "detection_boxes": boxes})
        )
        pipe.push([fm])
        rec.close()
    f = open_recording(tmp_path / "triton.h5")[0]
    assert f.unique_id == 5 and f.frame_size == (1280, 720) and handle.stats["warnings"] == []
    np.testing.assert_array_equal(f.tensors["detection_boxes"], boxes)


def test_doctor_reports_the_platform_it_ran_on():
    found = diagnose([str(DATA / "ssd_nopostprocess.txt")])
    (plat,) = [f for f in found if f.key == "platform"]
    assert "numpy" in plat.problem and plat.level == "info"
    assert any(f.key == "pyds" for f in found)  # no pyds on this machine


def test_inspect_counts_the_classifications(tmp_path, capsys):
    from dsprobe.cli.inspect import summarize
    from dsprobe.records import Classification, ObjectRecord

    rec = Recorder(tmp_path / "c.h5", images=False)
    objs = [
        ObjectRecord((0, 0, 10, 10), classifications=[Classification(2, 0, 1, 0.9, "red")]),
        ObjectRecord((5, 5, 10, 10)),
    ]
    rec.record(
        FrameRecord(0, 0, unique_id=1, layers={"x": np.zeros(2, np.float32)}, detections=objs)
    )
    rec.close()
    assert summarize(str(tmp_path / "c.h5"))["classifications"] == 1
    assert main(["inspect", str(tmp_path / "c.h5")]) == 0
    assert "1 classifications" in capsys.readouterr().out
    f = open_recording(tmp_path / "c.h5")[0]
    assert f.detection_objects[0].classifications == [
        Classification(2, 0, 1, np.float32(0.9), "red")
    ]
    assert f.detection_objects[1].classifications == []
