"""Widgets driven programmatically (no browser): setting a control changes the drawn boxes and counts
exactly as the postprocess says."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")

from dsprobe import Postprocess, open_recording  # noqa: E402
from dsprobe.notebook.tuner import ALL_CLASSES, Explorer, Tuner, search_panel  # noqa: E402


@pytest.fixture(scope="module")
def live_recording(sample_videos, tmp_path_factory):
    """The sample streams recorded with a live postprocess, so frames carry the pipeline's own objects."""
    from dsprobe.nvinfer.config import load_nvinfer_config
    from dsprobe.reference.recorder import record_onnx
    from dsprobe.sample import CONFIG_PATH

    out = tmp_path_factory.mktemp("live") / "live.h5"
    pp = Postprocess.from_nvinfer_config(load_nvinfer_config(CONFIG_PATH))
    record_onnx(
        sample_videos.paths, CONFIG_PATH, None, out, batch=2, progress=False, postprocess=pp
    )
    rec = open_recording(out)
    yield rec
    rec.close()


@pytest.fixture
def tuner(live_recording):
    return Tuner(live_recording)


def shown_count(t) -> int:
    return int(re.search(r'class="dsprobe-count">(\d+)<', t.count_text.value).group(1))


def busy_frame(t: Tuner, min_boxes: int = 5) -> None:
    """Move to a frame with several boxes of more than one score."""
    for _, row in t.frame.options:
        d = t.postprocess(t.rec[row])
        if len(d) >= min_boxes and len(np.unique(d.scores)) > 2:
            t.frame.value = row
            return
    raise AssertionError("no busy frame in the sample")


def test_tuner_starts_with_the_config_postprocess(tuner, live_recording):
    expected = Postprocess.from_nvinfer_config(live_recording.config())
    assert tuner.postprocess.to_dict() == expected.to_dict()
    assert tuner.threshold.value == pytest.approx(0.25) and tuner.iou.value == pytest.approx(0.45)
    assert (
        tuner.topk.value == 100 and tuner.cluster.value == "nms" and tuner.decoder.value == "yolov8"
    )
    frame = live_recording[tuner.row]
    assert tuner.detections.equals(expected(frame))
    assert tuner.num_patches == len(tuner.detections) == shown_count(tuner)
    assert tuner.image.value[:2] == b"\xff\xd8" and tuner.counts_image.value[:4] == b"\x89PNG"


def test_threshold_slider_changes_boxes_and_counts_as_the_postprocess_says(tuner, live_recording):
    busy_frame(tuner)
    before = len(tuner.detections)
    scores = np.sort(tuner.detections.scores)
    thr = round(
        float(scores[len(scores) // 2]) + 0.005, 2
    )  # between two scores: drops the lower half
    tuner.threshold.value = thr
    pp = Postprocess.from_nvinfer_config(live_recording.config()).set_params(
        {"pre_cluster_threshold": thr}
    )
    assert tuner.postprocess.to_dict() == pp.to_dict()
    expected = pp(live_recording[tuner.row])
    assert tuner.detections.equals(expected) and len(expected) < before
    assert tuner.num_patches == len(expected) == shown_count(tuner)
    # counts over the whole recording = a plain run of the same settings, frame by frame
    plain = pp.run_recording(live_recording).groupby(["frame_num", "source_id"]).size()
    counts = tuner.counts.stack()
    for (fn, stream), n in counts.items():
        assert n == plain.get((fn, int(stream.split()[-1])), 0)


def test_per_class_threshold_only_touches_that_class(tuner):
    busy_frame(tuner)
    classes = tuner.detections.class_ids
    c = int(np.bincount(classes).argmax())
    tuner.class_select.value = c
    tuner.threshold.value = 1.0
    assert tuner.postprocess.step("filter").params["pre_cluster_threshold"][c] == 1.0
    assert c not in tuner.detections.class_ids
    assert len(tuner.detections) == int((classes != c).sum())
    tuner.class_select.value = ALL_CLASSES
    assert tuner.threshold.value == pytest.approx(0.25 if c else 1.0)  # shows class 0's value


def test_iou_topk_size_and_cluster_controls(tuner, live_recording):
    busy_frame(tuner)
    frame = live_recording[tuner.row]
    tuner.iou.value = 0.95
    assert tuner.detections.equals(tuner.postprocess(frame))
    assert tuner.postprocess.step("cluster").params["iou_threshold"] == 0.95
    tuner.topk.value = 1
    assert np.bincount(tuner.detections.class_ids).max() == 1
    tuner.topk.value = 100
    widths = tuner.detections.widths
    tuner.min_w.value = int(np.median(widths)) + 1
    assert tuner.postprocess.steps[-1].name == "objects"
    assert (tuner.detections.widths >= tuner.min_w.value).all() and len(tuner.detections) < len(
        widths
    )
    assert tuner.num_patches == len(tuner.detections)
    tuner.min_w.value = 0
    tuner.cluster.value = "none"
    assert tuner.iou.disabled and tuner.postprocess.step("cluster").to_dict() == {
        "kind": "cluster",
        "name": "none",
        "params": {"topk": 100},
    }
    assert tuner.detections.equals(tuner.postprocess(frame))
    tuner.cluster.value = "nms"
    assert not tuner.iou.disabled


def test_incompatible_decoder_is_reported_and_reverted(tuner):
    before = tuner.postprocess.to_dict()
    tuner.decoder.value = "ssd"
    assert "does not fit" in tuner.status.value and tuner.decoder.value == "yolov8"
    assert tuner.postprocess.to_dict() == before


def test_ab_shows_both_settings_and_the_differing_boxes(tuner, live_recording):
    busy_frame(tuner)
    tuner.set_b.click()
    assert tuner.ab.value
    n_b = len(tuner.detections)
    scores = np.sort(tuner.detections.scores)
    tuner.threshold.value = round(float(scores[len(scores) // 2]) + 0.005, 2)
    frame = live_recording[tuner.row]
    assert tuner.detections_b is not None and len(tuner.detections_b) == n_b
    assert tuner.detections.equals(tuner.postprocess(frame))
    differ = n_b - len(tuner.detections)
    assert f"{differ} differ" in tuner.count_text.value
    assert re.search(rf'class="dsprobe-count-b">{n_b}<', tuner.count_text.value)
    assert tuner.num_patches == len(tuner.detections)
    assert len(tuner.counts_b.columns) == len(tuner.counts.columns)
    assert (tuner.counts_b.fillna(0).to_numpy() >= tuner.counts.fillna(0).to_numpy()).all()
    tuner.ab.value = False
    assert tuner.detections_b is None


def test_stream_and_frame_navigation(tuner, live_recording):
    tuner.stream.value = 1
    assert live_recording[tuner.row].source_id == 1
    fnum = int(tuner.frame.options[3][0])
    tuner.goto(1, fnum)
    assert (tuner.frame_view.source_id, tuner.frame_view.frame_num) == (1, fnum)
    assert tuner.detections.equals(tuner.postprocess(live_recording[tuner.row]))


def test_search_best_goes_into_the_tuner(tuner, sample_videos, live_recording):
    from dsprobe.analysis.evaluate import load_ground_truth
    from dsprobe.analysis.search import search

    gt = load_ground_truth(sample_videos.gt_json, frame_size=(1280, 720))
    res = search(
        tuner.decoded, gt, {"pre_cluster_threshold": [0.3, 0.6], "iou_threshold": [0.35, 0.7]}
    )
    panel = search_panel(res, tuner)
    button = panel.children[-1]
    button.click()
    assert tuner.postprocess.to_dict() == res.best.to_dict()
    assert tuner.threshold.value == pytest.approx(res.best_params["pre_cluster_threshold"])
    assert tuner.iou.value == pytest.approx(res.best_params["iou_threshold"])
    assert tuner.detections.equals(res.best(live_recording[tuner.row]))


def test_explorer_shows_the_recorded_detections(live_recording):
    e = Explorer(live_recording)
    busy = int(np.argmax(live_recording.frames["num_detections"].to_numpy()))
    e.goto(live_recording[busy].source_id, live_recording[busy].frame_num)
    assert e.row == busy
    assert e.detections.equals(live_recording[busy].detections)
    assert e.num_patches == len(e.detections) == shown_count(e) > 0
    name, info = next(iter(live_recording.layers.items()))
    assert f"{name} {info.dtype}{list(info.shape)}" in e.info.value


def test_widgets_need_ipywidgets(monkeypatch, live_recording):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    with pytest.raises(ImportError, match=r"pip install 'dsprobe\[notebook\]'"):
        Explorer(live_recording)
