"""Objectives from match tables (COCO-exact mAP, F1, operating-point objectives, threshold sweeps,
per-class thresholds) and the objective search with its best-per-objective table."""

from __future__ import annotations

import numpy as np
import pytest

from dsprobe import Postprocess, open_recording
from dsprobe.analysis.evaluate import evaluate, load_ground_truth
from dsprobe.analysis.objectives import (
    Matches,
    confidence_sweep,
    edge_warning,
    f1_fp_budget,
    map50,
    map50_95,
    match_table_of,
    objective,
    per_class_thresholds,
    precision_at_recall,
    precision_recall_f1,
    recall_at_precision,
)
from dsprobe.detections import Detections


@pytest.fixture(scope="module")
def sample(sample_recording, sample_videos):
    rec = open_recording(sample_recording)
    gt = load_ground_truth(sample_videos.gt_json, frame_size=rec[0].frame_size)
    pp = Postprocess.from_nvinfer_config(rec.config())
    yield rec, gt, pp
    rec.close()


def frame_parts(rec, gt, df):
    frames = list(zip(rec.frames["source_id"].astype(int), rec.frames["frame_num"].astype(int)))
    parts = []
    for s, f in frames:
        d = df[(df["source_id"] == s) & (df["frame_num"] == f)]
        dets = Detections(
            d[["x1", "y1", "x2", "y2"]].to_numpy(), d["score"].to_numpy(), d["class_id"].to_numpy()
        )
        parts.append((dets, gt.for_frame(s, f)))
    return frames, parts


def test_map_from_match_tables_is_pycocotools_and_cuts_are_exact(sample):
    rec, gt, pp = sample
    low = pp.with_params(1, pre_cluster_threshold=0.05)
    frames, parts = frame_parts(rec, gt, low.run_recording(rec))
    m = match_table_of(parts, len(frames))
    ref = evaluate(low.run_recording(rec), gt, frames)
    assert map50(m) == pytest.approx(ref.map50, abs=1e-12)
    assert map50_95(m) == pytest.approx(ref.map50_95, abs=1e-12)
    high = pp.with_params(1, pre_cluster_threshold=0.5)
    _, parts_hi = frame_parts(rec, gt, high.run_recording(rec))
    fresh = match_table_of(parts_hi, len(frames))
    cut = m.cut(0.5)
    assert len(cut) == len(fresh) and np.array_equal(cut.tp.sum(0), fresh.tp.sum(0))
    assert map50_95(cut) == pytest.approx(map50_95(fresh), abs=1e-12)


def toy(scores, tps, classes=None, num_gt=None, frames=10) -> Matches:
    s = np.asarray(scores, float)
    c = np.zeros(len(s), int) if classes is None else np.asarray(classes)
    tp = np.repeat(np.asarray(tps, bool)[:, None], 10, axis=1)
    return Matches(s, c, tp, num_gt or {0: 4}, frames)


def test_operating_point_objectives_by_hand():
    t = toy([0.9, 0.8, 0.7, 0.6, 0.3], [1, 1, 0, 1, 0])  # 3 TP, 2 FP, 1 miss of 4
    p, r, f = precision_recall_f1(t)
    assert (p, r) == (0.6, 0.75) and f == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert precision_at_recall(t, 0.7) == 0.6
    assert precision_at_recall(t, 0.9) == pytest.approx(0.75 - 0.9)  # short of the target
    assert recall_at_precision(t, 0.5) == 0.75 and recall_at_precision(t, 0.8) < 0
    assert f1_fp_budget(t, 0.2) == pytest.approx(f) and f1_fp_budget(t, 0.1) == pytest.approx(-0.1)
    sw = confidence_sweep(t, [0.65, 0.75, 0.95])
    assert sw["tp"].tolist() == [2, 2, 0] and sw["fp"].tolist() == [1, 0, 0]
    assert sw["precision"].tolist() == [2 / 3, 1.0, 1.0] and sw["recall"].tolist() == [0.5, 0.5, 0]
    assert objective("f1_fp_budget", fp_per_frame=0.5).label == "f1_fp_budget(fp_per_frame=0.5)"
    with pytest.raises(ValueError, match="unknown objective"):
        objective("accuracy")
    with pytest.raises(ValueError, match="takes"):
        objective("f1", target=0.3)


def test_per_class_thresholds_and_edge_warning():
    # class 0: junk below 0.5; class 1: every detection right
    t = toy([0.9, 0.4, 0.3, 0.8, 0.2], [1, 0, 0, 1, 1], [0, 0, 0, 1, 1], {0: 1, 1: 2})
    res = per_class_thresholds(t, [0.1, 0.5, 0.85], "f1", ["a", "b"])
    assert res.thresholds == {0: 0.5, 1: 0.1}
    assert res.table.set_index("label").loc["b", "recall"] == 1.0
    assert any("class b 0.1 is the lowest" in w for w in res.warnings)
    assert edge_warning([0.1, 0.2, 0.3], 0.2, "x") is None
    assert "highest" in edge_warning([0.1, 0.2, 0.3], 0.3, "x")


def test_objective_search_table_and_per_class_export(sample):
    from dsprobe.analysis.export import to_nvinfer
    from dsprobe.analysis.operating import search_objectives

    rec, gt, pp = sample
    grid = {"pre_cluster_threshold": [0.05, 0.3, 0.6], "iou_threshold": [0.3, 0.6]}
    res = search_objectives(pp.decode_recording(rec), gt, grid)
    assert len(res.table) == 6
    frames = list(zip(rec.frames["source_id"].astype(int), rec.frames["frame_num"].astype(int)))
    for _, row in res.table.iterrows():  # every setting scored as a plain run + evaluate() would
        p = pp.with_params(1, pre_cluster_threshold=row["pre_cluster_threshold"])
        p = p.with_params(2, iou_threshold=row["iou_threshold"])
        assert row["map50"] == pytest.approx(evaluate(p.run_recording(rec), gt, frames).map50)
    best = res.best_table()
    assert list(best.index[:3]) == ["map50", "map50_95", "f1"]
    f1_row = best.loc["f1"]
    assert f1_row["value"] == pytest.approx(res.table["f1"].max())
    assert "lowest" in best.loc["map50", "warning"]  # mAP always wants the lowest threshold
    ct, pcl = res.per_class("f1")
    assert set(ct.thresholds) == {0, 1, 2, 3}
    sections: dict[str, dict[str, str]] = {}
    for line in to_nvinfer(pcl).text().splitlines():
        if line.startswith("[class-attrs-"):
            cur = sections.setdefault(line.strip("[]"), {})
        elif "=" in line and not line.startswith("#") and sections:
            cur.__setitem__(*line.split("=", 1))
    for c, thr in ct.thresholds.items():  # each class's threshold: its own section, else "all"
        own = sections.get(f"class-attrs-{c}", {}).get("pre-cluster-threshold")
        assert float(own or sections["class-attrs-all"]["pre-cluster-threshold"]) == thr
    assert len(sections) > 1
