"""The writer process's shared-memory ring (``writer="process"``, issue 20 item 6): the same HDF5
content as the writer thread for the same frames (every dataset compared), through a ring small
enough to go round many times; a full ring drops and counts, never waits; no shared memory is left
behind (no mapping in the caller, nothing in /dev/shm)."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import h5py
import numpy as np
from test_recording_blocks import varied_frames
from test_recording_writer_process import counters_add_up

from dsprobe import FrameRecord, ImageRecord, Recorder, open_recording
from dsprobe.recording.shm_ring import CTL_BYTES, Consumer, Producer, Ring, make_memory

#: attributes that differ between two recordings of the same frames (time, host, ids, options)
VOLATILE_ATTRS = {"created", "recording_id", "stats", "recorder_options", "host"}


def contents(path: Path) -> dict[str, object]:
    """Every dataset (values, dtype, shape, chunks) and attribute of the file, receive times aside."""
    out: dict[str, object] = {}

    def visit(name: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            if name.endswith("recv_time_ns"):  # when record() got the frame: not the same run
                out[name] = f"rows: {obj.shape}"
                return
            out[name] = (obj.dtype, obj.shape, obj.chunks, obj[()])
        for k, v in obj.attrs.items():
            out[f"{name}@{k}"] = v

    with h5py.File(path, "r") as f:
        for k, v in f.attrs.items():
            if k not in VOLATILE_ATTRS:
                out[f"@{k}"] = v
        f.visititems(visit)
    return out


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys(), set(a) ^ set(b)
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, tuple):
            assert x[:3] == y[:3], k
            np.testing.assert_array_equal(x[3], y[3], err_msg=k)
        else:
            np.testing.assert_array_equal(x, y, err_msg=k)


def odd_frames() -> list[FrameRecord]:
    """varied_frames plus what takes other paths through the ring: big-endian, Fortran-order and
    non-contiguous arrays, RGBA images, records with an attribute of their own (pickled whole,
    arrays still placed in the ring), records whose fields were deleted and set again."""
    frames = varied_frames(150)
    for i in range(0, 150, 7):
        f = frames[i]
        if "medium" in f.layers:
            m = f.layers["medium"]
            f.layers["medium"] = m.astype(">f4") if i % 2 else np.asfortranarray(m)
            f.layers["tiny"] = np.concatenate([f.layers["tiny"]] * 2)[::2]  # a strided view
        if f.image is not None:
            rgba = np.dstack([f.image.data, np.full(f.image.data.shape[:2], 7, np.uint8)])
            f.image = ImageRecord(rgba, f.image.rect)
    for i in range(1, 150, 11):
        frames[i].note = "extra"
    for i in range(2, 150, 13):  # fields set again after a del: __dict__ in another order
        f = frames[i]
        layers, image = f.layers, f.image
        del f.layers, f.image
        f.image, f.layers = image, layers
    return frames


def record_all(path: Path, frames: list[FrameRecord], **options: object) -> dict:
    with Recorder(path, drop_when_full=False, flush_interval_s=0.05, **options) as rec:
        for f in frames:
            assert rec.record(f)
    return rec.stats


def test_ring_writes_the_same_file_as_the_thread(tmp_path):
    frames = odd_frames()
    for image_format in ("jpeg", "raw"):
        thread = tmp_path / f"thread-{image_format}.h5"
        ring = tmp_path / f"ring-{image_format}.h5"
        st_t = record_all(thread, frames, image_format=image_format)
        # 3 MiB: the 1.1 MB layers go round the ring ~60 times
        st_r = record_all(ring, frames, image_format=image_format, writer="process", ring_mib=3)
        assert st_t["written"] == st_r["written"] == 150, (st_t, st_r)
        assert counters_add_up(st_r) and st_r["queued"] == 0
        assert_same(contents(thread), contents(ring))
    with open_recording(ring) as r:
        assert r[7].image.shape == (9, 16, 3)  # the RGBA image: alpha dropped, as the thread does
        np.testing.assert_array_equal(r[7].image, frames[7].image.data[:, :, :3])


def test_a_full_ring_drops_and_counts_never_waits(tmp_path, caplog):
    path = tmp_path / "full.h5"
    rec = Recorder(path, writer="process", images=False, ring_mib=1, flush_interval_s=0.05)
    kept = []
    for n in range(60):  # 300 KB a frame, as fast as the loop goes: the 1 MiB ring fills
        if rec.record(FrameRecord(0, n, layers={"x": np.full(75_000, n, np.float32)})):
            kept.append(n)
    rec.close()
    st = rec.stats
    assert st["dropped_queue_full"] == 60 - len(kept) > 0, st
    assert st["written"] == len(kept) > 0 and counters_add_up(st) and st["queued"] == 0, st
    with open_recording(path) as r:
        np.testing.assert_array_equal(r.read_layer("x")[:, 0], kept)
    # one warning, naming both limits a frame can hit and the one to raise for big frames
    (msg,) = [r.getMessage() for r in caplog.records if "dropping frames" in r.getMessage()]
    assert "ring_mib=1" in msg and "queue_size=64" in msg and "raise ring_mib" in msg, msg


def test_frames_beyond_queue_size_are_dropped_as_a_full_queue(tmp_path):
    path = tmp_path / "q.h5"
    rec = Recorder(path, writer="process", images=False, queue_size=4, flush_interval_s=0.05)
    accepted = sum(rec.record(FrameRecord(0, n, layers={"x": np.zeros(4)})) for n in range(400))
    rec.close()
    st = rec.stats
    assert st["dropped_queue_full"] == 400 - accepted > 0 and st["written"] == accepted, st
    assert counters_add_up(st) and st["queued"] == 0


def ring_mappings() -> list[str]:
    with open("/proc/self/maps") as f:
        return [line for line in f if "dsprobe-ring" in line]


def shm_names() -> set[str]:
    return set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()


def test_no_shared_memory_left_behind(tmp_path):
    before = shm_names()
    rec = Recorder(tmp_path / "m.h5", writer="process", images=False, ring_mib=2)
    assert ring_mappings()  # the ring is mapped here while the recorder runs...
    assert shm_names() == before  # ...and has no name in /dev/shm (a memfd)
    for n in range(50):
        rec.record(FrameRecord(0, n, layers={"x": np.zeros(1000)}))
    pid = rec.writer_pid
    rec.close()
    gc.collect()
    assert not ring_mappings()  # unmapped at close
    assert not os.path.exists(f"/proc/{pid}")  # the writer process is gone, and its mapping
    assert shm_names() == before


def test_views_are_given_back_in_order_when_they_die():
    """The consumer frees a message only when every message before it is free too."""
    nbytes = CTL_BYTES + (1 << 16)
    fd = make_memory(nbytes)
    ring = Ring(fd, nbytes)
    os.close(fd)
    prod, cons = Producer(ring, 100, lambda: None), Consumer(ring)
    for n in range(3):
        assert prod.put(FrameRecord(0, n, layers={"x": np.full(1000, n, np.float32)}), n)
    a, b, c = (cons.take()[0] for _ in range(3))
    assert [f.layers["x"][0] for f in (a, b, c)] == [0, 1, 2]
    assert cons.held_bytes() == prod.write
    del b
    assert cons.held_bytes() == prod.write  # the first is still held: nothing is freed
    del a
    assert 0 < cons.held_bytes() < prod.write  # the first two are freed, the third is not
    x = c.layers["x"]
    del c
    assert cons.held_bytes() > 0  # a view of one of its arrays still holds the third
    del x
    assert cons.held_bytes() == 0
    # the ring goes round: what was freed is written again, and read back right
    for n in range(3, 200):
        assert prod.put(FrameRecord(0, n, layers={"x": np.full(1000, n, np.float32)}), n)
        f, ns = cons.take()
        assert ns == n and (f.layers["x"] == n).all()
    assert prod.write > 2 * ring.size


def test_the_probe_copies_into_the_ring_and_writes_what_the_thread_writes(tmp_path):
    """attach_recorder's copies go straight into the ring (Recorder.frame_memory): RGBA images,
    PGIE layers, SGIE layers and crops of two GIEs, through a ring that goes round many times;
    the file is the thread writer's, dataset for dataset."""
    import pyds_double as pyds

    from dsprobe.deepstream import attach_recorder

    mux = (640, 360)
    rng = np.random.default_rng(4)
    pgie = pyds.GieOutput(1, {"out": (0, (84, 2100))}, pyds.NvDsInferNetworkInfo(640, 640, 3))
    sgie = pyds.GieOutput(2, {"emb": (0, (128,)), "attr": (3, (3,))})
    batches = []
    for k in range(40):
        frames = []
        for b in range(2):
            fm = {"k": k, "b": b, "pgie": {"out": rng.random((84, 2100), dtype=np.float32)}}
            fm["objs"] = [
                (
                    (10.0 * j + b, 20.0, 50.0, 40.5),
                    {
                        "emb": rng.random(128, dtype=np.float32),
                        "attr": rng.integers(0, 9, 3, np.int32),
                    },
                )
                for j in range(k % 3)
            ]
            fm["img"] = rng.integers(0, 255, (mux[1], mux[0], 3), dtype=np.uint8)
            frames.append(fm)
        batches.append(frames)

    def run(path, **options):
        with pyds.installed():
            pipe = pyds.Pipeline(mux)
            rec = Recorder(path, drop_when_full=False, flush_interval_s=0.05, **options)
            attach_recorder(pipe.pad, rec, muxer_size=mux, object_crops=True, jetson=False)
            for frames in batches:
                metas, images = [], {}
                for f in frames:
                    fm = pipe.frame(0, f["k"] * 2 + f["b"], f["b"], mux)
                    fm._user.append(pipe.tensor_meta(pgie, f["pgie"]))
                    for j, (rect, layers) in enumerate(f["objs"]):
                        om = pipe.obj(rect, class_id=j, object_id=100 + j, label="o")
                        om._user.append(pipe.tensor_meta(sgie, layers))
                        fm._objects.append(om)
                    metas.append(fm)
                    images[f["b"]] = f["img"]
                pipe.push(metas, images)
            rec.close()
        return rec

    thread = run(tmp_path / "thread.h5")
    ring = run(tmp_path / "ring.h5", writer="process", ring_mib=4)  # ~1.6 MB a frame
    st = ring.stats
    assert st["written"] == thread.stats["written"] == 80 + 2 * sum(k % 3 > 0 for k in range(40))
    assert counters_add_up(st) and st["queued"] == 0
    assert ring._process.producer.in_place > 40  # most frames went without a second copy
    assert_same(contents(tmp_path / "thread.h5"), contents(tmp_path / "ring.h5"))


#: the muxer size of the probe tests' pipelines
MUX = (320, 180)


def ring_probe(pyds, path: Path, ring_mib: int):
    """A pyds-double pipeline of one GIE (layer ``out``, 84x8400 float32) with a probe recording
    into a process writer with a ``ring_mib`` ring: (pipeline, GIE, Recorder, probe handle)."""
    from dsprobe.deepstream import attach_recorder

    gie = pyds.GieOutput(1, {"out": (0, (84, 8400))})
    pipe = pyds.Pipeline(MUX)
    rec = Recorder(path, writer="process", ring_mib=ring_mib)
    return pipe, gie, rec, attach_recorder(pipe.pad, rec, muxer_size=MUX, jetson=False)


def test_a_probe_into_a_full_ring_drops_counts_and_never_raises(tmp_path):
    """The ring (4 MiB) holds one frame (2.8 MB + image) and batches of two come as fast as the
    loop goes: the probe's copies fall back to its own memory when the ring is full, those frames
    are dropped as a full queue, counted, nothing raises, and every frame written is right."""
    import pyds_double as pyds

    with pyds.installed():
        pipe, gie, rec, handle = ring_probe(pyds, tmp_path / "f.h5", ring_mib=4)
        mux = MUX
        img = np.zeros((mux[1], mux[0], 3), np.uint8)
        for k in range(30):
            frames = []
            for b in range(2):
                fm = pipe.frame(b, k, b, mux)
                out = np.full((84, 8400), 2 * k + b, np.float32)
                fm._user.append(pipe.tensor_meta(gie, {"out": out}))
                frames.append(fm)
            pipe.push(frames, {0: img, 1: img})
        rec.close()
    st, probe = rec.stats, handle.stats
    assert st["received"] == 60 and st["written"] + st["dropped_queue_full"] == 60, st
    assert st["written"] > 0 and st["dropped_queue_full"] > 0, st
    assert counters_add_up(st) and st["queued"] == 0, st
    assert probe["frames"] == 60 and probe["error_count"] == 0, probe
    assert probe["frames_recorded"] == st["written"]
    with open_recording(tmp_path / "f.h5") as r:
        got = r.read_layer("out")
        for i in range(len(r)):
            f = r[i]
            assert (got[i] == 2 * f.frame_num + f.source_id).all()


def test_a_frame_bigger_than_the_ring_is_refused_by_name_even_when_waiting(tmp_path):
    """drop_when_full=False waits for room; a frame bigger than the whole ring never fits, so it
    is dropped at once, counted, and the error names ring_mib (no endless wait)."""
    rec = Recorder(
        tmp_path / "b.h5", writer="process", images=False, ring_mib=1, drop_when_full=False
    )
    assert rec.record(FrameRecord(0, 0, layers={"x": np.zeros(100_000, np.float32)}))
    assert not rec.record(FrameRecord(0, 1, layers={"x": np.zeros(400_000, np.float32)}))
    rec.close()
    st = rec.stats
    assert st["dropped_invalid"] == 1 and st["written"] == 1 and counters_add_up(st), st
    assert "ring_mib" in st["last_error"]
    # the same through the probe: its copies fall back to its own memory, nothing raises
    import pyds_double as pyds

    with pyds.installed():
        pipe, gie, rec, handle = ring_probe(pyds, tmp_path / "p.h5", ring_mib=1)
        mux = MUX
        fm = pipe.frame(0, 0, 0, mux)
        fm._user.append(pipe.tensor_meta(gie, {"out": np.zeros((84, 8400), np.float32)}))
        pipe.push([fm], {0: np.zeros((mux[1], mux[0], 3), np.uint8)})
        rec.close()
    assert rec.stats["dropped_invalid"] == 1 and "ring_mib" in rec.stats["last_error"]
    assert handle.stats["error_count"] == 0


def test_threads_recording_at_once_through_a_small_ring(tmp_path):
    """Two threads call record() while a third copies into ring memory as a probe does
    (frame_memory): every frame arrives, each with its own bytes, through a ring that goes round
    many times."""
    import threading

    path = tmp_path / "t.h5"
    rec = Recorder(path, writer="process", images=False, drop_when_full=False, ring_mib=2)

    def plain(source: int) -> None:
        for n in range(150):
            rec.record(
                FrameRecord(source, n, layers={"x": np.full(30_000, source * 1000 + n, np.int32)})
            )

    def probe_like() -> None:
        for n in range(150):
            with rec.frame_memory() as alloc:
                x = alloc((30_000,), np.int32)
                if x is None:  # no room now: its own memory, as the probe does
                    x = np.empty(30_000, np.int32)
                x[:] = 2000 + n
                rec.record(FrameRecord(2, n, layers={"x": x}))

    threads = [threading.Thread(target=plain, args=(s,)) for s in (0, 1)]
    threads.append(threading.Thread(target=probe_like))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    in_place = rec._process.producer.in_place
    rec.close()
    st = rec.stats
    assert st["written"] == 450 and counters_add_up(st) and st["queued"] == 0, st
    assert in_place > 0
    with open_recording(path) as r:
        got = r.read_layer("x")
        seen = set()
        for i in range(len(r)):
            f = r[i]
            assert (got[i] == f.source_id * 1000 + f.frame_num).all(), (f.source_id, f.frame_num)
            seen.add((f.source_id, f.frame_num))
        assert len(seen) == 450
