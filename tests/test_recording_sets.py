"""Recording sets on Dask: a 2-process LocalCluster gives exactly what one process gives (same
detections bit for bit, same mAP from merged per-partition match tables, same search table and best
setting); failures name their partition and keep the rest; sets refuse to mix incompatible recordings."""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

import dsprobe
from dsprobe import FrameRecord, Recorder
from dsprobe.analysis.evaluate import GroundTruth, evaluate, frame_image_id, load_ground_truth
from dsprobe.analysis.objectives import OBJECTIVES
from dsprobe.analysis.operating import search_objectives
from dsprobe.analysis.search import search
from dsprobe.analysis.set_tasks import PartitionFailure, with_setting
from dsprobe.analysis.sets import load_set_ground_truth
from dsprobe.recording.reader import RecordingError

distributed = pytest.importorskip("distributed", reason="recording sets need dsprobe[dask]")

GRID = {"pre_cluster_threshold": [0.05, 0.3, 0.6], "iou_threshold": [0.3, 0.6]}
BLOCK = 12  # frames per partition: 30-frame recordings give 3 partitions each, the last one short


@pytest.fixture(scope="module")
def recordings(tmp_path_factory):
    """Three recordings (30 frames each, one camera each, different scenes) of the sample model,
    each with ``<name>_gt.json`` beside it."""
    from dsprobe.sample import ensure_sample_set

    root = tmp_path_factory.mktemp("set")
    ensure_sample_set(root / "recs", recordings=3, seconds=2.0, first_seed=11)
    return root / "recs"


@pytest.fixture(scope="module")
def client():
    """The 2-process LocalCluster every Dask test here runs on."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def rset(recordings):
    return dsprobe.open_recordings(recordings)


@pytest.fixture(scope="module")
def pp(rset):
    return dsprobe.Postprocess.from_nvinfer_config(rset.config())


def single_process_score(rset, postprocess) -> object:
    """The reference: every recording's detections in this process, scored in ONE pycocotools
    evaluation (each recording's sources moved to their own id range so frames do not collide)."""
    gts = {
        n: load_ground_truth(rset.ground_truth_paths[n], frame_size=(1280, 720)) for n in rset.names
    }
    anns, dets, frames = [], [], []
    for k, name in enumerate(rset.names):
        for a in gts[name].coco["annotations"]:
            s, f = divmod(a["image_id"], 1_000_000)
            anns.append({**a, "id": len(anns) + 1, "image_id": frame_image_id(1000 * k + s, f)})
        with rset.open(name) as rec:
            d = postprocess.run_recording(rec)
            frames += [
                (1000 * k + int(s), int(f))
                for s, f in zip(rec.frames.source_id, rec.frames.frame_num)
            ]
        d["source_id"] += 1000 * k
        dets.append(d)
    cats = gts[rset.names[0]].coco["categories"]
    gt = GroundTruth({"images": [], "annotations": anns, "categories": cats}, pd.DataFrame(), [])
    return evaluate(pd.concat(dets, ignore_index=True), gt, frames)


def test_open_recordings_one_frames_table_configs_and_ground_truth(recordings, rset):
    assert rset.names == ["cam0", "cam1", "cam2"] and len(rset.frames) == 90
    assert list(rset.frames.columns[:3]) == ["recording", "recording_index", "row"]
    assert rset.frames.groupby("recording")["row"].max().tolist() == [29, 29, 29]
    assert set(rset.configs) == set(rset.names) and rset.config().num_detected_classes == 4
    assert rset.ground_truth_paths["cam1"] == recordings / "cam1_gt.json"
    by_glob = dsprobe.open_recordings(str(recordings / "cam[02].h5"))
    by_list = dsprobe.open_recordings([recordings / "cam2.h5", recordings / "cam0.h5"])
    assert by_glob.names == ["cam0", "cam2"] and by_list.names == ["cam2", "cam0"]
    parts = rset.partitions(BLOCK)
    assert [len(p.rows) for p in parts] == [12, 12, 6] * 3
    assert (
        parts[4].describe()
        == "recording 'cam1' (12 frames: source 0 frame 12 .. source 0 frame 23)"
    )


def test_a_set_refuses_recordings_that_one_postprocess_cannot_replay(recordings, tmp_path):
    other = tmp_path / "other.h5"
    with Recorder(other, images=False) as r:
        r.record(FrameRecord(0, 0, layers={"output0": np.zeros((84, 10), np.float32)}))
    with pytest.raises(RecordingError, match=r"'cam0' and 'other' hold different layers"):
        dsprobe.open_recordings([recordings / "cam0.h5", other])
    with pytest.raises(ValueError, match=r"no ground truth for recordings \['other'\]"):
        load_set_ground_truth(dsprobe.open_recordings([other]))


def test_replay_on_two_workers_equals_one_process_bit_for_bit(rset, pp, client):
    df = dsprobe.replay_set(rset, pp, client=client, block_frames=BLOCK, progress=False)
    ref = []
    for k, name in enumerate(rset.names):
        with rset.open(name) as rec:
            d = pp.run_recording(rec)
        d.insert(0, "recording", name)
        d.insert(1, "recording_index", k)
        ref.append(d)
    pd.testing.assert_frame_equal(df, pd.concat(ref, ignore_index=True), check_exact=True)
    assert df.attrs["failures"] == []


def test_evaluate_on_two_workers_equals_one_evaluation_of_every_frame(rset, pp, client):
    r = dsprobe.evaluate_set(rset, pp, client=client, block_frames=BLOCK, progress=False)
    ref = single_process_score(rset, pp)
    assert (r.map50, r.map50_95, r.num_images, r.num_detections) == (
        ref.map50,
        ref.map50_95,
        ref.num_images,
        ref.num_detections,
    )
    np.testing.assert_equal(r.per_class_ap50, ref.per_class_ap50)
    np.testing.assert_equal(r.per_class_ap50_95, ref.per_class_ap50_95)
    for name, (rec_, prec) in ref.pr_curves.items():
        assert np.array_equal(r.pr_curves[name][0], rec_) and np.array_equal(
            r.pr_curves[name][1], prec
        )
    assert 0.3 < r.map50 < 1.0 and r.failures == []


def test_search_on_two_workers_equals_one_process(rset, pp, client):
    objectives = ["f1", "precision_at_recall"]
    res = dsprobe.search_set(
        rset,
        pp,
        GRID,
        client=client,
        block_frames=BLOCK,
        chunks=3,
        objectives=objectives,
        progress=False,
    )
    assert len(res.table) == 6 and res.failures == []
    for _, row in res.table.iterrows():
        ref = single_process_score(rset, with_setting(pp, {k: row[k].item() for k in GRID}))
        assert (row["map50"], row["map50_95"], row["detections"]) == (
            ref.map50,
            ref.map50_95,
            ref.num_detections,
        )
    in_process = dsprobe.search_set(
        rset, pp, GRID, client="sync", block_frames=50, objectives=objectives, progress=False
    )
    assert {"f1", "precision_at_recall(target=0.9)", "fp_per_frame"} <= set(res.table.columns)
    pd.testing.assert_frame_equal(res.table, in_process.table, check_exact=True)
    assert res.best_params == in_process.best_params
    assert res.best.to_dict() == with_setting(pp, res.best_params).to_dict()


def test_a_one_recording_set_searches_like_search_and_search_objectives(rset, pp):
    name = rset.names[1]
    one = dsprobe.open_recordings([rset.paths[name][0]])
    res = dsprobe.search_set(one, pp, GRID, client="sync", block_frames=BLOCK, progress=False)
    objs = dsprobe.search_set(
        one,
        pp,
        GRID,
        client="sync",
        block_frames=BLOCK,
        objectives=list(OBJECTIVES),
        metric="f1",
        progress=False,
    )
    with one.open(name) as rec:
        gt = load_ground_truth(one.ground_truth_paths[name], frame_size=(1280, 720))
        decoded = pp.decode_recording(rec)
        ref = search(decoded, gt, GRID)
        ref_objs = search_objectives(decoded, gt, GRID)
    pd.testing.assert_frame_equal(res.table, ref.table, check_exact=True)
    assert res.best_params == ref.best_params
    # the other objectives: exactly search_objectives' (its map50 is its own AP; ours is pycocotools')
    cols = [c for c in ref_objs.table.columns if c not in ("map50", "map50_95")]
    mine = objs.table.sort_values(list(GRID)).reset_index(drop=True)[cols]
    theirs = ref_objs.table.sort_values(list(GRID)).reset_index(drop=True)[cols]
    pd.testing.assert_frame_equal(mine, theirs, check_exact=True, check_dtype=False)
    assert objs.best_params == ref_objs.best_params("f1")


def test_a_failing_partition_is_named_and_the_others_are_kept(recordings, pp, tmp_path):
    for f in recordings.glob("cam[01]*"):
        shutil.copy(f, tmp_path / f.name)
    broken = dsprobe.open_recordings(tmp_path)
    (tmp_path / "cam1.h5").write_bytes(b"not hdf5 any more")  # after the set was opened
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = dsprobe.evaluate_set(broken, pp, client="sync", block_frames=BLOCK, progress=False)
    assert len(r.failures) == 3 and all(isinstance(f, PartitionFailure) for f in r.failures)
    assert r.failures[0].partition.startswith("recording 'cam1' (12 frames: source 0 frame 0 ..")
    assert "cam1.h5" in r.failures[0].error
    assert any("3 of 6 partitions failed" in str(w.message) for w in caught)
    kept = dsprobe.open_recordings([recordings / "cam0.h5"])
    assert r.map50 == single_process_score(kept, pp).map50 and r.num_images == 30


def test_compare_sets_pairs_recordings_by_name(rset, client):
    reports = dsprobe.compare_sets(rset, rset, client=client, progress=False)
    assert list(reports) == rset.names
    for rep in reports.values():
        assert rep.aligned_frames == 30 and rep.layers and all(d.max_abs == 0 for d in rep.layers)


def test_what_partitions_send_merges_into_one_evaluation_of_every_frame(rset, pp):
    """score_partition's rows and score cuts, merged by score_partitions: per setting exactly one
    evaluation of every frame, for score cuts that share a clustering's rows, a top-k setting (rows
    of its own), nothing detected, and a mix (one partition sends a cut setting as rows of its own)."""
    from dsprobe.analysis.match_tables import score_partitions
    from dsprobe.analysis.set_tasks import GroundTruthFile, score_partition

    settings = [
        {"pre_cluster_threshold": 0.05, "iou_threshold": 0.5},
        {"pre_cluster_threshold": 0.4, "iou_threshold": 0.5},
        {"pre_cluster_threshold": 0.2, "iou_threshold": 0.5, "topk": 2},
        {"pre_cluster_threshold": 1.5, "iou_threshold": 0.5},
    ]
    sent = []
    for part in rset.partitions(BLOCK):
        gt = GroundTruthFile(str(rset.ground_truth_paths[part.recording]), (1280, 720))
        (ps,) = score_partition(part, pp, settings, gt, [list(range(len(settings)))])
        sent.append(ps)
    first = sent[0].settings
    assert first[0].source == first[1].source and first[0].cut is not None
    assert first[2].cut is None and first[2].source not in (first[0].source, first[3].source)
    assert sum(len(r) for r in sent[0].sources.values()) < 12 * 4 * 40  # compact: rows, not images
    mixed = sent[4].settings[1]
    sent[4].sources["own"] = sent[4].sources[mixed.source].cut(*mixed.cut)
    sent[4].settings[1] = dataclasses.replace(mixed, source="own", cut=None)
    got = score_partitions(sent)
    for i, setting in enumerate(settings):
        ref = single_process_score(rset, with_setting(pp, setting))
        r = got[i]
        assert (r.map50, r.map50_95, r.num_images, r.num_detections) == (
            ref.map50,
            ref.map50_95,
            ref.num_images,
            ref.num_detections,
        ), setting
        np.testing.assert_equal(r.per_class_ap50, ref.per_class_ap50)
        np.testing.assert_equal(r.per_class_ap50_95, ref.per_class_ap50_95)
    assert got[3].num_detections == 0 and got[0].num_detections > got[1].num_detections > 0


def test_ground_truth_of_other_categories_is_refused_by_name(recordings, pp, tmp_path):
    for f in recordings.glob("cam[01]*"):
        shutil.copy(f, tmp_path / f.name)
    gt = json.loads((tmp_path / "cam1_gt.json").read_text())
    gt["categories"][0]["name"] = "not-" + gt["categories"][0]["name"]
    (tmp_path / "cam1_gt.json").write_text(json.dumps(gt))
    other = dsprobe.open_recordings(tmp_path)
    with pytest.raises(ValueError, match="ground truth of 'cam1' names other categories than"):
        dsprobe.evaluate_set(other, pp, client="sync", progress=False)
    with pytest.raises(ValueError, match="ground truth of 'cam1' names other categories than"):
        load_set_ground_truth(other)


def test_a_folder_of_segment_series_and_single_files(tmp_path):
    """``run-00000.h5, run-00001.h5, ...`` are one recording named ``run``; other files one each."""
    for name, n, seg in (("run", 30, 300_000), ("solo", 5, None)):
        with Recorder(
            tmp_path / f"{name}.h5",
            segment_max_bytes=seg,
            flush_interval_s=0.01,
            block_frames=1,
            images=False,
        ) as rec:
            for k in range(n):
                rec.record(FrameRecord(0, k, layers={"big": np.full(20_000, k, np.float32)}))
    assert len(list(tmp_path.glob("run-*.h5"))) >= 3
    for source in (tmp_path, str(tmp_path / "*.h5"), [tmp_path / "run.h5", tmp_path / "solo.h5"]):
        s = dsprobe.open_recordings(source)
        assert s.names == ["run", "solo"], source
        assert s.frames.groupby("recording").size().to_dict() == {"run": 30, "solo": 5}
        assert len(s.paths["run"]) >= 3


def test_a_set_refuses_recordings_of_incompatible_nvinfer_configs(tmp_path):
    from dsprobe.sample import CONFIG_PATH

    text = CONFIG_PATH.read_text()
    for name, cfg in (
        ("a", text),
        ("b", text.replace("symmetric-padding=1", "symmetric-padding=0")),
    ):
        path = tmp_path / f"{name}.txt"
        path.write_text(cfg)
        with Recorder(tmp_path / f"{name}.h5", nvinfer_config=path, images=False) as r:
            r.record(FrameRecord(0, 0, layers={"output0": np.zeros((8, 2100), np.float32)}))
    with pytest.raises(
        RecordingError, match=r"'a' and 'b' were recorded with incompatible nvinfer"
    ):
        dsprobe.open_recordings(tmp_path)


def test_a_script_without_the_main_guard_is_told_why_the_cluster_did_not_start(tmp_path):
    """Dask's worker processes re-import a script; without `if __name__ == "__main__":` the cluster
    fails with "Nanny failed to start" alone: the error says what to do."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    script = tmp_path / "no_guard.py"
    script.write_text(
        "import dsprobe\n"
        f"rset = dsprobe.open_recordings([{str(root / 'recordings' / 'sample.h5')!r}])\n"
        "pp = dsprobe.Postprocess.from_nvinfer_config(rset.config())\n"
        "dsprobe.replay_set(rset, pp, workers=2)\n"
    )
    res = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert res.returncode != 0
    assert "if __name__ == '__main__':" in res.stderr and "client='sync'" in res.stderr
