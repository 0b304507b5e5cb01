"""Recorder behaviour: never raises or blocks into the caller, drops and counts, rate limits, segments."""

import threading

import numpy as np
import pytest

from dsprobe import FrameRecord, ObjectRecord, Recorder, open_recording
from dsprobe.recording.rate_limiter import RateLimiter


class GatedRecorder(Recorder):
    """A Recorder whose writer thread waits at a gate before each frame (to fill the queue on purpose)."""

    def __init__(self, *args, **kwargs):
        self.gate = threading.Event()
        super().__init__(*args, **kwargs)
        prepare = self._loop.prepare

        def gated(frame):
            self.gate.wait()
            return prepare(frame)

        self._loop.prepare = gated


def frame(n, source_id=0, pts_ns=None, **kw):
    return FrameRecord(
        source_id,
        n,
        pts_ns=n * 40_000_000 if pts_ns is None else pts_ns,
        layers={"x": np.full(3, n, np.float32)},
        **kw,
    )


def test_full_queue_drops_and_counts_without_blocking(tmp_path):
    path = tmp_path / "q.h5"
    rec = GatedRecorder(path, queue_size=4, images=False)
    results = [rec.record(frame(n)) for n in range(20)]
    # the writer thread holds at most one frame at the gate, the queue holds 4
    assert results[:4] == [True] * 4 and results.count(True) in (4, 5)
    dropped = results.count(False)
    assert rec.stats["dropped_queue_full"] == dropped and rec.stats["received"] == 20
    rec.gate.set()
    rec.close()
    with open_recording(path) as r:
        assert len(r) == 20 - dropped
        assert r.stats["dropped_queue_full"] == dropped  # the count is stored in the file
        kept = [int(v.tensors["x"][0]) for v in r]
        assert kept == [n for n, ok in zip(range(20), results) if ok]


def test_wait_when_full_keeps_every_frame(tmp_path):
    path = tmp_path / "w.h5"
    rec = GatedRecorder(path, queue_size=2, drop_when_full=False, images=False)
    done = []
    t = threading.Thread(target=lambda: done.extend(rec.record(frame(n)) for n in range(10)))
    t.start()
    t.join(0.3)
    assert t.is_alive()  # waiting for room, as asked
    rec.gate.set()
    t.join()
    rec.close()
    assert done == [True] * 10
    with open_recording(path) as r:
        assert len(r) == 10 and r.stats["dropped_queue_full"] == 0


def test_every_n_and_max_fps_per_stream(tmp_path):
    path = tmp_path / "rate.h5"
    with Recorder(path, every_n=2, max_fps=10, images=False) as rec:
        # 25 fps streams (40 ms PTS steps): every 2nd -> 80 ms apart, max 10 fps -> keep 0, 4, 8, ...
        accepted = [rec.record(frame(n, source_id=s)) for n in range(20) for s in (0, 1)]
    assert sum(accepted) == 10
    with open_recording(path) as r:
        for s in (0, 1):
            assert list(r.frames.loc[r.frames["source_id"] == s, "frame_num"]) == [0, 4, 8, 12, 16]
        assert r.stats["dropped_rate_limited"] == 30 and r.stats["received"] == 40


def test_rate_limiter_without_pts_uses_the_clock():
    lim = RateLimiter(max_fps=0.001)  # one frame per 1000 s
    assert lim.admit(0, 0)  # first frame always
    # PTS 0 means unknown: judged on the monotonic clock, so an immediate second frame is refused
    assert not lim.admit(0, 0)
    lim = RateLimiter(every_n=3)
    assert [lim.admit(0, n) for n in range(7)] == [True, False, False, True, False, False, True]
    lim = RateLimiter(max_fps=10)  # PTS jumping back (a looping file source) starts over
    assert [lim.admit(0, t) for t in (0, 50_000_000, 100_000_000, 10_000_000)] == [
        True,
        False,
        True,
        True,
    ]
    with pytest.raises(ValueError, match="every_n"):
        RateLimiter(every_n=0)


def test_invalid_frames_are_counted_not_raised(tmp_path, caplog):
    path = tmp_path / "bad.h5"
    with Recorder(path, images=False) as rec:
        assert rec.record(frame(0))
        rec.record(FrameRecord(0, 1, layers={"x": np.zeros(4, np.float32)}))  # shape changed
        rec.record(FrameRecord(0, 2, layers={"x": np.zeros(3, np.float64)}))  # dtype changed
        rec.record(FrameRecord(0, 3, layers={"x": "not an array"}))  # type
        rec.record(FrameRecord(0, 4, layers={"y": np.zeros(3, np.float32)}))  # layer set changed
        rec.record(FrameRecord(0, 5, detections=[ObjectRecord((1, 2, 3))]))  # rect of 3 values
        rec.record(None)  # not a frame at all
        assert rec.record(frame(6))
    st = rec.stats
    assert st["dropped_invalid"] == 6 and st["errors"] == 6 and st["written"] == 2  # None too
    with open_recording(path) as r:
        assert list(r.frames["frame_num"]) == [0, 6]
    assert "changed from float32[3] to float32[4]" in caplog.text  # first of its kind is logged


def test_record_after_close_returns_false_and_close_twice_is_fine(tmp_path):
    rec = Recorder(tmp_path / "c.h5", images=False)
    assert rec.record(frame(0))
    rec.close()
    rec.close()
    assert rec.record(frame(1)) is False
    assert rec.stats["dropped_stopped"] == 1 and rec.stats["written"] == 1


def test_update_stats_are_stored(tmp_path):
    path = tmp_path / "s.h5"
    with Recorder(path, images=False) as rec:
        rec.record(frame(0))
        rec.update_stats("probe", {"probe_ms_p50": np.float32(0.25), "frames": np.int64(3)})
        rec.update_stats("probe", {"frames": 4})
        with pytest.raises(ValueError, match="clashes"):
            rec.update_stats("written", {})
    with open_recording(path) as r:
        assert r.stats["probe"] == {"probe_ms_p50": 0.25, "frames": 4}
        assert r.stats["flushes"] >= 1


def test_segments_rotate_by_size_and_read_as_one(tmp_path):
    path = tmp_path / "run.h5"
    with Recorder(
        path, segment_max_bytes=300_000, flush_interval_s=0.01, block_frames=1, images=False
    ) as rec:
        for n in range(30):
            rec.record(
                FrameRecord(n % 2, n, layers={"big": np.full(20_000, n, np.float32)})
            )  # 80 kB a frame
    files = sorted(tmp_path.glob("run-*.h5"))
    assert len(files) >= 3 and not path.exists()
    assert rec.paths == files
    for via in (path, tmp_path, files[0].parent):
        with open_recording(via) as r:
            assert len(r) == 30 and len(r.paths) == len(files)
            assert [int(v.tensors["big"][0]) for v in r] == list(range(30))
            np.testing.assert_array_equal(r.read_layer("big", [29, 0, 15])[:, 0], [29, 0, 15])
            assert r.frames["segment"].nunique() == len(files)
            assert r.stats["written"] == 30
    with open_recording(files[1]) as r:  # one segment alone is a valid recording too
        assert 0 < len(r) < 30


def test_segments_rotate_by_duration(tmp_path):
    path = tmp_path / "t.h5"
    rec = GatedRecorder(path, segment_max_seconds=0.05, flush_interval_s=0.02, images=False)
    rec.gate.set()
    for n in range(3):
        rec.record(frame(n))
        threading.Event().wait(
            0.3
        )  # far longer than a segment's life: each frame lands in a new segment
    rec.close()
    with open_recording(path) as r:
        assert len(r.paths) >= 2 and len(r) == 3


def test_concurrent_callers(tmp_path):
    path = tmp_path / "threads.h5"
    with Recorder(path, queue_size=10_000, images=False) as rec:
        threads = [
            threading.Thread(
                target=lambda s=s: [rec.record(frame(n, source_id=s)) for n in range(50)]
            )
            for s in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    with open_recording(path) as r:
        assert len(r) == 200
        for s in range(4):
            assert sorted(r.frames.loc[r.frames["source_id"] == s, "frame_num"]) == list(range(50))
