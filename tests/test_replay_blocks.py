"""Whole-recording replay (``run_recording``, ``detections_by_row``, ``detections_frame``) equals the
per-frame path: ``pp(rec[row])`` per row, one ``to_dataframe`` per frame and one ``pd.concat``
(dtypes, column order and attrs included), over blocks of every size, reused block buffers, empty
frames, frames with no detections, several GIEs, SGIE objects, row subsets, segments, and files
read from disk or from the page cache."""

import os

import numpy as np
import pandas as pd
import pytest

from dsprobe import Detections, FrameRecord, ObjectRecord, Postprocess, Recorder, open_recording
from dsprobe.postprocess import replay
from dsprobe.postprocess.replay import DetectionTable, detections_frame

LABELS = ["car", "person", "bike"]
XYXY = [
    {"kind": "decode", "name": "xyxy_score_class", "params": {"score_threshold": 0.5}},
    {"kind": "scale", "name": "nvinfer"},
]


def boxes_layer(rng: np.random.Generator, n: int, hits: int) -> np.ndarray:
    """``(n, 6)`` x1 y1 x2 y2 score class in network pixels; ``hits`` rows score above 0.5."""
    a = np.zeros((n, 6), np.float32)
    a[:, :2] = rng.uniform(0, 200, (n, 2))
    a[:, 2:4] = a[:, :2] + rng.uniform(4, 60, (n, 2))
    a[:, 4] = rng.uniform(0, 0.4, n)
    a[:hits, 4] = rng.uniform(0.6, 1.0, hits)
    a[:, 5] = rng.integers(0, 4, n)  # class 3 has no label: "3"
    return a


def reference_frame(pp: Postprocess, rec, rows) -> pd.DataFrame:
    """The per-frame path as it was: one DataFrame per frame, then one concat."""
    parts = []
    f = rec.frames
    for r in rows:
        df = pp(rec[int(r)]).to_dataframe(pp.labels or None)
        df.insert(0, "row", int(r))
        df.insert(1, "source_id", int(f["source_id"].iloc[int(r)]))
        df.insert(2, "frame_num", int(f["frame_num"].iloc[int(r)]))
        parts.append(df)
    return pd.concat(parts, ignore_index=True)


def assert_same_frame(got: pd.DataFrame, want: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(got, want, check_dtype=True, check_exact=True)
    assert list(got.columns) == list(want.columns) and got.attrs == want.attrs
    assert isinstance(got.index, pd.RangeIndex)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Segments holding two PGIEs (uid 1: 40-row layer, uid 3: 25-row layer of the same name), an
    SGIE (uid 2: per-object layers of the same name, some objects without tensors, some frames
    without objects), frames where nothing scores above the threshold, and frames with no tensors."""
    path = tmp_path_factory.mktemp("replay") / "mixed.h5"
    rng = np.random.default_rng(7)
    with Recorder(
        path, images=False, segment_max_bytes=60_000, flush_interval_s=0.01, block_frames=1
    ) as rec:
        for n in range(60):
            kind = n % 6
            size, net = ((1280, 720), (320, 320, 3)) if n % 4 else ((640, 480), (256, 256, 3))
            if kind in (0, 1, 4):
                hits = 0 if n % 9 == 0 else int(rng.integers(1, 6))
                uid, rows = (1, 40) if kind != 4 else (3, 25)
                frame = FrameRecord(
                    n % 3,
                    n,
                    unique_id=uid,
                    network_size=net,
                    frame_size=size,
                    layers={"out": boxes_layer(rng, rows, hits)},
                )
            elif kind in (2, 5):
                objs = [
                    ObjectRecord(
                        rect=(10.0 * k, 5.0 * k, 64, 32),
                        layers={} if k == 1 else {"out": boxes_layer(rng, 3, int(k % 3 != 2))},
                    )
                    for k in range(n % 4)
                ]
                frame = FrameRecord(
                    n % 3, n, unique_id=2, network_size=(64, 32, 3), frame_size=size, objects=objs
                )
            else:  # no tensors at all
                frame = FrameRecord(n % 3, n, unique_id=1, network_size=net, frame_size=size)
            rec.record(frame)
    r = open_recording(path)  # usually several segments (rotation follows the writer's flushes;
    # test_block_reads covers reads across segments deterministically)
    yield r
    r.close()


def drop_page_cache(rec) -> None:
    for p in rec.paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


@pytest.mark.parametrize("block_bytes", [replay.BLOCK_BYTES, 1, 2000])
@pytest.mark.parametrize("batch", [1, 7, 32])
def test_replay_equals_the_per_frame_path(mixed, monkeypatch, block_bytes, batch):
    monkeypatch.setattr(replay, "BLOCK_BYTES", block_bytes)
    r = mixed
    pp = Postprocess(XYXY, labels=LABELS)
    f = r.frames
    everything = np.flatnonzero(((f["layer_row"] >= 0) | (f["object_count"] > 0)).to_numpy())
    rng = np.random.default_rng(batch)
    subsets = {
        "default": None,
        "uid 1": 1,
        "uid 2": 2,
        "uid 3": 3,
        "shuffled": rng.permutation(everything),
        "with empty frames and repeats": np.r_[5, 3, 11, 3, 0, 17, 5, 23],
        "one": [4],
    }
    for what, sub in subsets.items():
        kw = {"unique_id": sub} if isinstance(sub, int) else {"rows": sub}
        rows = (
            everything
            if sub is None
            else everything[f["unique_id"].to_numpy()[everything] == sub]
            if isinstance(sub, int)
            else sub
        )
        by_row = pp.detections_by_row(r, batch=batch, **kw)
        assert list(by_row) == list(dict.fromkeys(int(x) for x in rows)), what
        for x in rows:
            assert by_row[int(x)].equals(pp(r[int(x)])), (what, x)
        want = reference_frame(pp, r, list(dict.fromkeys(int(x) for x in rows)))
        assert_same_frame(pp.run_recording(r, batch=batch, **kw), want)
        assert_same_frame(detections_frame(r, by_row, pp.labels), want)
    # the data the replay covered: no tensor frames only when asked for, zero-detection frames
    assert (f["layer_row"] < 0).any() and (f["object_count"] == 0).any()
    assert any(len(pp(r[int(x)])) == 0 for x in everything)


def test_replay_from_disk_equals_replay_from_the_page_cache(mixed):
    pp = Postprocess(XYXY, labels=LABELS)
    drop_page_cache(mixed)
    cold = pp.run_recording(mixed)
    cold_rows = pp.detections_by_row(mixed, unique_id=1)
    warm = pp.run_recording(mixed)
    assert_same_frame(cold, warm)
    assert all(d.equals(pp(mixed[r])) for r, d in cold_rows.items())


def test_a_decoder_that_returns_views_of_its_input_keeps_its_results(mixed, monkeypatch):
    """A block buffer is reused only while no result views it."""
    monkeypatch.setattr(replay, "BLOCK_BYTES", 2000)  # a block of a few frames, many blocks

    def passthrough(layers, ctx):
        a = layers["out"]
        return Detections(a[:, :4], a[:, 4], a[:, 5].astype(np.int32), "network")

    pp = Postprocess([{"kind": "decode", "name": passthrough}])
    by_row = pp.detections_by_row(mixed, unique_id=1, batch=3)
    bases = [d.boxes.base for d in by_row.values()]
    assert all(isinstance(b, np.ndarray) for b in bases)  # views of the block buffers
    assert len({id(b) for b in bases}) < len(bases)  # blocks of several frames
    for x, d in by_row.items():
        assert d.equals(pp(mixed[x]))
    assert_same_frame(
        pp.run_recording(mixed, unique_id=1, batch=3),
        reference_frame(pp, mixed, list(by_row)),
    )


def test_keypoints_and_object_ids_columns_match_the_per_frame_frame(mixed):
    """Frames of different kinds (keypoints or not, object ids or not, empty or not) are kept apart
    and joined once, so the columns and dtypes are what one concat per frame gives."""

    def with_keypoints(layers, ctx):
        a = layers["out"]
        keep = a[:, 4] > 0.5
        k = np.repeat(a[keep, None, :3], 2, axis=1)
        return Detections(
            a[keep, :4].copy(), a[keep, 4], a[keep, 5].astype(np.int32), "network", keypoints=k
        )

    pp = Postprocess([{"kind": "decode", "name": with_keypoints}], labels=LABELS)
    rows = list(pp.detections_by_row(mixed))
    got = pp.run_recording(mixed)
    assert_same_frame(got, reference_frame(pp, mixed, rows))
    assert "num_keypoints" in got.columns and "object_id" in got.columns
    frame = pd.DataFrame({"source_id": [0, 1, 2], "frame_num": [10, 11, 12]})
    rec = type("Rec", (), {"frames": frame})()
    dets = {
        2: Detections(np.ones((2, 4)), [0.5, 0.6], [0, 7], "frame", object_ids=[4, 5]),
        0: Detections.empty("frame"),
        1: Detections(np.zeros((1, 4)), [0.9], [1], "frame"),
    }
    parts = []
    for r, d in dets.items():
        df = d.to_dataframe(LABELS)
        df.insert(0, "row", r)
        df.insert(1, "source_id", int(frame["source_id"].iloc[r]))
        df.insert(2, "frame_num", int(frame["frame_num"].iloc[r]))
        parts.append(df)
    assert_same_frame(detections_frame(rec, dets, LABELS), pd.concat(parts, ignore_index=True))
    table = DetectionTable(rec, LABELS, order=np.array([1, 2, 0]))
    for r, d in dets.items():
        table.add(r, d)
    assert table.frame()["row"].tolist() == [1, 2, 2]


def test_no_frames_gives_the_columns_only(mixed):
    pp = Postprocess(XYXY, labels=LABELS)
    df = pp.run_recording(mixed, rows=[])
    assert len(df) == 0 and list(df.columns) == list(replay.FRAME_COLUMNS)
    assert pp.detections_by_row(mixed, rows=[]) == {}
