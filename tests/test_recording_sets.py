"""Recording sets on Dask: a 2-process LocalCluster gives exactly what one process gives (same
detections bit for bit, same mAP from merged per-partition match tables, same search table and best
setting); failures name their partition and keep the rest; sets refuse to mix incompatible recordings."""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd
import pytest

import dsprobe
from dsprobe import FrameRecord, Recorder
from dsprobe.analysis.evaluate import GroundTruth, evaluate, frame_image_id, load_ground_truth
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
    from dsprobe.reference.recorder import record_onnx
    from dsprobe.sample import CONFIG_PATH, MUXER_SIZE, make_videos

    root = tmp_path_factory.mktemp("set")
    for k, seed in enumerate((11, 12, 13)):
        v = make_videos(root / f"v{k}", seconds=2.0, seeds=(seed,))
        out = root / "recs" / f"cam{k}.h5"
        record_onnx(v.paths, CONFIG_PATH, None, out, muxer=MUXER_SIZE, batch=2, progress=False)
        out.with_name(f"cam{k}_gt.json").write_text(v.gt_json.read_text())
    return root / "recs"


@pytest.fixture(scope="module")
def client():
    """The 2-process LocalCluster every Dask test here runs on."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
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
    assert r.per_class_ap50 == ref.per_class_ap50 and r.per_class_ap50_95 == ref.per_class_ap50_95
    for name, (rec_, prec) in ref.pr_curves.items():
        assert np.array_equal(r.pr_curves[name][0], rec_) and np.array_equal(
            r.pr_curves[name][1], prec
        )
    assert 0.3 < r.map50 < 1.0 and r.failures == []


def test_search_on_two_workers_equals_one_process(rset, pp, client):
    res = dsprobe.search_set(
        rset, pp, GRID, client=client, block_frames=BLOCK, chunks=3, progress=False
    )
    assert len(res.table) == 6 and res.failures == []
    for _, row in res.table.iterrows():
        ref = single_process_score(rset, with_setting(pp, {k: row[k].item() for k in GRID}))
        assert (row["map50"], row["map50_95"], row["detections"]) == (
            ref.map50,
            ref.map50_95,
            ref.num_detections,
        )
    in_process = dsprobe.search_set(rset, pp, GRID, client="sync", block_frames=50, progress=False)
    pd.testing.assert_frame_equal(res.table, in_process.table, check_exact=True)
    assert res.best_params == in_process.best_params
    assert res.best.to_dict() == with_setting(pp, res.best_params).to_dict()


def test_a_one_recording_set_searches_like_search(rset, pp):
    name = rset.names[1]
    one = dsprobe.open_recordings([rset.paths[name][0]])
    res = dsprobe.search_set(one, pp, GRID, client="sync", block_frames=BLOCK, progress=False)
    with one.open(name) as rec:
        gt = load_ground_truth(one.ground_truth_paths[name], frame_size=(1280, 720))
        ref = search(pp.decode_recording(rec), gt, GRID)
    pd.testing.assert_frame_equal(res.table, ref.table, check_exact=True)
    assert res.best_params == ref.best_params


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
