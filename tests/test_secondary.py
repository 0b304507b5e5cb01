"""The secondary sample (scene attributes and identities, the SGIE model and config), the SGIE
postprocess specs, and dsprobe.analysis.secondary (classifier threshold, embedding metrics)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dsprobe.analysis import secondary as sec
from dsprobe.analysis.evaluate import GroundTruth
from dsprobe.nvinfer.config import load_nvinfer_config
from dsprobe.postprocess.decoders import classify
from dsprobe.records import FrameRecord, ObjectRecord
from dsprobe.sample import (
    COLOR_FAMILIES,
    SECONDARY_CONFIG_PATH,
    SECONDARY_LABELS,
    SECONDARY_MODEL_PATH,
    scenes,
)

# ---------------------------------------------------------------- scenes


def test_color_family_of_saturated_white_and_black_colours():
    cases = {
        (255, 0, 0): "red",
        (255, 40, 10): "red",
        (250, 230, 20): "yellow",
        (0, 200, 30): "green",
        (20, 220, 230): "cyan",
        (10, 30, 240): "blue",
        (230, 20, 240): "magenta",
        (240, 235, 250): "white",
        (10, 25, 5): "black",
    }
    for rgb, name in cases.items():
        assert COLOR_FAMILIES[scenes.color_family(rgb)] == name, rgb


def test_every_generated_colour_has_an_unambiguous_family():
    rng = np.random.default_rng(0)
    fams = [scenes.color_family(scenes._random_color(rng)) for _ in range(2000)]
    assert set(fams) == set(range(len(COLOR_FAMILIES)))


def test_render_truth_keeps_identities_across_frames_and_agrees_with_render():
    scene = scenes.Scene(3, 320, 180, num_objects=5, background="procedural")
    seen = {}
    for _ in range(4):
        t = scene.render_truth()
        img, boxes, classes = scenes.render(scene.bg, scene.shapes)
        assert np.array_equal(img, t.image) and np.array_equal(boxes, t.boxes)
        assert np.array_equal(classes, t.classes)
        for k, c, col in zip(t.identities, t.classes, t.colors):
            s = scene.shapes[k]
            assert c == s.class_id and col == scenes.color_family(s.color)
            assert seen.setdefault(int(k), (int(c), int(col))) == (int(c), int(col))
        for _ in range(10):
            scene.step()


def test_sample_ground_truth_carries_track_id_and_colour(tmp_path):
    pytest.importorskip("av")
    from dsprobe.sample import make_videos

    v = make_videos(tmp_path, seconds=0.2)
    anns = json.loads(v.gt_json.read_text())["annotations"]
    assert anns and all(a["attributes"]["color"] in COLOR_FAMILIES for a in anns)
    assert all(isinstance(a["track_id"], int) and a["track_id"] >= 0 for a in anns)


# ---------------------------------------------------------------- the model and its config


def test_secondary_config_is_a_tensor_meta_sgie_on_the_detector():
    cfg = load_nvinfer_config(SECONDARY_CONFIG_PATH)
    assert cfg.process_mode == 2 and cfg.operate_on_gie_id == 1 and cfg.gie_unique_id == 2
    assert cfg.output_tensor_meta and cfg.network_type == 100 and not cfg.unknown_keys
    assert cfg.properties["classifier-async-mode"] == "0"
    assert (SECONDARY_CONFIG_PATH.parent / cfg.onnx_file) == SECONDARY_MODEL_PATH


def test_secondary_model_outputs_probabilities_and_unit_embeddings():
    ort = pytest.importorskip("onnxruntime")
    s = ort.InferenceSession(str(SECONDARY_MODEL_PATH), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((5, 3, 64, 64), np.float32)
    probs, emb = s.run(["color", "embedding"], {"input": x})
    assert probs.shape == (5, len(SECONDARY_LABELS)) and emb.shape == (5, 128)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)


# ---------------------------------------------------------------- postprocess specs


def _sgie_frame(rng):
    objs = []
    for k in range(3):
        p = rng.random(8).astype(np.float32)
        p /= p.sum()
        e = rng.normal(size=128).astype(np.float32)
        objs.append(
            ObjectRecord(
                rect=(10.0 + 50 * k, 20.0, 40.0, 30.0), layers={"color": p, "embedding": e * 3}
            )
        )
    return FrameRecord(
        0, 0, unique_id=2, network_size=(64, 64, 3), frame_size=(1280, 720), objects=objs
    )


def test_classifier_postprocess_is_nvinfers_rule_on_the_object_rect():
    from dsprobe import classifier_postprocess

    frame = _sgie_frame(np.random.default_rng(1))
    pp = classifier_postprocess(SECONDARY_CONFIG_PATH, ["color"], classifier_threshold=0.0)
    assert (
        pp.labels == [";".join(SECONDARY_LABELS)]
        and pp.steps[0].params["classifier_threshold"] == 0.0
    )
    d = pp(frame)
    assert list(d.object_ids) == [0, 1, 2]
    for k, obj in enumerate(frame.objects):
        (a,) = classify(obj.layers, layer_names=["color"])
        assert d.class_ids[k] == a.class_id and d.scores[k] == np.float32(a.confidence)
        x, y, w, h = obj.rect
        np.testing.assert_allclose(d.boxes[k], [x, y, x + w, y + h], atol=1)
    high = classifier_postprocess(SECONDARY_CONFIG_PATH, ["color"], classifier_threshold=0.99)
    assert len(high(frame)) == 0  # no probability above 0.99: nothing attached
    assert (
        classifier_postprocess(SECONDARY_CONFIG_PATH).steps[0].params["classifier_threshold"] == 0.5
    )


def test_embedding_postprocess_gives_one_unit_vector_per_object():
    from dsprobe import embedding_postprocess

    frame = _sgie_frame(np.random.default_rng(2))
    d = embedding_postprocess(SECONDARY_CONFIG_PATH, "embedding")(frame)
    assert d.vectors.shape == (3, 128)
    np.testing.assert_allclose(np.linalg.norm(d.vectors, axis=1), 1, atol=1e-6)
    e = frame.objects[1].layers["embedding"]
    np.testing.assert_allclose(d.vectors[1], e / np.linalg.norm(e), atol=1e-6)


# ---------------------------------------------------------------- classifier analysis


def test_classifier_predictions_follow_nvinfer_strict_threshold_and_first_tie():
    probs = np.array([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2], [0.0, 0.0, 0.0], [0.6, 0.3, 0.1]])
    pred, conf = sec.classifier_predictions(probs, 0.5)
    assert pred.tolist() == [sec.NO_LABEL, sec.NO_LABEL, sec.NO_LABEL, 0]  # 0.5 is not > 0.5
    pred0, _ = sec.classifier_predictions(probs, 0.0)
    assert pred0.tolist() == [1, 0, sec.NO_LABEL, 0]  # ties: first; all-zero: nothing
    for p, got in zip(probs, pred0):
        attrs = classify({"l": p})
        assert (attrs[0].class_id if attrs else sec.NO_LABEL) == got
    np.testing.assert_allclose(conf, [0.5, 0.4, 0.0, 0.6])


def test_scores_sweep_best_threshold_and_confusion():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.45, 0.55], [0.3, 0.7], [0.8, 0.2]])
    truth = np.array([0, 1, 1, 1, -1])  # last: no ground truth, left out
    s = sec.classifier_scores(probs, truth, 0.0)
    assert s["objects"] == 4 and s["accuracy"] == 0.75 and s["coverage"] == 1.0
    s = sec.classifier_scores(probs, truth, 0.65)  # attaches 0.9 (right) and 0.7 (right)
    assert s["accuracy"] == 0.5 and s["coverage"] == 0.5 and s["precision"] == 1.0
    sweep = sec.threshold_sweep(probs, truth, [0.0, 0.5, 0.65, 0.95])
    assert list(sweep["threshold"]) == [0.0, 0.5, 0.65, 0.95]
    assert sweep["f1"].tolist()[:2] == [0.75, 0.75]  # 0.6 is not > 0.5: same result as 0
    assert sec.best_threshold(sweep) == 0.5  # ties: the highest threshold
    tie = pd.DataFrame({"threshold": [0.1, 0.2, 0.3], "f1": [0.5, 0.8, 0.8]})
    assert sec.best_threshold(tie) == 0.3
    with pytest.raises(ValueError, match="no metric"):
        sec.best_threshold(sweep, "nope")
    pred, _ = sec.classifier_predictions(probs, 0.65)
    conf = sec.attribute_confusion(truth, pred, ["a", "b"])
    assert list(conf.columns) == ["a", "b", "(no label)"]
    assert conf.to_numpy().tolist() == [[1, 0, 0], [0, 1, 2]]


def test_match_ground_truth_carries_attribute_and_identity():
    gt_boxes = pd.DataFrame(
        {
            "image_id": [0, 0, 1],
            "source_id": [0, 0, 1],
            "frame_num": [0, 0, 0],
            "x1": [0.0, 100, 0],
            "y1": [0.0, 0, 0],
            "x2": [50.0, 150, 50],
            "y2": [50.0, 50, 50],
            "class_id": [0, 1, 2],
        }
    )
    anns = [
        {"track_id": 3, "attributes": {"color": "red"}},
        {"track_id": 4, "attributes": {"color": "blue"}},
        {"attributes": {"color": "pink"}},
    ]
    gt = GroundTruth({"annotations": anns}, gt_boxes, ["a", "b", "c"])
    objects = pd.DataFrame(
        {
            "source_id": [0, 0, 1, 0],
            "frame_num": [0, 0, 0, 5],
            "x1": [101.0, 2, 0, 0],
            "y1": [0.0, 0, 0, 0],
            "x2": [150.0, 50, 50, 50],
            "y2": [50.0, 52, 50, 50],
        }
    )
    m = sec.match_ground_truth(objects, gt, "color", SECONDARY_LABELS)
    assert m["gt_index"].tolist() == [1, 0, 2, -1]
    assert m["gt_attribute"].tolist() == [4, 0, -1, -1]  # "pink" is not a label
    assert m["gt_identity"].tolist() == [4, 3, -1, -1]  # no track_id: unknown
    assert m["gt_class"].tolist() == [1, 0, 2, -1]


# ---------------------------------------------------------------- embedding analysis


def _clusters(n_ids=6, per_id=5, dim=16, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, dim))
    ident = np.repeat(np.arange(n_ids), per_id)
    frame = np.tile(np.arange(per_id), n_ids)
    emb = centres[ident] + noise * rng.normal(size=(len(ident), dim))
    return emb.astype(np.float32), ident, frame


def test_embedding_health_finds_nan_zero_duplicates_and_collapse():
    emb, _, _ = _clusters()
    h = sec.embedding_health(sec.normalize_rows(emb))
    assert h["nan_rows"] == h["zero_rows"] == h["duplicates"] == 0 and h["unit_norm"] == 1.0
    bad = emb.copy()
    bad[0, 3] = np.nan
    bad[1] = 0
    bad[2] = bad[3]
    h = sec.embedding_health(bad)
    assert (h["nan_rows"], h["zero_rows"], h["duplicates"], h["inf_rows"]) == (1, 1, 1, 0)
    collapsed = np.ones((10, 8)) + 1e-6 * np.random.default_rng(0).normal(size=(10, 8))
    assert sec.embedding_health(collapsed)["mean_cosine"] > 0.999


def test_pairs_separation_and_reid_on_clear_clusters():
    emb, ident, frame = _clusters()
    same, diff = sec.pair_similarities(emb, ident, frame)
    assert len(same) == 6 * 10 and len(diff) == (30 * 29) // 2 - 60
    sep = sec.separation(same, diff)
    assert sep["auc"] == 1.0 and sep["verification_accuracy"] == 1.0
    assert sec.reid_top1(emb, ident, frame) == {"queries": 30, "top1": 1.0}
    shuffled = np.random.default_rng(1).permutation(ident)
    assert sec.reid_top1(emb, shuffled, frame)["top1"] < 0.5
    nn = sec.nearest_neighbours(emb, frame, k=2)
    assert nn.shape == (30, 2) and all(ident[nn[:, 0]] == ident)
    assert all(frame[nn[:, 0]] != frame)  # never the same frame


def test_separation_auc_counts_ties_as_half_and_groups_stay_apart():
    assert sec.separation(np.array([0.5]), np.array([0.5]))["auc"] == 0.5
    emb, ident, frame = _clusters(n_ids=2, per_id=3)
    group = np.array([0, 0, 0, 1, 1, 1])
    same, diff = sec.pair_similarities(emb, ident, frame, group)
    assert len(same) == 6 and len(diff) == 0  # each identity is alone in its group
    assert np.isnan(sec.separation(same, diff)["auc"])


def test_pca_projection():
    emb, ident, _ = _clusters(n_ids=2, per_id=10, noise=0.01)
    pts, share = sec.pca_2d(emb)
    assert pts.shape == (20, 2) and share[0] > 0.9
    assert np.sign(pts[ident == 0, 0]).std() == 0 and np.sign(pts[ident == 1, 0]).std() == 0


# ---------------------------------------------------------------- a real SGIE recording


@pytest.fixture(scope="module")
def sgie_recording(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("av")
    from dsprobe.sample import ensure_secondary_recording

    return ensure_secondary_recording(tmp_path_factory.mktemp("sgie") / "s.h5", seconds=0.6)


def test_sgie_outputs_read_the_objects_layers_and_crops(sgie_recording):
    from dsprobe import open_recording
    from dsprobe.analysis.evaluate import load_ground_truth

    with open_recording(sgie_recording) as rec:
        out = sec.sgie_outputs(rec)
        assert out.unique_id == 2 and len(out) > 10
        assert out.layers["color"].shape == (len(out), 8)
        k = len(out) // 2
        r = out.objects.iloc[k]
        obj = rec[int(r["row"])].objects[int(r["index_in_frame"])]
        np.testing.assert_array_equal(obj.layers["embedding"], out.layers["embedding"][k])
        assert obj.image is not None  # the crop was stored
        gt = load_ground_truth(sgie_recording.with_name("s_gt.json"), frame_size=(1280, 720))
        m = sec.match_ground_truth(out.objects, gt, "color", SECONDARY_LABELS)
        known = m["gt_attribute"] >= 0
        assert known.mean() > 0.8
        acc = sec.classifier_scores(out.layers["color"], m["gt_attribute"].to_numpy())["accuracy"]
        assert acc > 0.9
        with pytest.raises(ValueError, match="recorded no per-object layers"):
            sec.sgie_outputs(rec, unique_id=1)


def test_classifier_replay_table_names_each_row_by_its_attribute(sgie_recording):
    """The replay DataFrame's ``label`` is nvinfer's ``labels[attribute][class_id]`` (what the live
    probe writes into ``NvDsLabelInfo.result_label``), not the joined label-file line."""
    from dsprobe import classifier_postprocess, open_recording
    from dsprobe.deepstream import classifier_results

    pp = classifier_postprocess(SECONDARY_CONFIG_PATH, ["color"], classifier_threshold=0.0)
    with open_recording(sgie_recording) as rec:
        df = pp.run_recording(rec, unique_id=2)
        by_row = pp.detections_by_row(rec, unique_id=2)
    assert len(df) > 10 and (df["attribute"] == 0).all()
    assert list(df["label"]) == [SECONDARY_LABELS[c] for c in df["class_id"]]
    live = [r.label for d in by_row.values() for r in classifier_results(d, pp.labels)]
    assert list(df["label"]) == live


def test_replay_of_mixed_gies_without_unique_id_says_which_gie_has_the_layer(sgie_recording):
    from dsprobe import classifier_postprocess, open_recording
    from dsprobe.postprocess import PostprocessError

    pp = classifier_postprocess(SECONDARY_CONFIG_PATH, ["color"])
    with open_recording(sgie_recording) as rec:
        for replay in (pp.run_recording, pp.detections_by_row):
            with pytest.raises(PostprocessError, match=r"could not find layer 'color'") as e:
                replay(rec)
            assert "unique_id=2: color (per object)" in str(e.value)
            assert "unique_id=1: output0 (per frame)" in str(e.value)
            assert "pass unique_id=" in str(e.value)


def test_classifier_labels_per_attribute_for_two_output_layers():
    from dsprobe.detections import Detections, classifier_label
    from dsprobe.postprocess.replay import detections_frame

    labels = ["black;blue;red", "sedan;suv"]
    d = Detections(
        np.zeros((3, 4), np.float32),
        [0.9, 0.8, 0.7],
        [2, 1, 5],
        "frame",
        vectors=np.array([[0], [1], [1]], np.float32),
    )

    class Rec:  # the two frames columns a detections table reads
        frames = pd.DataFrame({"source_id": [0], "frame_num": [7]})

    df = detections_frame(Rec(), {0: d}, labels, classifier=True)
    assert list(df["attribute"]) == [0, 1, 1]
    assert list(df["label"]) == ["red", "suv", ""]  # class 5 of "sedan;suv": unknown, as live
    assert classifier_label([["a", "b"]], 0, 1) == "b" and classifier_label(labels, 2, 0) == ""


def test_compare_reports_drift_per_object(sgie_recording):
    from dsprobe.analysis.compare import compare

    rep = compare(sgie_recording, sgie_recording)
    po = rep.per_object
    assert len(po) > 10 and (po["object_row_a"] == po["object_row_b"]).all()
    np.testing.assert_allclose(po["cosine:embedding"], 1.0, atol=1e-6)
    assert (po["max_abs:color"] == 0).all() and "per_object" not in rep.to_dict()


def test_projection_explorer_click_selects_the_point_under_it(sgie_recording):
    pytest.importorskip("ipywidgets")
    pytest.importorskip("matplotlib")
    from dsprobe import open_recording
    from dsprobe.notebook import ProjectionExplorer

    with open_recording(sgie_recording) as rec:
        out = sec.sgie_outputs(rec)
        emb = out.layers["embedding"]
        pts, _ = sec.pca_2d(emb)
        frame = out.objects["frame_num"].to_numpy()
        nn = sec.nearest_neighbours(emb, frame, out.objects["source_id"].to_numpy(), k=2)
        ex = ProjectionExplorer(rec, out.objects, pts, out.objects["class_id"].to_numpy(), nn)
        k = int(np.argmax(pts[:, 0]))  # the right-most point
        x, y = ex._to_pixels(pts[k : k + 1])[0]
        ex.on_click({"type": "click", "relativeX": x, "relativeY": ex._height - y})
        assert ex.index.value == k and ex.clicks == 1
        ex.select(k)  # draws the crop and its neighbours
        assert [len(ax.images) for ax in ex.figure.axes[:3]] == [1, 1, 1]  # crop + 2 neighbours
