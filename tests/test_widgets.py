"""Widgets driven programmatically (no browser): setting a control changes the drawn boxes and counts
exactly as the postprocess says."""

from __future__ import annotations

import re
import sys
from typing import Annotated, Literal

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")

from dsprobe import Postprocess, Range, open_recording  # noqa: E402
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


# ---------------------------------------------------------------------------------------------- user steps
def my_yolo(
    layers,
    ctx,
    *,
    score_threshold: Annotated[float, Range(0.0, 1.0)] = 0.001,
    only_first_class: bool = False,
    box: Literal["cxcywh", "xyxy"] = "cxcywh",
):
    """The user's decoder: the built-in YOLOv8 decoder behind a user function."""
    from dsprobe.postprocess.registry import get_step

    d = get_step("decode", "yolov8")(layers, ctx, score_threshold=score_threshold, box_format=box)
    return d[d.class_ids == 0] if only_first_class else d


def picky_filter(dets, ctx, *, explode: bool = False):
    if explode:
        raise RuntimeError("picky filter gave up")
    return dets


def test_tuner_with_user_decoder_and_filter(live_recording):
    base = Postprocess.from_nvinfer_config(live_recording.config(), decoder=my_yolo)
    steps = [s.to_dict() for s in base.steps]
    steps[0]["name"] = my_yolo
    steps.insert(1, {"kind": "filter", "name": picky_filter})
    pp = Postprocess(
        steps, labels=base.labels, num_classes=base.num_classes, geometry=base.geometry
    )
    t = Tuner(live_recording, pp)
    busy_frame(t)
    name = pp.steps[0].name
    assert t.decoder.value == name and ("my_yolo (yours)", name) in t.decoder.options
    ctl = t.param_controls
    assert set(ctl) == {"score_threshold", "only_first_class", "box", "explode"}
    assert type(ctl["score_threshold"]).__name__ == "FloatSlider"
    assert (ctl["score_threshold"].min, ctl["score_threshold"].max) == (0.0, 1.0)
    assert type(ctl["only_first_class"]).__name__ == "Checkbox"
    assert ctl["box"].options == ("cxcywh", "xyxy")
    ctl["only_first_class"].value = True  # a decoder param: decoded again, boxes as the spec says
    expected = pp.set_params({"only_first_class": True})
    assert t.postprocess.to_dict() == expected.to_dict()
    assert t.detections.same_objects(expected(t.frame_view)) and set(t.detections.class_ids) <= {0}
    assert t.counts.to_numpy().sum() == len(expected.run_recording(live_recording))
    ctl["explode"].value = True  # the user's filter raises: one line in the panel naming it
    assert (
        "picky_filter" in t.status.value and "RuntimeError: picky filter gave up" in t.status.value
    )
    assert "\n" not in t.status.value
    ctl["explode"].value = False
    t.decoder.value = "yolov8"  # the built-in, then the user's function again
    assert t.postprocess.steps[0].name == "yolov8" and not {"score_threshold"} & set(
        t.param_controls
    )
    t.decoder.value = name
    assert t.postprocess.steps[0].name == name and "score_threshold" in t.param_controls
