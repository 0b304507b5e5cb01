"""Search and fast re-runs: the Reclusterer equals running the steps; the incremental COCO scorer equals
evaluate(); a constructed case where the best setting is known by construction is found."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dsprobe.analysis.evaluate import GroundTruth, evaluate, ground_truth_from_detections
from dsprobe.analysis.search import Reclusterer, _selection_frame, search
from dsprobe.detections import Detections
from dsprobe.postprocess.pipeline import Postprocess, PostprocessError, Step
from dsprobe.postprocess.registry import StepContext
from dsprobe.postprocess.replay import DecodedRecording, detections_frame

NET = (320, 320)
FRAME = (640, 640)  # scale 2: nvinfer scaling from network to frame pixels is exercised


class FakeRecording:
    """What DecodedRecording / detections_frame read of a Recording: the frames table."""

    def __init__(self, n: int) -> None:
        self.frames = pd.DataFrame(
            {
                "source_id": np.arange(n) % 2,
                "frame_num": np.arange(n) // 2,
                "frame_width": FRAME[0],
                "frame_height": FRAME[1],
                "network_width": NET[0],
                "network_height": NET[1],
            }
        )


def base_postprocess(cluster: str = "nms", **cluster_params) -> Postprocess:
    steps = [
        Step("decode", "yolov8"),
        Step("filter", "threshold", {"pre_cluster_threshold": 0.25, "num_classes": 3}),
        Step("cluster", cluster, cluster_params),
        Step("scale", "nvinfer", {"maintain_aspect_ratio": True}),
    ]
    return Postprocess(steps, labels=["a", "b", "c"], num_classes=3)


def decoded_from(cands: list[Detections], pp: Postprocess) -> DecodedRecording:
    ctx = StepContext(
        network_size=NET, frame_size=FRAME, crop_rect=(0.0, 0.0, *map(float, FRAME)), num_classes=3
    )
    return DecodedRecording(
        pp, dict(enumerate(cands)), {i: ctx for i in range(len(cands))}, FakeRecording(len(cands))
    )


def random_candidates(
    rng: np.random.Generator, n_frames: int, tie_step: float = 0.05
) -> list[Detections]:
    """Clumps of overlapping boxes (so NMS has work), scores quantised to make ties common."""
    out = []
    for _ in range(n_frames):
        boxes, scores, classes = [], [], []
        for _ in range(rng.integers(0, 6)):
            c = rng.uniform(30, 290, 2)
            wh = rng.uniform(10, 80, 2)
            for _ in range(rng.integers(1, 8)):
                j = c + rng.normal(0, 6, 2)
                s = wh * rng.uniform(0.8, 1.2, 2)
                boxes.append([*(j - s / 2), *(j + s / 2)])
                scores.append(np.round(rng.uniform(0.0, 1.0) / tie_step) * tie_step)
                classes.append(
                    rng.integers(0, 4)
                )  # class 3 >= num_classes: the threshold step drops it
        out.append(
            Detections(np.array(boxes, np.float32).reshape(-1, 4), scores, classes, "network")
        )
    return out


def random_setting(rng: np.random.Generator) -> dict:
    def per_class(lo, hi, integer=False):
        vals = rng.integers(lo, hi, 3) if integer else np.round(rng.uniform(lo, hi, 3), 2)
        return vals.tolist() if rng.random() < 0.4 else vals[0].item()

    p = {
        "pre_cluster_threshold": per_class(0.0, 0.9),
        "iou_threshold": per_class(0.1, 0.9),
        "topk": per_class(-1, 6, integer=True),
        "post_cluster_threshold": per_class(0.0, 0.6),
    }
    if rng.random() < 0.5:
        p.update(detected_min_w=int(rng.integers(0, 60)), detected_max_h=int(rng.integers(0, 200)))
    if rng.random() < 0.3:
        p.update(roi_top_offset=int(rng.integers(0, 200)))
    return p


def test_reclusterer_equals_running_the_steps_on_random_settings():
    rng = np.random.default_rng(7)
    pp = base_postprocess("nms", iou_threshold=0.5)
    dec = decoded_from(random_candidates(rng, 40), pp)
    rc = Reclusterer(dec)
    for _ in range(60):
        q = pp.set_params(random_setting(rng))
        assert rc.fast_path(q)
        fast, slow = rc.run(q), dec.run(q)
        assert fast.keys() == slow.keys()
        for r in slow:
            assert fast[r].equals(slow[r]), (q.to_dict(), r)
        counts = rc.counts(q)
        assert counts.to_dict() == {r: len(d) for r, d in slow.items()}


def test_reclusterer_reuses_one_clustering_for_thresholds_and_topk():
    rng = np.random.default_rng(3)
    pp = base_postprocess("nms", iou_threshold=0.45)
    dec = decoded_from(random_candidates(rng, 10), pp)
    rc = Reclusterer(dec, floor=0.05)
    for t in (0.5, 0.2, 0.05, 0.9):
        for k in (-1, 0, 1, 3):
            q = pp.set_params({"pre_cluster_threshold": t, "topk": k})
            assert all(rc.run(q)[r].equals(d) for r, d in dec.run(q).items())
    assert rc.cluster_runs == 1
    rc.run(pp.set_params({"pre_cluster_threshold": 0.01}))  # below the floor: cluster again
    assert rc.cluster_runs == 2


def test_reclusterer_cluster_mode_none_and_fallback_for_other_chains():
    rng = np.random.default_rng(11)
    cands = random_candidates(rng, 12)
    for pp in (
        base_postprocess("none", topk=2),
        base_postprocess("soft_nms", iou_threshold=0.3),
        base_postprocess("dbscan", eps=0.3, min_boxes=2),
    ):
        dec = decoded_from(cands, pp)
        rc = Reclusterer(dec)
        assert rc.fast_path(pp) == (pp.steps[2].name == "none")
        for t in (0.1, 0.6):
            q = pp.set_params({"pre_cluster_threshold": t})
            fast, slow = rc.run(q), dec.run(q)
            assert all(fast[r].equals(slow[r]) for r in slow)
            assert rc.counts(q).sum() == sum(len(d) for d in slow.values())


def test_reclusterer_refuses_candidates_of_another_decoder():
    pp = base_postprocess()
    rc = Reclusterer(decoded_from(random_candidates(np.random.default_rng(0), 2), pp))
    with pytest.raises(PostprocessError, match="another decode step"):
        rc.run(pp.with_params("decode", score_threshold=0.3))


def test_apply_params_per_class_and_object_filter():
    pp = base_postprocess()
    q = pp.set_params({"pre_cluster_threshold": 0.6}, class_id=1)
    assert q.step("filter").params["pre_cluster_threshold"] == [0.25, 0.6, 0.25]
    assert q.get_param("pre_cluster_threshold", class_id=1) == 0.6
    back = q.set_params({"pre_cluster_threshold": 0.25}, class_id=1)
    assert (
        back.step("filter").params["pre_cluster_threshold"] == 0.25
    )  # equal values collapse to a scalar
    assert pp.get_param("topk") == -1  # the nms step's default when the spec leaves it out
    f = pp.set_params({"detected_min_w": 12})
    assert [s.kind + ":" + s.name for s in f.steps][-2:] == ["scale:nvinfer", "filter:objects"]
    assert f.steps[-1].params == {"detected_min_w": 12}
    with pytest.raises(ValueError, match="no step .* takes a param 'bogus'"):
        pp.set_params({"bogus": 1})


def _known_case(rng: np.random.Generator, n_frames: int = 30):
    """Per frame 3 objects of class 0. The decoder output has each object (score 0.55-0.95), a
    duplicate of each at IoU ~0.65 with almost the same score, and low-score clutter (< 0.3).
    mAP@0.5 is 1.0 only with threshold <= 0.55 (keeps every object), NMS IoU < 0.65 (removes the
    duplicates, which otherwise rank among true objects) and top-k >= 3; every other setting in the
    grid loses objects or keeps duplicates."""
    cands, gt_rows = [], []
    for f in range(n_frames):
        boxes, scores = [], []
        for k in range(3):
            x, y = 20 + 95 * k + rng.uniform(0, 10), rng.uniform(20, 200)
            w, h = rng.uniform(40, 60), rng.uniform(40, 60)
            s = rng.uniform(0.56, 0.95)
            boxes += [
                [x, y, x + w, y + h],
                [x + 0.21 * w, y, x + 1.21 * w, y + h],
            ]  # duplicate: IoU 0.79/1.21
            scores += [s, s - 0.005]
            gt_rows.append(
                (f % 2, f // 2, 2 * x, 2 * y, 2 * (x + w), 2 * (y + h), 0)
            )  # frame px = 2x network px
        for _ in range(5):  # clutter far from the objects (bottom band)
            x, y = rng.uniform(0, 280), rng.uniform(270, 300)
            boxes.append([x, y, x + 15, y + 15])
            scores.append(rng.uniform(0.05, 0.3))
        cands.append(
            Detections(np.array(boxes, np.float32), scores, np.zeros(len(scores)), "network")
        )
    gt_df = pd.DataFrame(
        gt_rows, columns=["source_id", "frame_num", "x1", "y1", "x2", "y2", "class_id"]
    )
    gt_df["score"] = 1.0
    frames = [(f % 2, f // 2) for f in range(n_frames)]
    return cands, ground_truth_from_detections(gt_df, ["a", "b", "c"], frames), frames


def test_search_finds_the_known_best_setting_and_scores_exactly():
    rng = np.random.default_rng(5)
    cands, gt, frames = _known_case(rng)
    pp = base_postprocess("nms", iou_threshold=0.45, topk=100)
    dec = decoded_from(cands, pp)
    grid = {
        "pre_cluster_threshold": [0.1, 0.5, 0.7, 0.9],
        "iou_threshold": [0.5, 0.7, 0.9],
        "topk": [2, 3, 50],
    }
    res = search(dec, gt, grid, frames=frames)
    assert len(res.table) == 36
    best = res.table.iloc[0]
    assert best["map50"] == pytest.approx(1.0)
    perfect = res.table[res.table["map50"] > 1 - 1e-9]
    assert set(perfect["pre_cluster_threshold"]) <= {0.1, 0.5} and set(
        perfect["iou_threshold"]
    ) == {0.5}
    assert set(perfect["topk"]) <= {3, 50}
    assert res.best_params["iou_threshold"] == 0.5 and res.best_params["topk"] in (3, 50)
    assert res.best.step("cluster").params["iou_threshold"] == 0.5
    # every score equals a fresh evaluate() of the detections the plain steps produce
    for _, row in res.table.iterrows():
        q = pp.set_params({k: row[k].item() for k in grid})
        r = evaluate(detections_frame(dec.recording, dec.run(q)), gt, frames)
        assert row["map50"] == pytest.approx(r.map50, abs=1e-12)
        assert row["map50_95"] == pytest.approx(r.map50_95, abs=1e-12)
        assert row["detections"] == r.num_detections
    assert res.pivot().shape == (4, 3)


def test_incremental_scorer_with_ties_matches_evaluate():
    rng = np.random.default_rng(9)
    cands = random_candidates(rng, 30, tie_step=0.1)  # many equal scores: top-k cuts inside ties
    ref = pd.concat(
        [d.to_dataframe().assign(source_id=i % 2, frame_num=i // 2) for i, d in enumerate(cands)]
    )
    ref = ref[ref["class_id"] < 3]
    ref[["x1", "y1", "x2", "y2"]] *= 2
    gt = ground_truth_from_detections(
        ref[ref["score"] > 0.6], ["a", "b", "c"], [(i % 2, i // 2) for i in range(30)]
    )
    pp = base_postprocess("nms", iou_threshold=0.5)
    dec = decoded_from(cands, pp)
    grid = {
        "pre_cluster_threshold": [0.0, 0.3, 0.7],
        "topk": [1, 2, -1],
        "post_cluster_threshold": [0.0, 0.45],
    }
    res = search(dec, gt, grid, method="random", n_random=10, seed=1)
    assert len(res.table) == 10
    for _, row in res.table.iterrows():
        q = pp.set_params({k: row[k].item() for k in grid})
        r = evaluate(detections_frame(dec.recording, dec.run(q)), gt)
        assert (row["map50"], row["map50_95"]) == pytest.approx((r.map50, r.map50_95), abs=1e-12)


def test_search_rejects_bad_arguments():
    pp = base_postprocess()
    dec = decoded_from(random_candidates(np.random.default_rng(1), 2), pp)
    gt = GroundTruth(
        {"images": [], "annotations": [], "categories": [{"id": 0, "name": "a"}]},
        pd.DataFrame(),
        ["a"],
    )
    with pytest.raises(ValueError, match="metric"):
        search(dec, gt, {"iou_threshold": [0.5]}, metric="f1")
    with pytest.raises(ValueError, match="method"):
        search(dec, gt, {"iou_threshold": [0.5]}, method="bayes")
    with pytest.raises(ValueError, match="nms_threshold"):
        search(dec, gt, {"nms_threshold": [0.5]})


def test_search_on_the_sample_recording_matches_plain_runs(sample_recording, sample_videos):
    from dsprobe import open_recording
    from dsprobe.analysis.evaluate import load_ground_truth

    rec = open_recording(sample_recording)
    pp = Postprocess.from_nvinfer_config(rec.config())
    gt = load_ground_truth(sample_videos.gt_json, frame_size=(1280, 720))
    dec = pp.decode_recording(rec)
    grid = {"pre_cluster_threshold": [0.1, 0.4], "iou_threshold": [0.3, 0.6]}
    res = search(dec, gt, grid, progress=False)
    frames = list(zip(rec.frames["source_id"], rec.frames["frame_num"]))
    for _, row in res.table.iterrows():
        q = pp.set_params({k: row[k].item() for k in grid})
        r = evaluate(q.run_recording(rec), gt, frames)
        assert (row["map50"], row["map50_95"], row["detections"]) == pytest.approx(
            (r.map50, r.map50_95, r.num_detections), abs=1e-12
        )
    # ground truth left in the 960x540 video's pixels: refused with the fix, not scored as ~0
    from dsprobe.analysis.operating import search_objectives

    video_px = load_ground_truth(sample_videos.gt_json)
    scaled_wrong = load_ground_truth(sample_videos.gt_json, frame_size=(960, 540))
    for bad, what in (
        (video_px, "960x540 source-video pixels"),
        (scaled_wrong, "scaled to 960x540"),
    ):
        for run in (search, search_objectives):
            with pytest.raises(ValueError, match=what) as e:
                run(dec, bad, grid)
            assert "frame_size=(1280, 720)" in str(e.value) and "sample" in str(e.value)
    rec.close()


def test_scorer_rematches_a_cut_that_is_not_a_low_score_suffix():
    from dsprobe.analysis.search import _Scorer

    rng = np.random.default_rng(2)
    cands, gt, frames = _known_case(rng, n_frames=4)
    pp = base_postprocess("nms", iou_threshold=0.9)
    dec = decoded_from(cands, pp)
    sel = Reclusterer(dec).select(pp)
    scorer = _Scorer(dec.recording, sel, gt, frames)
    keep = sel.keep.copy()
    r0 = np.flatnonzero(sel.rows == 0)
    best = r0[np.argmax(sel.scores[r0])]
    keep[best] = False  # drop the best box of frame 0 but keep lower ones of its class
    assert scorer.table.subset(keep) is None
    cut = scorer.score(keep)
    assert scorer.rematched == 1
    fresh_cut = evaluate(_selection_frame(dec.recording, sel, keep), gt, frames)
    assert (cut.map50, cut.map50_95) == (fresh_cut.map50, fresh_cut.map50_95)
    full = scorer.score(sel.keep)
    assert scorer.rematched == 1
    fresh = evaluate(detections_frame(dec.recording, dec.run(pp)), gt, frames)
    assert (full.map50, full.map50_95) == (fresh.map50, fresh.map50_95)


def user_yolo(layers, ctx, *, score_threshold: float = 0.001, drop_class: int = -1):
    """The user's decoder (the built-in YOLOv8 decoder behind a user function)."""
    from dsprobe.postprocess.registry import get_step

    d = get_step("decode", "yolov8")(layers, ctx, score_threshold=score_threshold)
    return d[d.class_ids != drop_class]


def fussy_cluster(dets, ctx, *, iou_threshold: float = 0.5):
    """The user's cluster step: fails for one setting (NaN boxes), runs nvinfer's NMS otherwise."""
    from dsprobe.postprocess.registry import get_step

    if iou_threshold > 0.55:
        return Detections(np.full_like(dets.boxes, np.nan), dets.scores, dets.class_ids, dets.space)
    return get_step("cluster", "nms")(dets, ctx, iou_threshold=iou_threshold)


def test_search_over_user_steps_decodes_per_decoder_setting_and_marks_failures(
    sample_recording, sample_videos
):
    from dsprobe import open_recording
    from dsprobe.analysis.evaluate import load_ground_truth

    rec = open_recording(sample_recording)
    base = Postprocess.from_nvinfer_config(rec.config(), decoder=user_yolo)
    steps = [s.to_dict() for s in base.steps]
    steps[0]["name"], steps[2] = user_yolo, {"kind": "cluster", "name": fussy_cluster}
    pp = Postprocess(
        steps, labels=base.labels, num_classes=base.num_classes, geometry=base.geometry
    )
    gt = load_ground_truth(sample_videos.gt_json, frame_size=(1280, 720))
    grid = {"drop_class": [-1, 0], "iou_threshold": [0.45, 0.6]}
    res = search(pp.decode_recording(rec), gt, grid)
    frames = list(zip(rec.frames["source_id"], rec.frames["frame_num"]))
    failed = res.table[res.table["error"] != ""]
    assert sorted(failed["iou_threshold"]) == [0.6, 0.6] and failed["map50"].isna().all()
    assert failed["error"].str.contains(r"cluster 'test_search:fussy_cluster'.*NaN/inf").all()
    ok = res.table[res.table["error"] == ""]
    assert len(ok) == 2 and ok["map50"].notna().all()
    for _, row in ok.iterrows():  # each score equals a plain run of that setting (decoded anew)
        q = pp.set_params({k: row[k] for k in grid})
        r = evaluate(q.run_recording(rec), gt, frames)
        assert row["map50"] == pytest.approx(r.map50, abs=1e-12)
        assert row["detections"] == r.num_detections
    assert res.best_params["drop_class"] == -1  # dropping a class of the sample loses its boxes
    rec.close()


def keep_confident(dets, ctx, *, floor: float = 0.0):
    """The user's filter step."""
    return dets[dets.scores >= floor]


def grown(dets, ctx, *, margin: float = 0.0):
    """The user's scale step: nvinfer's mapping, then each box grown by ``margin`` frame px."""
    from dsprobe.postprocess.registry import get_step

    d = get_step("scale", "nvinfer")(dets, ctx)
    m = np.float32([-margin, -margin, margin, margin])
    return Detections(d.boxes + m, d.scores, d.class_ids, "frame")


def test_search_over_user_filter_and_scale_params(sample_recording, sample_videos):
    from dsprobe import open_recording
    from dsprobe.analysis.evaluate import load_ground_truth

    rec = open_recording(sample_recording)
    base = Postprocess.from_nvinfer_config(rec.config())
    steps = [s.to_dict() for s in base.steps[:3]]
    steps[1:1] = [{"kind": "filter", "name": keep_confident}]
    steps.append({"kind": "scale", "name": grown})
    pp = Postprocess(
        steps, labels=base.labels, num_classes=base.num_classes, geometry=base.geometry
    )
    gt = load_ground_truth(sample_videos.gt_json, frame_size=(1280, 720))
    grid = {"floor": [0.0, 0.6], "margin": [0.0, 6.0]}
    res = search(pp.decode_recording(rec), gt, grid, metric="map50_95")
    frames = list(zip(rec.frames["source_id"], rec.frames["frame_num"]))
    assert len(res.table) == 4 and "error" not in res.table
    for _, row in res.table.iterrows():
        r = evaluate(pp.set_params({k: float(row[k]) for k in grid}).run_recording(rec), gt, frames)
        assert (row["map50"], row["map50_95"]) == pytest.approx((r.map50, r.map50_95), abs=1e-12)
    assert res.best_params["margin"] == 0.0  # grown boxes fit the ground truth worse
    rec.close()


# ------------------------------------------------------------------------ the flat CPU path vs the reference
# Reclusterer clusters every frame at once (dsprobe.analysis.floor: one NMS pair graph for all IoU
# thresholds) and search scores threshold cuts from one match plan per floor; per_frame=True is the
# reference (the steps frame by frame, every cut matched): the two must agree exactly.

NC = 80


def many_class_candidates(
    rng: np.random.Generator, n_frames: int, weird: bool = False, extras: bool = False
) -> list[Detections]:
    """Up to 80 classes, clumps of overlapping boxes (chains too), scores on a 0.05 grid (ties),
    every 4th frame empty; ``weird``: NaN, inverted, zero-size and huge boxes; ``extras``: object
    ids and keypoints to carry through."""
    out = []
    for f in range(n_frames):
        boxes, scores, classes = [], [], []
        for _ in range(0 if f % 4 == 0 else rng.integers(1, 25)):
            c = int(rng.integers(0, NC + 2))  # >= NC: dropped by the threshold step
            x, y = rng.uniform(0, 300, 2)
            w, h = rng.uniform(4, 60, 2)
            for k in range(rng.integers(1, 9)):
                dx = k * w * rng.uniform(0.05, 0.4) if rng.random() < 0.3 else rng.normal(0, 4)
                boxes.append([x + dx, y, x + dx + w, y + h])
                scores.append(np.round(rng.uniform(0, 1) / 0.05) * 0.05)
                classes.append(c)
        b = np.array(boxes, np.float32).reshape(-1, 4)
        if weird and len(b):
            pick = rng.integers(0, len(b), 4)
            b[pick[0], 2] = np.nan
            b[pick[1], [0, 2]] = b[pick[1], [2, 0]]  # inverted
            b[pick[2], 2:] = b[pick[2], :2]  # zero size
            b[pick[3]] = [-1e30, -1e30, 1e30, 1e30]
        n = len(b)
        out.append(
            Detections(
                b,
                scores,
                classes,
                "network",
                object_ids=np.arange(n, dtype=np.uint64) + 1000 * f if extras else None,
                keypoints=rng.uniform(0, 320, (n, 2, 3)).astype(np.float32) if extras else None,
            )
        )
    return out


def many_class_postprocess(**cluster_params) -> Postprocess:
    steps = [
        Step("decode", "yolov8"),
        Step("filter", "threshold", {"pre_cluster_threshold": 0.2, "num_classes": NC}),
        Step("cluster", "nms", {"iou_threshold": 0.5, **cluster_params}),
        Step("scale", "nvinfer", {"maintain_aspect_ratio": True}),
    ]
    return Postprocess(steps, labels=[f"c{c}" for c in range(NC)], num_classes=NC)


def decoded_many(cands: list[Detections], pp: Postprocess) -> DecodedRecording:
    """Two frame sizes in runs (several context runs for the flat scaling)."""
    ctxs = {}
    for i in range(len(cands)):
        size = FRAME if (i // 3) % 2 == 0 else (960, 540)
        ctxs[i] = StepContext(
            network_size=NET, frame_size=size, crop_rect=(0.0, 0.0, *map(float, size))
        )
    rec = FakeRecording(len(cands))
    rec.frames["frame_width"] = [c.frame_size[0] for c in ctxs.values()]
    rec.frames["frame_height"] = [c.frame_size[1] for c in ctxs.values()]
    return DecodedRecording(pp, dict(enumerate(cands)), ctxs, rec)


def same_bits(a: Detections, b: Detections) -> bool:
    """Detections.equals, NaN boxes included: every array bit for bit."""
    fields = ("boxes", "scores", "class_ids", "keypoints", "vectors", "masks", "object_ids")
    if a.space != b.space or len(a) != len(b):
        return False
    for name in fields:
        x, y = getattr(a, name), getattr(b, name)
        if (x is None) != (y is None):
            return False
        if x is not None and not (
            x.dtype == y.dtype
            and np.array_equal(
                np.ascontiguousarray(x).view(np.uint8), np.ascontiguousarray(y).view(np.uint8)
            )
        ):
            return False
    return True


@pytest.mark.parametrize("weird", [False, True])
def test_nms_pair_graph_equals_greedy_nms_for_every_threshold(weird):
    from dsprobe.postprocess.cluster import class_score_order
    from dsprobe.postprocess.iou import greedy_graph, greedy_nms, suppression_pairs

    rng = np.random.default_rng(21 + weird)
    parts = many_class_candidates(rng, 12, weird=weird)
    parts = [d[d.class_ids < NC] for d in parts]
    parts = [d[class_score_order(d.scores, d.class_ids)] for d in parts]
    flat = Detections.concatenate(parts)
    frame = np.repeat(np.arange(len(parts)), [len(d) for d in parts])
    group = frame * NC + flat.class_ids
    for floor, thresholds in ((0.3, (0.3, 0.45, 0.7, 1.0)), (0.0, (0.0, 0.5)), (-0.5, (-0.5, 0.2))):
        src, dst, iou = suppression_pairs(flat.boxes, group, floor, max_pairs=500)
        assert np.all(src < dst) and np.all(group[src] == group[dst])
        for thr in thresholds:
            hit = ~(iou <= np.float32(thr))
            kept = np.flatnonzero(greedy_graph(len(flat), src[hit], dst[hit]))
            ref = [
                np.flatnonzero(group == g)[
                    greedy_nms(flat.boxes[group == g], flat.scores[group == g], thr)
                ]
                for g in np.unique(group)
            ]
            ref = np.sort(np.concatenate(ref)) if ref else np.zeros(0, np.int64)
            assert np.array_equal(kept, ref), (floor, thr)


@pytest.mark.parametrize("weird", [False, True])
def test_flat_reclusterer_equals_the_per_frame_steps_with_80_classes(weird):
    rng = np.random.default_rng(31 + weird)
    pp = many_class_postprocess()
    dec = decoded_many(many_class_candidates(rng, 24, weird=weird, extras=True), pp)
    flat, ref = Reclusterer(dec, floor=0.05), Reclusterer(dec, floor=0.05, per_frame=True)
    per_class = lambda lo, hi: np.round(rng.uniform(lo, hi, NC + 2), 2).tolist()  # noqa: E731
    settings = [
        {"pre_cluster_threshold": 0.05, "iou_threshold": 0.3},
        {"pre_cluster_threshold": 0.5, "iou_threshold": 0.75},
        {"pre_cluster_threshold": 0.35, "iou_threshold": 0.0},
        {"pre_cluster_threshold": 0.2, "iou_threshold": per_class(0.2, 0.8)},
        {"pre_cluster_threshold": per_class(0.05, 0.6), "post_cluster_threshold": 0.4},
        {"pre_cluster_threshold": 0.1, "iou_threshold": 0.45, "topk": 2},
        {"pre_cluster_threshold": 0.1, "detected_min_w": 30, "roi_top_offset": 100},
        {"pre_cluster_threshold": 0.1, "iou_threshold": [0.5] * 3},  # too short: the step's error
    ]
    for p in settings:
        q = pp.set_params(p)
        try:
            expected = dec.run(q)
        except PostprocessError as exc:
            with pytest.raises(PostprocessError, match="iou_threshold"):
                flat.run(q)
            assert "iou_threshold" in str(exc)
            continue
        for rc in (flat, ref):
            got = rc.run(q)
            assert got.keys() == expected.keys()
            for r in expected:
                assert same_bits(got[r], expected[r]), (p, r)
        assert flat.counts(q).equals(ref.counts(q))
    assert flat._floors is not None  # the flat path ran


def test_search_flat_equals_the_per_frame_reference_with_80_classes():
    rng = np.random.default_rng(41)
    cands = many_class_candidates(rng, 40)
    pp = many_class_postprocess()
    dec = decoded_many(cands, pp)
    ref_dets = detections_frame(dec.recording, dec.run(pp.set_params({"iou_threshold": 0.4})))
    gt = ground_truth_from_detections(
        ref_dets[ref_dets["score"] > 0.55],
        [f"c{c}" for c in range(NC)],
        [(i % 2, i // 2) for i in range(len(cands))],
    )
    frames = [(i % 2, i // 2) for i in range(len(cands))]
    grid = {
        "pre_cluster_threshold": [0.05, 0.3, 0.5, 0.55, 0.9],
        "iou_threshold": [0.3, 0.45, 0.6, 1.0],
        "post_cluster_threshold": [0.0, 0.5],
        "topk": [-1, 3],
    }
    fast = search(dec, gt, grid, frames=frames)
    slow = search(
        dec, gt, grid, frames=frames, reclusterer=Reclusterer(dec, floor=0.05, per_frame=True)
    )
    assert fast.table.equals(slow.table)  # every number, to the last bit, in the same order
    assert fast.best_params == slow.best_params
    assert fast.table["map50"].nunique() > 5  # the grid matters
    for _, row in fast.table.sample(6, random_state=0).iterrows():
        q = pp.set_params({k: row[k].item() for k in grid})
        r = evaluate(detections_frame(dec.recording, dec.run(q)), gt, frames)
        assert (row["map50"], row["map50_95"], row["detections"]) == (
            r.map50,
            r.map50_95,
            r.num_detections,
        )
