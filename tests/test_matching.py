"""The numpy COCO matcher equals pycocotools' COCOeval bit for bit: per-detection match tables
(dtMatches / dtIgnore), precision and recall arrays and the mAPs, on random cases with crowd regions,
out-of-range areas, annotation id 0, identical twin boxes (IoU ties), score ties, NaN boxes and small
max-detection limits, and on the sample recording; tables merge across partitions."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
import pytest

from dsprobe.analysis.accumulation import accumulate
from dsprobe.analysis.evaluate import GroundTruth, evaluate, frame_image_id
from dsprobe.analysis.matching import MatchTable, match_table

pytest.importorskip(
    "pycocotools", reason="pycocotools is the reference the matcher is tested against"
)
from pycocotools.cocoeval import COCOeval  # noqa: E402

from dsprobe.analysis.cocoeval import (  # noqa: E402
    coco_ground_truth,
    coco_results,
    pycocotools_evaluate,
)


def random_case(rng, n_img=20, n_cls=4, nan=False, zero_id=False):
    anns, rows = [], []
    aid = 0 if zero_id else 1
    frames = [(i % 3, i) for i in range(n_img)]
    for s, f in frames:
        iid = frame_image_id(s, f)
        objs = []
        for _ in range(rng.integers(0, 8)):
            x, y = rng.uniform(0, 100, 2)
            w, h = rng.uniform(-2, 40, 2) if rng.random() < 0.1 else rng.uniform(1, 40, 2)
            if rng.random() < 0.1:
                w, h = rng.integers(1, 5, 2).astype(float)
            c = int(rng.integers(0, n_cls))
            area = float(w * h) if rng.random() > 0.05 else 2e10  # out of COCO's "all" range
            ann = {"id": aid, "image_id": iid, "category_id": c, "bbox": [x, y, w, h]}
            anns.append({**ann, "area": area, "iscrowd": int(rng.random() < 0.15)})
            aid += 1
            objs.append((x, y, w, h, c))
            if rng.random() < 0.15:  # an identical twin: IoU ties between ground truth boxes
                anns.append({**anns[-1], "id": aid, "iscrowd": int(rng.random() < 0.3)})
                aid += 1
        for x, y, w, h, c in objs:
            for _ in range(rng.integers(0, 4)):
                j = rng.normal(0, 3, 4) * (rng.random() < 0.8)
                cc = c if rng.random() < 0.85 else int(rng.integers(0, n_cls + 1))
                score = np.round(rng.random(), 1)  # ties
                rows.append((s, f, x + j[0], y + j[1], x + w + j[2], y + h + j[3], score, cc))
        for _ in range(rng.integers(0, 5)):
            x, y = rng.uniform(0, 100, 2)
            w, h = rng.uniform(0, 40, 2)
            rows.append((s, f, x, y, x + w, y + h, np.round(rng.random(), 1), rng.integers(n_cls)))
    cols = ["source_id", "frame_num", "x1", "y1", "x2", "y2", "score", "class_id"]
    df = pd.DataFrame(rows, columns=cols)
    for c in ["x1", "y1", "x2", "y2", "score"]:
        df[c] = df[c].astype(np.float32)
    if nan and len(df):
        df.loc[df.index[rng.integers(0, len(df))], "x2"] = np.nan
    coco = {
        "images": [{"id": frame_image_id(s, f)} for s, f in frames],
        "annotations": anns,
        "categories": [{"id": c, "name": f"c{c}"} for c in range(n_cls)],
    }
    return df, GroundTruth(coco, pd.DataFrame(), [f"c{c}" for c in range(n_cls)]), frames


def reference(df, gt, ids, max_det):
    """pycocotools' precision, recall and per-detection (dtMatches, dtIgnore) by detection id."""
    cg = coco_ground_truth(gt, ids)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(cg, cg.loadRes(coco_results(df, set(ids))), "bbox")
        ev.params.imgIds = ids
        ev.params.maxDets = [max_det]
        ev.params.areaRng = ev.params.areaRng[:1]
        ev.evaluate()
        ev.accumulate()
    per_det = {}
    for e in ev.evalImgs:
        for j, d in enumerate(e["dtIds"] if e else []):
            per_det[d] = (e["dtMatches"][:, j], e["dtIgnore"][:, j])
    return ev.eval["precision"][:, :, :, 0, -1], ev.eval["recall"][:, :, 0, -1], per_det


def assert_table_equals(table: MatchTable, per_det: dict, max_det: int) -> None:
    dt_id = {row: k + 1 for k, row in enumerate(table.frame_rows)}  # loadRes numbering
    checked = 0
    for j in range(len(table)):
        if table.rank[j] >= max_det:
            continue
        matches, ignore = per_det[dt_id[table.index[j]]]
        np.testing.assert_array_equal(
            matches, np.where(table.gt_id[:, j] < 0, 0, table.gt_id[:, j])
        )
        np.testing.assert_array_equal(ignore, table.ignored[:, j])
        checked += 1
    assert checked == sum(len(v[0]) > 0 for v in per_det.values())


@pytest.mark.parametrize("seed", range(60))
def test_matcher_equals_pycocotools_on_random_cases(seed):
    rng = np.random.default_rng(seed)
    df, gt, frames = random_case(rng, nan=seed % 5 == 0, zero_id=seed % 7 == 0)
    if not len(df):
        pytest.skip("this seed drew no detections (nothing for pycocotools to load)")
    ids = sorted(frame_image_id(s, f) for s, f in frames)
    max_det = [1000, 2, 3][seed % 3]
    prec, rec, per_det = reference(df, gt, ids, max_det)
    table = match_table(df, gt, ids)
    acc = accumulate(table, max_det=max_det)
    assert_table_equals(table, per_det, max_det)
    assert np.array_equal(prec, acc.precision) and np.array_equal(rec, acc.recall)
    if max_det == 1000:
        ours, theirs = evaluate(df, gt, frames), pycocotools_evaluate(df, gt, frames)
        assert (ours.map50, ours.map50_95) == (theirs.map50, theirs.map50_95)
        assert ours.num_detections == theirs.num_detections


def test_matcher_exercises_its_paths():
    """The random cases above reach contested boxes (rounds), crowd matches and the NaN loop."""
    rng = np.random.default_rng(0)
    df, gt, frames = random_case(rng, n_img=60, nan=True)
    table = match_table(df, gt, [frame_image_id(s, f) for s, f in frames])
    g = gt.arrays()
    crowd_ids = set(g.ann_id[g.iscrowd != 0].tolist())
    matched = table.gt_id[table.gt_id >= 0]
    assert len(set(matched.tolist()) & crowd_ids) > 0
    assert len(matched) > len(set(matched.tolist()))  # crowd boxes / thresholds reused
    assert table.ignored.any() and table.tp.any() and (~table.tp & ~table.ignored).any()


def test_matcher_equals_pycocotools_on_the_sample_recording(sample_recording, sample_videos):
    from dsprobe import Postprocess, open_recording
    from dsprobe.analysis.evaluate import load_ground_truth

    rec = open_recording(sample_recording)
    gt = load_ground_truth(sample_videos.gt_json, frame_size=(1280, 720))
    frames = list(zip(rec.frames["source_id"], rec.frames["frame_num"]))
    pp = Postprocess.from_nvinfer_config(rec.config())
    for q in (pp, pp.with_params("filter", pre_cluster_threshold=0.05)):
        df = q.run_recording(rec)
        ours, theirs = evaluate(df, gt, frames), pycocotools_evaluate(df, gt, frames)
        assert (ours.map50, ours.map50_95) == (theirs.map50, theirs.map50_95)
        assert ours.per_class_ap50 == theirs.per_class_ap50
        assert ours.per_class_ap50_95 == theirs.per_class_ap50_95
    rec.close()


def test_tables_of_partitions_merge_into_the_whole():
    df, gt, frames = random_case(np.random.default_rng(3), n_img=30)
    ids = sorted(frame_image_id(s, f) for s, f in frames)
    whole = accumulate(match_table(df, gt, ids))
    img = df["source_id"].to_numpy() * 1_000_000 + df["frame_num"].to_numpy()
    parts = [ids[:11], ids[11:19], ids[19:]]
    tables = [match_table(df[np.isin(img, p)], gt, p) for p in parts]
    merged = accumulate(MatchTable.concat(tables))
    assert np.array_equal(whole.precision, merged.precision)
    assert merged.num_detections == whole.num_detections
    with pytest.raises(ValueError, match="disjoint"):
        MatchTable.concat([tables[0], tables[0]])


def test_subset_of_a_table_is_the_table_of_the_subset():
    df, gt, frames = random_case(np.random.default_rng(4), n_img=25)
    ids = sorted(frame_image_id(s, f) for s, f in frames)
    table = match_table(df, gt, ids)
    keep = df["score"].to_numpy() >= 0.5  # a low-score suffix of every (frame, class)
    sub = table.subset(keep)
    fresh = match_table(df[keep], gt, ids)
    assert np.array_equal(accumulate(sub).precision, accumulate(fresh).precision)
    assert sub.num_detections == fresh.num_detections
    assert table.frame(0)["tp"].sum() == table.tp[0].sum()


def assert_tables_equal(a: MatchTable, b: MatchTable) -> None:
    for name in MatchTable.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name
        else:
            assert x == y, name


@pytest.mark.parametrize("seed", range(24))
def test_match_plan_of_a_subset_equals_matching_the_subset(seed):
    from dsprobe.analysis.matching import MatchPlan

    rng = np.random.default_rng(200 + seed)
    df, gt, frames = random_case(rng, nan=seed % 4 == 0, zero_id=seed % 5 == 0)
    ids = sorted(frame_image_id(s, f) for s, f in frames)[: 18 if seed % 3 == 0 else None]
    plan = MatchPlan(df, gt, ids)
    assert_tables_equal(plan.table(), match_table(df, gt, ids))
    for keep in (
        rng.random(len(df)) < 0.6,  # any subset: its own greedy matching
        df["score"].to_numpy() >= 0.5,
        np.zeros(len(df), bool),
    ):
        assert_tables_equal(plan.table(keep), match_table(df[keep], gt, ids))


@pytest.mark.parametrize("seed", range(24))
def test_cut_accumulator_equals_accumulating_each_cut(seed):
    """Every score cut (scalar, per class, with a post threshold) of a subset, through the prefix
    sums of one CutAccumulator, equals accumulate() of the subset's table cut, bit for bit;
    ``accumulate`` refuses a cut that is not a per-class prefix."""
    from dsprobe.analysis.matching import MatchPlan

    rng = np.random.default_rng(300 + seed)
    df, gt, frames = random_case(rng, n_img=25, nan=seed % 4 == 0, zero_id=seed % 6 == 0)
    ids = sorted(frame_image_id(s, f) for s, f in frames)
    max_det = [1000, 2, 3][seed % 3]
    base = None if seed % 2 else rng.random(len(df)) < 0.7
    plan = MatchPlan(df, gt, ids)
    cuts = plan.cuts(base, max_det=max_det)
    table = plan.table(base)
    sub = df if base is None else df[base]
    s, c = sub["score"].to_numpy(np.float32), sub["class_id"].to_numpy()
    n_cls = int(df["class_id"].max()) + 1 if len(df) else 1
    for pre, post in [
        (np.full(n_cls, t, np.float32), np.full(n_cls, -np.inf, np.float32))
        for t in (0.0, 0.3, 0.5, 0.95, 1.5)
    ] + [
        (
            rng.choice([0.0, 0.2, 0.5, 0.7], n_cls).astype(np.float32),
            np.full(n_cls, 0.4, np.float32),
        )
    ]:
        keep = (s >= pre[c]) & (s > post[c])
        ref = accumulate(table.subset(keep), max_det=max_det)
        for got in (cuts.accumulate(keep), cuts.accumulate_scores(pre, post)):
            assert got is not None
            assert np.array_equal(got.precision, ref.precision)
            assert np.array_equal(got.recall, ref.recall)
            assert got.num_detections == ref.num_detections
    # dropping a class's best detection but keeping lower ones is no prefix: refused
    for cc in np.unique(c[c < 4]):  # the ground truth's categories
        idx = np.flatnonzero(c == cc)
        if len(np.unique(s[idx])) > 1:
            keep = np.ones(len(s), bool)
            keep[idx[np.argmax(s[idx])]] = False
            assert cuts.accumulate(keep) is None
            break


@pytest.mark.parametrize("seed", range(8))
def test_matcher_on_detections_already_in_coco_order_equals_pycocotools(seed):
    """Detections sorted by frame, class and descending score (as a search's are) skip the sort."""
    df, gt, frames = random_case(np.random.default_rng(500 + seed))
    df = df.assign(image_id=df["source_id"] * 1_000_000 + df["frame_num"])
    df = df.sort_values(
        ["image_id", "class_id", "score"], ascending=[True, True, False], kind="stable"
    )
    df = df.drop(columns="image_id").reset_index(drop=True)
    ids = sorted(frame_image_id(s, f) for s, f in frames)
    prec, rec, per_det = reference(df, gt, ids, 1000)
    table = match_table(df, gt, ids)
    assert np.all(np.diff(table.index) > 0)  # already in COCO's order: the rows as given
    acc = accumulate(table)
    assert_table_equals(table, per_det, 1000)
    assert np.array_equal(prec, acc.precision) and np.array_equal(rec, acc.recall)


def test_coco_scores_equals_the_class_by_class_means():
    """coco_scores takes every class's mean in one call; each equals the mean of that class's
    valid values on its own, bit for bit (classes without ground truth, partly -1 classes too)."""
    from dsprobe.analysis.accumulation import Accumulated
    from dsprobe.analysis.evaluate import coco_scores
    from dsprobe.analysis.matching import IOU_THRESHOLDS

    rng = np.random.default_rng(8)
    for it in range(40):
        K = int(rng.integers(1, 90))
        prec = rng.random((10, 101, K)) ** rng.integers(1, 6)
        prec[:, :, rng.random(K) < 0.2] = -1  # no ground truth
        if it % 4 == 0:  # partly -1 (not made by accumulate, but allowed)
            prec[rng.integers(0, 10), rng.integers(0, 101, 30), rng.integers(0, K)] = -1
        cats = [{"id": c, "name": f"c{c}"} for c in range(K)]
        gt = GroundTruth(
            {"images": [], "annotations": [], "categories": cats},
            pd.DataFrame(),
            [c["name"] for c in cats],
        )
        acc = Accumulated(prec, prec[:, 0, :], np.arange(K), IOU_THRESHOLDS, 5, 9)
        res = coco_scores(acc, gt)
        for k in range(K):
            p, pk = prec[0, :, k], prec[:, :, k]
            want = float(p[p > -1].mean()) if (p > -1).any() else float("nan")
            want_all = float(pk[pk > -1].mean()) if (pk > -1).any() else float("nan")
            got, got_all = res.per_class_ap50[f"c{k}"], res.per_class_ap50_95[f"c{k}"]
            assert got == want or (got != got and want != want)
            assert got_all == want_all or (got_all != got_all and want_all != want_all)


@pytest.mark.parametrize("seed", range(30))
def test_accumulate_rows_of_frame_blocks_merge_into_the_whole_sets_accumulate(seed):
    """A recording set's partitions send AccumulateRows: the rows of consecutive frame blocks,
    concatenated in block order, are field for field the rows of all frames matched at once, and
    accumulate to the whole table's precision / recall bit for bit: all rows, every score cut
    through one CutAccumulator, and each block cut on its own before merging (max-detections 1000,
    2 and 3; NaN boxes; annotation id 0)."""
    from dsprobe.analysis.accumulation import AccumulateRows
    from dsprobe.analysis.matching import MatchPlan

    rng = np.random.default_rng(900 + seed)
    df, gt, frames = random_case(rng, n_img=25, nan=seed % 4 == 0, zero_id=seed % 6 == 0)
    ids = sorted(frame_image_id(s, f) for s, f in frames)
    max_det = [1000, 2, 3][seed % 3]
    image = df["source_id"].to_numpy() * 1_000_000 + df["frame_num"].to_numpy()
    blocks = np.array_split(np.array(ids), int(rng.integers(1, 5)))
    parts = [MatchPlan(df[np.isin(image, b)], gt, list(b)).rows(max_det=max_det) for b in blocks]
    merged = AccumulateRows.concat(parts)
    whole = MatchPlan(df, gt, ids).rows(max_det=max_det)
    for f in ("bounds", "score", "tp", "ignored", "num_gt"):
        assert np.array_equal(getattr(merged, f), getattr(whole, f)), f
    assert merged.num_images == whole.num_images == len(ids)
    table = match_table(df, gt, ids)
    ref = accumulate(table, max_det=max_det)
    got = merged.accumulator().accumulate_all(ref.num_detections)
    assert np.array_equal(got.precision, ref.precision) and np.array_equal(got.recall, ref.recall)
    s, c = df["score"].to_numpy(np.float32), df["class_id"].to_numpy()
    n_cls = int(c.max()) + 1 if len(c) else 1
    acc = merged.accumulator()
    for t in (0.0, 0.3, 0.5, 0.95):
        pre = rng.choice([t, t + 0.1], n_cls).astype(np.float32)
        post = np.full(n_cls, 0.2, np.float32)
        keep = (s >= pre[c]) & (s > post[c])
        ref = accumulate(table.subset(keep), max_det=max_det)
        for got in (
            acc.accumulate_scores(pre, post),
            AccumulateRows.concat([p.cut(pre, post) for p in parts])
            .accumulator()
            .accumulate_all(0),
        ):
            assert np.array_equal(got.precision, ref.precision)
            assert np.array_equal(got.recall, ref.recall)
