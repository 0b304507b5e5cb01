"""The writer's batched row bookkeeping (issue 20, item 5) against a per-frame reference: every table
row and layer row in the file is what a frame-by-frame build of the same records gives, whatever the
block cadence (blocks of 1 frame, of 16, small frames gathered to 1 MiB, flushes cutting chunks in
the middle, whole chunks written directly); a frame that fails half-way leaves nothing behind; the
queue between record() and the writer keeps order, its bound and its wake-ups."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import replace

import h5py
import numpy as np
import pytest

from dsprobe import FrameRecord, ImageRecord, ObjectRecord, Recorder
from dsprobe.recording import datasets
from dsprobe.recording.frame_queue import FrameQueue
from dsprobe.recording.frame_rows import BLOCK_MAX_FRAMES, BLOCK_MIN_BYTES
from dsprobe.recording.segment import Segment, SegmentHeader
from dsprobe.recording.validate import InvalidFrame
from dsprobe.records import UNTRACKED_OBJECT_ID, Classification


def varied_frames(n: int, seed: int = 3) -> list[FrameRecord]:
    """Frames of two GIEs: tiny, medium (156 rows per chunk) and 1.1 MB layers (a chunk per row),
    SGIE objects with layers, crops and classifications, detections, raw images, odd times."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        uid = 2 if i % 7 == 3 else 1
        objects, layers = [], {}
        if uid == 1:
            layers = {
                "tiny": rng.random(3).astype(np.float16),
                "medium": rng.random((84, 20), dtype=np.float32),
            }
            if i % 25 == 0:
                layers["big"] = rng.integers(0, 100, 280_000, dtype=np.int32)
            else:
                layers["big"] = np.full(280_000, i, np.int32)
        else:
            objects = [
                ObjectRecord(
                    (float(k), 2.5, 10.0, 20.0),
                    k,
                    0.125 * k,
                    object_id=500 + k,
                    label=f"obj{k}",
                    parent_index=k - 1,
                    layers={"emb": rng.random(8, dtype=np.float32)},
                    image=ImageRecord(rng.integers(0, 255, (4, 3, 3), np.uint8), (0, 0, 3, 4))
                    if k % 2
                    else None,
                    classifications=[Classification(3, k, k + 1, 0.75, "c")],
                )
                for k in range(1 + i % 3)
            ]
        detections = [
            ObjectRecord((1.0 * j, 2.0, 3.0, 4.0), j % 80, 0.01 * j, label="d" * (j % 4))
            for j in range(i % 5)
        ]
        image = (
            ImageRecord(rng.integers(0, 255, (9, 16, 3), np.uint8), (0.0, 0.0, 16.0, 9.0))
            if i % 2
            else None
        )
        out.append(
            FrameRecord(
                i % 3,
                i,
                pts_ns=i * 1000 if i != 5 else 2**64 - 1,
                unique_id=uid,
                network_size=(64, 48, 3),
                frame_size=(640, 360),
                layers=layers,
                objects=objects,
                detections=detections,
                image=image,
                ntp_timestamp=i,
                batch_id=i % 4,
                pad_index=i % 2,
            )
        )
    return out


def reference_rows(frames: list[FrameRecord]) -> dict[str, object]:
    """What the file must hold, built frame by frame without the writer's code."""
    ref: dict[str, list] = {
        "frames": [],
        "detections": [],
        "objects": [],
        "classifications": [],
    }
    layers: dict[str, list] = {}
    obj_row = det_row = 0
    for fr, f in enumerate(frames):
        lrow = -1
        for name, arr in f.layers.items():
            key = f"layers/{f.unique_id}/{name}"
            layers.setdefault(key, []).append(arr)
            lrow = len(layers[key]) - 1
        for k, o in enumerate(f.objects):
            orow = -1
            for name, arr in o.layers.items():
                key = f"object_layers/{f.unique_id}/{name}"
                layers.setdefault(key, []).append(arr)
                orow = len(layers[key]) - 1
            ref["objects"].append(
                (fr, o.rect, o.class_id, o.confidence, o.object_id, o.parent_index, o.label, orow)
            )
            for c in o.classifications:
                ref["classifications"].append((fr, 0, k, c.unique_component_id, c.class_id))
        for d in f.detections:
            ref["detections"].append(
                (fr, d.rect, d.class_id, d.confidence, d.object_id, d.parent_index, d.label, -1)
            )
        pts = f.pts_ns if f.pts_ns < 2**63 else -1
        ref["frames"].append(
            (f.source_id, f.frame_num, pts, f.unique_id, f.batch_id, f.pad_index, lrow)
            + (obj_row, len(f.objects), det_row, len(f.detections))
        )
        obj_row += len(f.objects)
        det_row += len(f.detections)
    return {"tables": ref, "layers": layers}


def check_against_reference(path, frames: list[FrameRecord]) -> None:
    ref = reference_rows(frames)
    with h5py.File(path, "r") as f:
        assert f.attrs["closed_cleanly"] and f.attrs["frames_committed"] == len(frames)
        t = f["frames"]
        got = list(
            zip(
                *(
                    t[c][()].tolist()
                    for c in (
                        "source_id",
                        "frame_num",
                        "pts_ns",
                        "unique_id",
                        "batch_id",
                        "pad_index",
                        "layer_row",
                        "object_start",
                        "object_count",
                        "detection_start",
                        "detection_count",
                    )
                )
            )
        )
        assert got == [tuple(r) for r in ref["tables"]["frames"]]
        assert (f["frames/network_size"][()] == [64, 48, 3]).all()
        for table in ("objects", "detections"):
            g = f[table]
            rows = ref["tables"][table]
            assert len(g["frame_row"]) == len(rows)
            if not rows:
                continue
            fr, rect, cls, conf, oid, parent, label, lrow = zip(*rows)
            assert g["frame_row"][()].tolist() == list(fr)
            np.testing.assert_array_equal(g["rect"][()], np.array(rect, np.float32))
            assert g["class_id"][()].tolist() == list(cls)
            np.testing.assert_array_equal(g["confidence"][()], np.array(conf, np.float32))
            assert g["object_id"][()].tolist() == list(oid)
            assert g["parent_index"][()].tolist() == list(parent)
            assert [b.decode() for b in g["label"][()]] == list(label)
            assert g["layer_row"][()].tolist() == list(lrow)
        assert UNTRACKED_OBJECT_ID in f["detections/object_id"][()].tolist()
        c = f["classifications"]
        crow = ref["tables"]["classifications"]
        got_c = list(
            zip(
                *(
                    c[k][()].tolist()
                    for k in (
                        "frame_row",
                        "table",
                        "object_index",
                        "unique_component_id",
                        "class_id",
                    )
                )
            )
        )
        assert got_c == crow
        for key, arrays in ref["layers"].items():
            ds = f[key]
            assert ds.shape == (len(arrays), *arrays[0].shape)
            np.testing.assert_array_equal(ds[()], np.stack(arrays))
        n_layer_sets = sum(len(f[g][u]) for g in ("layers", "object_layers") for u in f[g])
        assert n_layer_sets == len(ref["layers"])


@pytest.mark.parametrize(
    "block_frames, pause_every",
    [(1, 0), (16, 0), (16, 9), (4, 5)],
    ids=["blocks-of-1", "blocks-of-16", "flushes-cut-chunks", "small-blocks-and-flushes"],
)
def test_file_matches_a_per_frame_reference(tmp_path, block_frames, pause_every):
    frames = varied_frames(120)
    path = tmp_path / "rec.h5"
    with Recorder(
        path,
        block_frames=block_frames,
        flush_interval_s=0.01,
        drop_when_full=False,
        image_format="raw",
    ) as rec:
        for i, f in enumerate(frames):
            assert rec.record(f)
            if pause_every and i % pause_every == 0:
                time.sleep(0.02)  # a flush lands here: blocks end in the middle of chunks
    st = rec.stats
    assert st["written"] == len(frames) and st["dropped_invalid"] == 0, st
    check_against_reference(path, frames)


def test_small_frames_fill_whole_chunks_written_directly(tmp_path, monkeypatch):
    """1 KB rows: blocks gather to 1 MiB or 256 frames; every whole chunk goes to the file directly
    (no cache copy) and the rows still read back in order, across flushes that cut chunks."""
    cached = []  # layer rows that went through HDF5's chunk cache
    real = datasets.write_rows

    def counting(ds, start, block):
        if ds.name == "/layers/1/emb":
            cached.append((start, len(block)))
        return real(ds, start, block)

    monkeypatch.setattr(datasets, "write_rows", counting)
    arrays = [np.full(256, i, np.float32) for i in range(2000)]
    path = tmp_path / "small.h5"
    with Recorder(path, images=False, drop_when_full=False, flush_interval_s=2.0) as rec:
        for i, a in enumerate(arrays):
            rec.record(FrameRecord(0, i, layers={"emb": a}))
            if i == 700:
                time.sleep(2.5)  # a flush in the middle of a chunk
    with h5py.File(path, "r") as f:
        ds = f["layers/1/emb"]
        np.testing.assert_array_equal(ds[()], np.stack(arrays))
        per_chunk = ds.chunks[0]
    assert per_chunk == 256
    # only the pieces of chunks a flush cut went through the cache; whole chunks went to the file
    assert 0 < sum(n for _, n in cached) < len(arrays) // 2, cached


def test_block_cadence_gathers_small_frames():
    seg_rows = _rows_stub()
    seg_rows.pending_frames, seg_rows.pending_bytes = 16, 16 * 4096
    assert not seg_rows.block_due(16)  # 64 KB: keep gathering
    seg_rows.pending_bytes = BLOCK_MIN_BYTES
    assert seg_rows.block_due(16)
    seg_rows.pending_frames, seg_rows.pending_bytes = BLOCK_MAX_FRAMES, 10
    assert seg_rows.block_due(16)
    seg_rows.pending_frames, seg_rows.pending_bytes = 3, 10 * BLOCK_MIN_BYTES
    assert not seg_rows.block_due(4) and seg_rows.block_due(3)
    seg_rows.pending_frames, seg_rows.pending_bytes = 16, 100_000  # a segment of 400 kB rotates
    assert not seg_rows.block_due(16) and seg_rows.block_due(16, min_bytes=100_000)  # per 100 kB


def _rows_stub():
    from dsprobe.recording.frame_rows import FrameRows

    rows = FrameRows.__new__(FrameRows)
    return rows


def test_a_frame_failing_half_way_leaves_no_row(tmp_path, monkeypatch):
    seg = Segment(tmp_path / "s.h5", SegmentHeader("t", "", "{}", {}, {}, None), 0, 0)
    good = FrameRecord(
        0, 0, layers={"a": np.zeros(3, np.float32)}, detections=[ObjectRecord((0, 0, 1, 1))]
    )
    seg.add(good, 0)
    real = datasets.LayerSet.__init__

    def failing(self, f, group, uid, name, first, compression):
        if name == "b":
            raise OSError("cannot create the dataset")
        real(self, f, group, uid, name, first, compression)

    monkeypatch.setattr(datasets.LayerSet, "__init__", failing)
    bad = FrameRecord(
        0,
        1,
        unique_id=2,
        layers={"a": np.zeros(3, np.float32), "b": np.zeros(3, np.float32)},
        detections=[ObjectRecord((0, 0, 1, 1))] * 3,
        image=ImageRecord(np.zeros((2, 2, 3), np.uint8), (0, 0, 2, 2)),
    )
    with pytest.raises(OSError):
        seg.add(bad, 0)
    rows = seg.rows
    assert rows.pending_frames == 1 and rows.tables["frames"].count == 1
    assert rows.tables["detections"].count == 1 and rows.tables["images"].count == 0
    assert rows.pending_images == [] and rows.image_bytes == 0
    assert all(len(ls.pending) == ls.count for ls in rows.layer_sets.values())
    assert [ls.count for ls in rows.layer_sets.values()] == [1, 0]  # (1, "a") kept, (2, "a") empty
    monkeypatch.setattr(datasets.LayerSet, "__init__", real)
    # the failed frame's layer names were not kept: GIE 2 may still record just "a"
    seg.add(FrameRecord(0, 2, unique_id=2, layers={"a": np.zeros(3, np.float32)}), 0)
    with pytest.raises(InvalidFrame):  # ... and from now on only "a"
        seg.add(FrameRecord(0, 3, unique_id=2, layers={"b": np.zeros(3, np.float32)}), 0)
    seg.write_pending(True)
    seg.commit({})
    seg.close()
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f["frames/frame_num"][()].tolist() == [0, 2]
        assert len(f["detections/frame_row"]) == 1 and len(f["images/frame_row"]) == 0


def test_frame_queue_order_bound_and_wakeups():
    q = FrameQueue(4, wake_at=3)
    for i in range(4):
        q.put_nowait(i)
    with pytest.raises(queue.Full):
        q.put_nowait(99)
    assert [q.pop() for _ in range(5)] == [0, 1, 2, 3, None]
    # the consumer sleeps until wake_at items wait (or its timeout)
    got, woke = [], threading.Event()

    def consumer():
        got.append(q.get(timeout=5.0))
        woke.set()

    t = threading.Thread(target=consumer)
    t.start()
    time.sleep(0.05)
    q.put_nowait("a")
    q.put_nowait("b")
    assert not woke.wait(0.1)  # 2 < wake_at: still asleep
    q.put_nowait("c")
    assert woke.wait(2.0) and got == ["a"]
    t.join()
    assert q.get(timeout=0.01) == "b" and q.pop() == "c" and q.get(timeout=0.01) is None
    # put() waits for room and always wakes the consumer; a waiting producer is woken once the
    # queue is half empty (not at each item taken), or when the consumer goes to sleep
    for i in range(4):
        q.put_nowait(i)
    with pytest.raises(queue.Full):
        q.put("x", timeout=0.05)
    t0 = time.monotonic()
    threading.Timer(0.05, lambda: (q.pop(), q.pop())).start()
    q.put("y", timeout=5.0)
    assert time.monotonic() - t0 < 2.0  # woken, not timed out
    assert [q.pop() for _ in range(3)] == [2, 3, "y"]
    for i in range(4):
        q.put_nowait(i)
    woken = []
    producer = threading.Thread(target=lambda: woken.append(q.put("z", timeout=5.0)))
    producer.start()
    time.sleep(0.05)
    assert q.pop() == 0 and producer.is_alive()  # 3 left: above half, the producer sleeps on
    assert [q.pop() for _ in range(3)] == [1, 2, 3]
    producer.join(2.0)
    assert woken == [None] and q.pop() == "z"
    for i in range(4):
        q.put_nowait(i)
    producer = threading.Thread(target=lambda: q.put("w", timeout=5.0))
    producer.start()
    time.sleep(0.05)
    assert [q.get(timeout=1.0) for _ in range(4)] == [0, 1, 2, 3]
    assert q.get(timeout=2.0) == "w"  # the sleeping consumer woke the producer, then got its item
    producer.join(2.0)


def plain_mix(n: int, seed: int = 5) -> list[FrameRecord]:
    """Frames the writer's fast path takes (frame-level layers only, of shapes and dtypes already
    seen) mixed with frames it must hand to the general path: a GIE's first frame, frames with
    detections, objects or a picture, frames without layers, layers that change shape, dtype or
    names (rejected), big-endian arrays, 0-d, bool and int64 layers, times past int64."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        uid = (1, 1, 1, 2, 1, 3)[i % 6]
        if uid == 1:
            layers = {
                "emb": rng.random(40, dtype=np.float32),
                "score": np.array(i / 7, np.float16),  # 0-d
                "mask": rng.random((3, 5)) > 0.5,
            }
            if i % 11 == 4:
                layers["emb"] = layers["emb"].astype(">f4")  # converted by check_frame
        elif uid == 2:
            layers = {"ids": rng.integers(-(2**62), 2**62, 6, dtype=np.int64)}
            if i % 4 == 3:
                layers = {}  # a frame of GIE 2 without layers
        else:
            layers = {"big": np.full((300, 300), i, np.float32)}  # one chunk per row
        detections = [ObjectRecord((1.0, 2.0, 3.0, 4.0), 2, 0.5)] if i % 13 == 6 else []
        image = ImageRecord(np.zeros((2, 3, 3), np.uint8), (0, 0, 3, 2)) if i % 17 == 8 else None
        if i % 23 == 10 and layers:  # a changed shape, dtype or name set: rejected either way
            bad = dict(layers)
            key = next(iter(bad))
            bad[key] = (
                np.zeros(41, np.float32)
                if i % 3 == 0
                else bad[key].astype(np.float64)
                if i % 3 == 1
                else bad[key]
            )
            if i % 3 == 2:
                bad["extra"] = np.zeros(2, np.float32)
            layers = bad
        if uid == 1 and i % 9 == 1:  # a strided view: valid, written as its values
            layers["emb"] = rng.random(80, dtype=np.float32)[::2]
        fields: dict = {}
        if i % 37 == 20:  # fields check_frame rejects (the unchecked fast path must not take them)
            fields = [
                {"source_id": -1},
                {"batch_id": 2**31},
                {"frame_num": 1.5},
                {"network_size": (640, 640)},
                {"pts_ns": True},
                {"layers": {**layers, next(iter(layers or {"x": 0})): [1.0, 2.0]}},
                {"layers": {k: np.float16(1) for k in layers or ("x",)}},
                {"unique_id": 2**40},
            ][(i // 37) % 8]
        out.append(
            FrameRecord(
                i % 4,
                i,
                pts_ns=2**64 - 1 if i % 19 == 7 else i * 40_000_000,
                unique_id=uid,
                network_size=(640, 640, 3) if uid == 1 else (224, 224, 3),
                frame_size=[1920, 1080] if i % 29 == 9 else (1280, 720),  # a list: general checks
                layers=layers,
                detections=detections,
                image=image,
                ntp_timestamp=2**63 + i if i % 31 == 5 else i,
                batch_id=i % 8,
                pad_index=i % 3,
            )
        )
        if fields:
            out[-1] = replace(out[-1], **fields)
    return out


def write_segment(path, frames: list[FrameRecord], cuts: set[int]) -> list[int]:
    """``frames`` added to one segment as the writer thread does (the fast path, else checked and
    added; recv_ns = 1000 + i),
    block writes after the frames in ``cuts`` (a flush after every third cut); the indices of the
    rejected frames."""
    from dsprobe.recording.validate import check_frame

    seg = Segment(path, SegmentHeader("t", "", "{}", {}, {}, None), 0, 0)
    rejected = []
    for i, f in enumerate(frames):
        try:
            if not seg.add_plain(f, 1000 + i):  # as WriteLoop._take does
                seg.add(check_frame(f), 1000 + i)
        except InvalidFrame:
            rejected.append(i)
        if i in cuts:
            seg.write_pending(tables=i % 3 == 0)
            if i % 3 == 0:
                seg.commit({})
    seg.write_pending(True)
    seg.commit({})
    seg.close()
    return rejected


def test_fast_path_writes_what_the_general_path_writes(tmp_path, monkeypatch):
    """The writer's fast path for plain frames (FrameRows.add_plain) against the general path
    alone, on the same frames: every dataset of the two files is equal (names, dtypes, shapes,
    chunks, values), the same frames are rejected, and the frames table holds exactly the frames'
    fields; the fast path did take most frames."""
    from dsprobe.recording.frame_rows import FrameRows

    frames = plain_mix(700)
    cuts = set(np.random.default_rng(1).choice(700, 60, replace=False).tolist())
    taken = []
    real = FrameRows.add_plain

    def counting(self, frame, recv_ns):
        ok = real(self, frame, recv_ns)
        taken.append(ok)
        return ok

    monkeypatch.setattr(FrameRows, "add_plain", counting)
    fast = write_segment(tmp_path / "fast.h5", frames, cuts)
    assert sum(taken) > 400  # most frames went the fast way (439 of 700)
    monkeypatch.setattr(FrameRows, "add_plain", lambda self, frame, recv_ns: False)
    general = write_segment(tmp_path / "general.h5", frames, cuts)
    assert fast == general and 30 < len(fast) < 80
    assert {i for i in range(700) if i % 37 == 20} <= set(fast)  # the bad fields: all rejected

    def datasets_of(path) -> dict:
        out = {}
        with h5py.File(path, "r") as f:
            f.visititems(
                lambda name, obj: (
                    out.__setitem__(
                        name,
                        (obj.dtype, obj.shape, obj.chunks, obj[()], dict(obj.attrs)),
                    )
                    if isinstance(obj, h5py.Dataset)
                    else None
                )
            )
        return out

    a, b = datasets_of(tmp_path / "fast.h5"), datasets_of(tmp_path / "general.h5")
    assert a.keys() == b.keys() and "layers/1/score" in a and "layers/3/big" in a
    for name in a:
        (dt, shape, chunks, values, attrs), (dt2, shape2, chunks2, values2, attrs2) = (
            a[name],
            b[name],
        )
        assert (dt, shape, chunks, attrs.keys()) == (dt2, shape2, chunks2, attrs2.keys()), name
        np.testing.assert_array_equal(values, values2, err_msg=name)
        assert values.tobytes() == values2.tobytes(), name
    kept = [f for i, f in enumerate(frames) if i not in set(fast)]
    t = {k[len("frames/") :]: v[3] for k, v in a.items() if k.startswith("frames/")}
    assert len(t["frame_num"]) == len(kept)
    expect = {
        "source_id": [f.source_id for f in kept],
        "frame_num": [f.frame_num for f in kept],
        "pts_ns": [f.pts_ns if f.pts_ns < 2**63 else -1 for f in kept],
        "ntp_timestamp": [f.ntp_timestamp if f.ntp_timestamp < 2**63 else -1 for f in kept],
        "unique_id": [f.unique_id for f in kept],
        "batch_id": [f.batch_id for f in kept],
        "pad_index": [f.pad_index for f in kept],
        "network_size": [list(f.network_size) for f in kept],
        "frame_size": [list(f.frame_size) for f in kept],
        "recv_time_ns": [1000 + i for i in range(len(frames)) if i not in set(fast)],
        "object_count": [0] * len(kept),
        "detection_count": [len(f.detections) for f in kept],
        "detection_start": np.cumsum([0] + [len(f.detections) for f in kept])[:-1].tolist(),
    }
    for col, values in expect.items():
        assert t[col].tolist() == values, col
    rows = {}
    layer_rows = []
    for f in kept:
        if f.layers:
            rows[f.unique_id] = rows.get(f.unique_id, -1) + 1
        layer_rows.append(rows[f.unique_id] if f.layers else -1)
    assert t["layer_row"].tolist() == layer_rows
    for uid in (1, 2, 3):
        for name in {n for f in kept if f.unique_id == uid for n in f.layers}:
            arrs = [f.layers[name] for f in kept if f.unique_id == uid and f.layers]
            got = a[f"layers/{uid}/{name}"][3]
            assert got.dtype == arrs[0].dtype.newbyteorder("=")
            np.testing.assert_array_equal(got, np.stack(arrs))
