"""Widgets driven programmatically (no browser): setting a control changes the drawn boxes and counts
exactly as the postprocess says."""

from __future__ import annotations

import io
import re
import sys
from typing import Annotated, Literal

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("matplotlib")

from dsprobe import Postprocess, Range, open_recording  # noqa: E402
from dsprobe.notebook import ALL_CLASSES, Explorer, Tuner, search_panel  # noqa: E402


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
    return Tuner(live_recording, background=False)


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
    assert tuner.image.value[:2] == b"\xff\xd8" and tuner.timeline.image.value[:4] == b"\x89PNG"
    # drawn at the recorded image's resolution, not stretched to a figure size
    from PIL import Image

    shown = Image.open(io.BytesIO(tuner.image.value)).size
    assert shown == (frame.image.shape[1], frame.image.shape[0])


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
    # "all classes" shows the value most classes share and names the class that differs
    assert tuner.threshold.value == pytest.approx(0.25)
    assert f"{tuner.labels[c]} 1" in tuner.per_class_note.value


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
    tuner.frame.value = tuner.frame.options[5][1]
    fnum0 = tuner.frame_view.frame_num
    tuner.stream.value = 1  # keeps the frame number
    assert live_recording[tuner.row].source_id == 1
    assert tuner.frame_view.frame_num == fnum0
    tuner.player.step(1)
    assert tuner.frame_view.frame_num == fnum0 + 1 and tuner.player.play.value == 6
    tuner.player.step(-10)
    assert tuner.frame.value == tuner.frame.options[0][1]
    tuner.player.play.value = 3  # what the play button does, one tick
    assert tuner.frame.value == tuner.frame.options[3][1]
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


@pytest.fixture(scope="module")
def sample_gt(sample_videos):
    from dsprobe.analysis.evaluate import load_ground_truth

    return load_ground_truth(sample_videos.gt_json, frame_size=(1280, 720))


def recorded_frames(rec):
    return list(zip(rec.frames["source_id"].astype(int), rec.frames["frame_num"].astype(int)))


def test_tuner_judges_the_frame_and_scores_the_recording(live_recording, sample_gt):
    from dsprobe.analysis.errors import frame_matches
    from dsprobe.analysis.evaluate import evaluate

    t = Tuner(live_recording, gt=sample_gt, background=False)
    busy_frame(t)
    v = t.frame_view
    m = frame_matches(t.detections, sample_gt.for_frame(v.source_id, v.frame_num))[:, 0]
    out = t.frame_outcome
    assert out.tp == int((m >= 0).sum()) and out.fp == int((m < 0).sum())
    assert out.colors.count("#2ecc40") == out.tp and len(out.missed) == out.fn
    assert f"TP {out.tp}" in t.frame_metrics.value and f"FP {out.fp}" in t.frame_metrics.value
    frames = recorded_frames(live_recording)
    for thr in (0.25, 0.55):  # the first scores fresh, the second by masking the cached table
        t.class_select.value = ALL_CLASSES
        t.threshold.value = thr
        r = evaluate(t.postprocess.run_recording(live_recording), sample_gt, frames)
        assert t.score.scores["map50"] == pytest.approx(r.map50, abs=1e-12)
        assert t.score.scores["map50_95"] == pytest.approx(r.map50_95, abs=1e-12)
        assert f"mAP@0.5 <b>{r.map50:.3f}</b>" in t.metrics_text.value
    # A/B keeps the ground truth and shows metric deltas
    t.set_b.click()
    t.threshold.value = 0.3
    assert t.score_b is not None and "vs B" in t.metrics_text.value
    d = t.score.scores["f1"] - t.score_b.scores["f1"]
    assert f"({d:+.3f} vs B)" in t.metrics_text.value
    assert t.canvas(2).full_draws >= 1 and "vs B" in t.frame_metrics.value


def test_whole_recording_results_come_from_the_background(live_recording, sample_gt):
    t = Tuner(live_recording, gt=sample_gt)  # background worker
    t.wait()
    t.iou.value = 0.3
    assert "dsprobe-metrics-busy" in t.metrics_text.value or "&#8987;" in t.metrics_text.value
    t.wait()
    assert "dsprobe-metrics" in t.metrics_text.value and "&#8987;" not in t.metrics_text.value
    assert t.postprocess.step("cluster").params["iou_threshold"] == 0.3
    assert not t.worker.errors


def test_timeline_click_jumps_and_zooms(tuner):
    tl = tuner.timeline
    assert tl.renders >= 1 and set(tl.series) == {"detections"}
    lo, hi = tl.shown()
    fn = tl.click(0.045 + 0.945 * 0.5)  # the middle of the axes
    assert abs(fn - (lo + hi) / 2) <= 1
    assert tuner.frame_view.frame_num == fn
    tl.zoom(0.5)
    assert tl.window is not None and tl.window[1] - tl.window[0] < hi - lo
    assert lo <= tl.frame_at(0.5) <= hi
    tl._on_event({"type": "wheel", "deltaY": 1, "relativeX": 450, "boundingRectWidth": 900})
    tl.reset_zoom()
    assert tl.window is None


def test_nothing_is_saved_until_the_button_is_clicked(tuner, tmp_path):
    path = tmp_path / "sub" / "spec.json"
    tuner.saver.path.value = str(path)
    tuner.threshold.value = 0.4
    assert not path.exists()
    tuner.saver.button.click()
    assert path.exists() and f"saved {path}" in tuner.saver.message.value
    assert Postprocess.load(path).to_dict() == tuner.postprocess.to_dict()


def test_tuner_reuses_a_decoded_recording(live_recording):
    pp = Postprocess.from_nvinfer_config(live_recording.config())
    decoded = pp.decode_recording(live_recording)
    t = Tuner(live_recording, decoded=decoded, background=False)
    assert t.decoded is decoded and t.postprocess is pp
    assert t.detections.equals(pp(live_recording[t.row]))


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
    t.wait()  # the whole-recording counts are computed in the background
    assert t.counts.to_numpy().sum() == len(expected.run_recording(live_recording))
    ctl["explode"].value = True  # the user's filter raises: one line in the panel naming it
    t.wait()
    assert (
        "picky_filter" in t.status.value and "RuntimeError: picky filter gave up" in t.status.value
    )
    assert "\n" not in t.status.value
    ctl["explode"].value = False
    t.wait()
    t.decoder.value = "yolov8"  # the built-in, then the user's function again
    assert t.postprocess.steps[0].name == "yolov8" and not {"score_threshold"} & set(
        t.param_controls
    )
    t.decoder.value = name
    assert t.postprocess.steps[0].name == name and "score_threshold" in t.param_controls


def test_export_button_writes_a_bundle_of_the_users_functions(live_recording, tmp_path):
    pp = Postprocess.from_nvinfer_config(live_recording.config(), decoder=my_yolo)
    t = Tuner(live_recording, pp.set_params({"only_first_class": True}), show_counts=False)
    t.saver.path.value = str(tmp_path / "tuned.json")
    t.saver.export_button.click()
    assert f"exported {tmp_path / 'tuned'}/" in t.saver.message.value
    back = Postprocess.load(tmp_path / "tuned", trust=True)
    assert back.get_param("only_first_class") is True
    assert back(t.frame_view).same_objects(t.postprocess(t.frame_view))
    t.saver.path.value = str(tmp_path / "closure.json")  # what cannot be captured: said, not raised
    limit = 0.5
    t.set_postprocess(
        pp.with_step("decode", lambda layers, ctx: my_yolo(layers, ctx, score_threshold=limit))
    )
    t.saver.export_button.click()
    assert "not exported" in t.saver.message.value and "is a lambda" in t.saver.message.value


def top_per_class(dets, ctx, *, keep: Annotated[int, Range(1, 20)] = 3):
    """The user's cluster step: the ``keep`` best boxes of each class."""
    order = np.lexsort((-dets.scores, dets.class_ids))
    d = dets[order]
    rank = np.arange(len(d)) - np.searchsorted(d.class_ids, d.class_ids)
    return d[rank < keep]


def grow(dets, ctx, *, margin: float = 0.0):
    """The user's scale step: nvinfer's mapping, then each box grown by ``margin`` frame px."""
    from dsprobe import Detections
    from dsprobe.postprocess.registry import get_step

    d = get_step("scale", "nvinfer")(dets, ctx)
    m = np.float32([-margin, -margin, margin, margin])
    return Detections(d.boxes + m, d.scores, d.class_ids, "frame")


def test_tuner_with_user_cluster_and_scale_steps(live_recording):
    base = Postprocess.from_nvinfer_config(live_recording.config())
    steps = [s.to_dict() for s in base.steps[:2]]
    steps += [{"kind": "cluster", "name": top_per_class}, {"kind": "scale", "name": grow}]
    pp = Postprocess(
        steps, labels=base.labels, num_classes=base.num_classes, geometry=base.geometry
    )
    t = Tuner(live_recording, pp)
    busy_frame(t)
    assert t.cluster.value == pp.steps[2].name
    assert ("top_per_class (yours)", pp.steps[2].name) in t.cluster.options
    assert set(t.param_controls) == {"keep", "margin"}
    assert type(t.param_controls["keep"]).__name__ == "IntSlider"
    t.param_controls["keep"].value = 1
    t.param_controls["margin"].value = 4.0
    expected = pp.set_params({"keep": 1, "margin": 4.0})
    assert t.postprocess.to_dict() == expected.to_dict()
    assert t.detections.same_objects(expected(t.frame_view))
    assert len(t.detections) <= len(base.labels)
