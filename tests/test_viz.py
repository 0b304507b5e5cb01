"""Drawing: boxes land on the frame-pixel axes over the recorded image, A/B highlights, tables behind
the plots, galleries, lazy imports."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from dsprobe.analysis.errors import error_table
from dsprobe.analysis.evaluate import ground_truth_from_detections
from dsprobe.detections import Detections

matplotlib = pytest.importorskip("matplotlib")

from dsprobe import notebook as viz  # noqa: E402


def fake_frame(
    image_rect=(0.0, 0.0, 1280.0, 720.0),
    with_image: bool = True,
    source_id: int = 0,
    frame_num: int = 3,
):
    img = np.zeros((360, 640, 3), np.uint8)
    img[90:180, 160:320] = (
        255,
        0,
        0,
    )  # a red block at frame px x 320..640, y 180..360 (2x downscaled)
    return SimpleNamespace(
        image=img if with_image else None,
        image_rect=image_rect if with_image else None,
        frame_size=(1280, 720),
        source_id=source_id,
        frame_num=frame_num,
        detections=Detections([[320, 180, 640, 360]], [0.9], [1], "frame"),
    )


def test_plot_frame_draws_boxes_in_frame_pixels_over_the_image():
    f = fake_frame()
    dets = Detections(
        [[10, 20, 110, 220], [500, 300, 700, 400]],
        [0.8, 0.5],
        [0, 2],
        "frame",
        keypoints=np.array([[[50, 60, 1.0], [0, 0, 0.0]], [[600, 350, 0.9], [610, 360, 0.9]]]),
    )
    fig = viz.plot_frame(f, dets, ["a", "b", "c"])
    ax = fig.axes[0]
    patches = fig.dsprobe_patches
    assert len(patches) == 2 and ax.patches[:] == patches
    assert (
        patches[0].get_xy() == (10, 20)
        and patches[0].get_width() == 100
        and patches[0].get_height() == 200
    )
    assert ax.get_xlim() == (0, 1280) and ax.get_ylim() == (720, 0)  # frame px, y down
    assert ax.images[0].get_extent() == [
        0.0,
        1280.0,
        720.0,
        0.0,
    ]  # 640x360 image stretched over the frame
    texts = [t.get_text() for t in ax.texts]
    assert "a 0.80" in texts and "c 0.50" in texts
    assert sum(len(c.get_offsets()) for c in ax.collections) == 3  # visible keypoints only
    png = viz.figure_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert viz.figure_jpeg(fig)[:2] == b"\xff\xd8"


def test_plot_frame_defaults_to_recorded_detections_and_handles_missing_image():
    f = fake_frame(with_image=False)
    fig = viz.plot_frame(f)
    assert len(fig.dsprobe_patches) == 1
    assert not fig.axes[0].images and "no image recorded" in [
        t.get_text() for t in fig.axes[0].texts
    ]


def test_image_covering_part_of_the_frame_is_placed_on_its_rect():
    f = fake_frame(image_rect=(100.0, 50.0, 320.0, 180.0))
    fig = viz.plot_frame(f, Detections.empty("frame"))
    assert fig.axes[0].images[0].get_extent() == [100.0, 420.0, 230.0, 50.0]


def test_ab_highlights_boxes_on_one_side_only():
    f = fake_frame()
    a = Detections(
        [[0, 0, 100, 100], [200, 200, 300, 300], [400, 400, 500, 500]],
        [0.9, 0.8, 0.3],
        [0, 0, 1],
        "frame",
    )
    b = Detections(
        [[0, 0, 100, 100], [205, 200, 305, 300], [400, 400, 500, 500]],
        [0.9, 0.8, 0.3],
        [0, 0, 0],
        "frame",
    )
    only_a, only_b = viz.ab_difference(a, b)
    # box 1 moved by 5 px (IoU 0.9 -> different at the default 0.9? 95*100/(105*100)=0.905: same); box 2 changed class
    assert only_a.tolist() == [False, False, True] and only_b.tolist() == [False, False, True]
    assert viz.ab_difference(a, b, iou_threshold=0.95)[0].tolist() == [False, True, True]
    fig = viz.plot_ab(f, a, b, ["x", "y"])
    pa, pb = fig.dsprobe_patches
    assert len(pa) == 3 and len(pb) == 3
    yellow = matplotlib.colors.to_rgba(viz.HIGHLIGHT)
    assert [p.get_edgecolor() == yellow for p in pa].count(True) == 1
    assert fig.dsprobe_titles[0] == "A: 3 boxes, 1 only here"


def test_counts_by_stream_and_frame_gaps():
    frames = pd.DataFrame(
        {
            "source_id": [0, 0, 0, 1, 1, 0],
            "unique_id": 1,
            "frame_num": [0, 1, 2, 0, 4, 5],
            "pts_ns": [0, 40, 80, 0, 160, 200],
        }
    )
    counts = pd.Series([1, 2, 3, 4, 5, 6], index=frames.index)
    t = viz.counts_by_stream(frames, counts)
    assert (
        t.loc[2, "source 0"] == 3 and t.loc[4, "source 1"] == 5 and np.isnan(t.loc[1, "source 1"])
    )
    gaps = viz.frame_gaps(frames)
    assert gaps[["source_id", "after_frame", "missing"]].values.tolist() == [[0, 2, 2], [1, 0, 3]]
    assert gaps["pts_gap_s"].tolist() == pytest.approx([120e-9, 160e-9])
    fig = viz.plot_counts(t, current=2, other=t * 0)
    assert len(fig.axes[0].lines) == 5  # two streams, two dashed B lines, the current-frame marker
    assert len(viz.plot_frame_gaps(frames).axes[0].lines) == 2


def test_score_hist_pr_curves_and_heatmap():
    df = pd.DataFrame({"score": [0.1, 0.5, 0.9, 0.95], "class_id": [0, 0, 1, 1]})
    fig = viz.plot_score_distributions(df, ["a", "b"])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["a (2)", "b (2)"]
    fig = viz.plot_pr_curves({"a": (np.array([0, 0.5, 1]), np.array([1, 1, 0.5]))}, ap={"a": 0.8})
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "a (AP 0.800)"
    table = pd.DataFrame(
        [[0.1, 0.2], [0.3, 0.4]],
        index=pd.Index([0.1, 0.5], name="pre_cluster_threshold"),
        columns=pd.Index([0.3, 0.6], name="iou_threshold"),
    )
    fig = viz.plot_heatmap(table, best=(0.5, 0.6))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["0.100", "0.200", "0.300", "0.400"]
    outline = ax.patches[0]
    assert outline.get_xy() == (0.5, 0.5)  # column 1, row 1


def test_error_crops_gallery():
    frames = {(0, 3): fake_frame()}
    rec = SimpleNamespace(find=lambda s, f: frames[(s, f)])
    gt = ground_truth_from_detections(
        pd.DataFrame(
            {
                "source_id": [0, 0],
                "frame_num": [3, 3],
                "x1": [320, 900],
                "y1": [180, 100],
                "x2": [640, 1000],
                "y2": [360, 200],
                "class_id": [1, 0],
                "score": [1.0, 1.0],
            }
        ),
        ["a", "b"],
        [(0, 3)],
    )
    dets = pd.DataFrame(
        {
            "source_id": [0, 0],
            "frame_num": [3, 3],
            "x1": [322, 10],
            "y1": [180, 10],
            "x2": [640, 60],
            "y2": [360, 60],
            "score": [0.9, 0.7],
            "class_id": [1, 1],
        }
    )
    err = error_table(dets, gt, [(0, 3)])
    assert err["kind"].tolist() == ["false_positive", "missed"]
    assert err.iloc[0][["x1", "class_id"]].tolist() == [10, 1] and err.iloc[1][
        ["x1", "class_id"]
    ].tolist() == [900, 0]
    items = viz.error_crops(rec, err, ["a", "b"])
    assert [c.split("\n")[0] for _, _, c in items] == ["FP 0.70 b", "missed a"]
    fig = viz.crop_gallery(items, cols=4)
    shown = [ax for ax in fig.axes if ax.images]
    assert len(shown) == 2
    assert shown[0].images[0].get_array().shape == (
        33,
        33,
        3,
    )  # frame px 10..60 -> image px 5..30, 4 px margin


def test_core_never_imports_matplotlib_or_ipywidgets():
    """Importing every module of the package (the notebook ones too: they import matplotlib and
    ipywidgets only when drawing) and using the top-level API pulls in no plotting or widget library."""
    code = (
        "import importlib, pkgutil, sys, dsprobe\n"
        "names = [m.name for m in pkgutil.walk_packages(dsprobe.__path__, 'dsprobe.')\n"
        "         if not m.name.endswith('__main__')]\n"
        "assert len(names) > 40, names\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "from dsprobe import Postprocess, open_recording\n"
        "bad = [m for m in ('matplotlib', 'ipywidgets', 'IPython') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_matplotlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(ImportError, match=r"pip install 'dsprobe\[notebook\]'"):
        viz.new_figure()


def test_frame_canvas_reuses_the_picture_and_matches_a_fresh_draw():
    f = fake_frame()
    a = Detections([[10, 20, 110, 220], [500, 300, 700, 400]], [0.8, 0.5], [0, 2], "frame")
    b = a[[0]]
    canvas = viz.FrameCanvas()
    first = canvas.draw(f, [viz.Panel(a, None, "two")], ["a", "b", "c"])
    assert len(first[0]) == 2 and canvas.full_draws == 1
    assert canvas.size == (f.image.shape[1], f.image.shape[0])  # the recorded resolution
    drawn = canvas.draw(f, [viz.Panel(b, np.array([True]), "one")], ["a", "b", "c"])
    assert canvas.full_draws == 1 and len(drawn[0]) == 1  # same frame: picture reused
    assert drawn[0][0].color == viz.HIGHLIGHT and drawn[0][0].width > first[0][0].width
    fresh = viz.FrameCanvas()
    fresh.draw(f, [viz.Panel(b, np.array([True]), "one")], ["a", "b", "c"])
    assert np.array_equal(canvas.rgb(), fresh.rgb())  # the first draw's boxes are gone
    # boxes are mapped from frame pixels onto the recorded image (image_rect)
    left, top, w, h = f.image_rect
    x1 = (10 - left) * f.image.shape[1] / w
    assert drawn[0][0].box[0] == pytest.approx(x1)
    ab = viz.FrameCanvas(2)
    two = ab.draw(f, [viz.Panel(a), viz.Panel(b, colors=["#ff4136"])], gt=b)
    assert ab.size[0] == 2 * f.image.shape[1] + 4 and two[1][0].color == "#ff4136"
    canvas.draw(fake_frame(frame_num=4), [viz.Panel(a, None, "next")])
    assert canvas.full_draws == 2
    assert canvas.jpeg()[:2] == b"\xff\xd8"


def test_error_analysis_views(sample_recording, sample_videos):
    pytest.importorskip("ipywidgets")
    from dsprobe import Postprocess, open_recording
    from dsprobe.analysis.errors import ERROR_TYPES, confusion_matrix, error_runs
    from dsprobe.analysis.evaluate import load_ground_truth
    from dsprobe.analysis.operating import SettingScorer
    from dsprobe.analysis.search import Reclusterer

    with open_recording(sample_recording) as rec:
        gt = load_ground_truth(sample_videos.gt_json, frame_size=rec[0].frame_size)
        pp = Postprocess.from_nvinfer_config(rec.config())
        decoded = pp.decode_recording(rec)
        rc = Reclusterer(decoded)
        det = rc.detections_frame(pp, pp.labels)
        frames = list(zip(rec.frames["source_id"].astype(int), rec.frames["frame_num"].astype(int)))
        errors = error_table(det, gt, frames)
        runs = error_runs(errors)
        assert len(runs) < len(errors)  # errors repeat over frames; runs do not
        fig = viz.plot_error_breakdown(errors, runs)
        assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == list(ERROR_TYPES)
        cm = confusion_matrix(det, gt, pp.labels, frames)
        assert len(viz.plot_confusion(cm).axes[0].texts) == cm.size
        low = pp.set_params({"pre_cluster_threshold": 0.05})
        m = SettingScorer(rc, gt, sorted(decoded.candidates)).matches(low)
        fig = viz.plot_operating_curves(m, 0.25, pp.labels)
        pr, f1 = fig.axes
        n = sum(1 for v in m.num_gt.values() if v)
        assert len(f1.lines) == 3 * n  # per class: curve, current-threshold line, dot
        assert all(x == 0.25 for line in f1.lines[1::3] for x in line.get_xdata())

        class Browser:
            calls: list = []

            def goto(self, s, f):
                self.calls.append((s, f))

        b = Browser()
        gallery = viz.ErrorGallery(rec, runs, pp.labels, browser=b, per_type=3)
        shown = [t for t in ERROR_TYPES if gallery.entries[t]]
        entry = gallery.entries[shown[0]][0]
        img, caption, button = entry.children
        assert img.value[:2] == b"\xff\xd8" and "source" in caption.value
        button.click()
        first = runs[runs["type"] == shown[0]].iloc[0]
        assert b.calls == [(int(first["source_id"]), int(first["frame_num"]))]
        assert all(len(v) <= 3 for v in gallery.entries.values())
