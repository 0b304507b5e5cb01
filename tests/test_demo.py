"""A short run of the demo (every step, 1 s streams) and of the sample-recording maker."""

from __future__ import annotations

import json

import pytest

from dsprobe import open_recording
from dsprobe.cli.demo import SAMPLE_RECORDING, Demo, main, make_sample

pytest.importorskip("onnxruntime")
pytest.importorskip("pycocotools")
pytest.importorskip("matplotlib")


def test_short_demo_writes_a_report(tmp_path):
    out = tmp_path / "demo"
    demo = Demo(
        out,
        seconds=1.0,
        search_grid={"pre_cluster_threshold": [0.1, 0.25, 0.5], "iou_threshold": [0.45, 0.7]},
    )
    assert [s.name for s in demo.steps()] == [
        "videos",
        "record",
        "replay",
        "tune",
        "export",
        "live",
        "secondary",
        "report",
    ]
    demo.run()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 30 and summary["live_equal_frames"] == summary["live_frames"] == 30
    # the exported setting is the best by F1 on a grid holding the config's own (0.25, 0.45)
    assert (
        0 < summary["f1_before"] <= summary["f1_after"] <= 1 and 0.5 < summary["map50_after"] <= 1
    )
    assert summary["map50_95_after"] <= summary["map50_after"]
    per_stream = summary["per_stream"]
    assert [s["source_id"] for s in per_stream] == [0, 1] and all(
        s["frames"] == 15 for s in per_stream
    )
    assert all(
        s["hits"] + s["false_positives"] == s["detections"]
        and s["hits"] + s["misses"] == s["gt_boxes"]
        for s in per_stream
    )
    report = (out / "report.md").read_text()
    assert (
        "mAP@0.5" in report
        and "Per stream" in report
        and "identical detections on 30 of 30 frames" in report
    )
    sgie = summary["secondary"]  # PGIE + SGIE: colour classifier and embedding, scored
    assert sgie["objects"] > 50 and sgie["matched"] > 0.8 * sgie["objects"]
    assert sgie["accuracy_at_best"] > 0.9 and 0 <= sgie["best_threshold"] < 1
    assert sgie["nan_rows"] == 0 and sgie["reid_top1"] > 0.9 and sgie["auc"] > 0.95
    assert sgie["same_median"] > sgie["different_median"]
    assert sgie["live_equal_frames"] == sgie["live_frames"] == 30  # 1 s streams: all frames
    assert "## Secondary model" in report and "Re-identification across frames" in report
    assert "secondary_cosine.png" in report and (out / "secondary_cosine.png").exists()
    overlays = sorted(out.glob("overlay_*.png"))
    assert len(overlays) == 4 and all(f"![{p.name}]({p.name})" in report for p in overlays)
    # the evaluation section: errors by TIDE type, best setting per objective, per-class thresholds
    assert "## Errors by type" in report and "| background |" in report
    assert (
        "## Best settings per objective" in report
        and "| f1_fp_budget(fp_per_frame=0.1) |" in report
    )
    assert "Per-class pre-cluster thresholds under F1" in report
    assert (out / "errors_by_type.png").stat().st_size
    assert (
        json.loads((out / "tuned.json").read_text())["format"]
        and (out / "tuned_nvinfer.txt").stat().st_size
    )


def test_make_sample(tmp_path, monkeypatch):
    path = make_sample(tmp_path / "sample.h5", seconds=1.0)
    gt = json.loads((tmp_path / "sample_gt.json").read_text())
    with open_recording(path) as r:
        assert len(r) == 30 and sorted(set(r.frames["source_id"])) == [0, 1]
        f = r[0]
        assert f.image.shape == (360, 640, 3) and f.image_record.encoding == "jpeg"
        assert len(f.detections) > 0  # the config's postprocess, stored as the pipeline's objects
        assert r.notes["recorded_by"].endswith("--make-sample")
    assert {im["frame_num"] for im in gt["images"]} == set(range(15))
    assert path.stat().st_size < 5e6
    monkeypatch.setattr("dsprobe.cli.demo.SAMPLE_RECORDING", tmp_path / "cli" / "sample.h5")
    assert main(["--make-sample", "--sample-seconds", "0.5"]) == 0
    assert (tmp_path / "cli" / "sample_gt.json").exists()


@pytest.mark.skipif(not SAMPLE_RECORDING.exists(), reason="no committed sample recording")
def test_committed_sample_recording():
    assert SAMPLE_RECORDING.stat().st_size <= 5 * 1024 * 1024
    gt = json.loads(SAMPLE_RECORDING.with_name("sample_gt.json").read_text())
    with open_recording(SAMPLE_RECORDING) as r:
        assert len(r) == 2 * round(15 * r.notes["seconds_per_stream"]) and r.closed_cleanly
        assert r.layers["output0"].shape == (8, 2100)
        assert r.config().onnx_file == "model.onnx" and r.frames["has_image"].all()
        frames = set(zip(r.frames["source_id"].astype(int), r.frames["frame_num"].astype(int)))
    assert frames == {(im["source_id"], im["frame_num"]) for im in gt["images"]}


@pytest.mark.skipif(not SAMPLE_RECORDING.exists(), reason="no committed sample recording")
def test_committed_sample_matches_the_current_sample_model_and_scenes(tmp_path):
    """Fails when the sample model, config or scenes changed after recordings/sample.h5 was made:
    regenerate it with ``python -m dsprobe.cli.demo --make-sample``."""
    import numpy as np

    from dsprobe.reference.recorder import record_onnx
    from dsprobe.sample import CONFIG_PATH, make_videos

    with open_recording(SAMPLE_RECORDING) as r:
        seconds = r.notes["seconds_per_stream"]
        v = make_videos(tmp_path / "v", seconds=seconds)
        record_onnx(
            v.paths,
            CONFIG_PATH,
            None,
            tmp_path / "now.h5",
            batch=2,
            max_frames=2,
            images=False,
            progress=False,
        )
        stale = "recordings/sample.h5 is stale: run python -m dsprobe.cli.demo --make-sample"
        assert r.config_text() == CONFIG_PATH.read_text(), stale
        with open_recording(tmp_path / "now.h5") as now:
            for i in range(len(now)):
                f = now[i]
                np.testing.assert_allclose(
                    r.find(f.source_id, f.frame_num).tensors["output0"],
                    f.tensors["output0"],
                    rtol=1e-4,
                    atol=1e-4,
                    err_msg=stale,
                )
    assert json.loads(v.gt_json.read_text()) == json.loads(
        SAMPLE_RECORDING.with_name("sample_gt.json").read_text()
    ), stale
