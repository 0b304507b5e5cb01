"""Fault injection on the writer: full disks on real small file systems, bad frames among good ones,
two writers on one path, interpreter exit and Ctrl-C without close(), SIGKILL at random moments.
docs/reliability.md lists the promise each test holds."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from dsprobe import FrameRecord, ImageRecord, ObjectRecord, Recorder, open_recording
from dsprobe.cli import main as cli_main
from dsprobe.recording.output import OutputError
from dsprobe.records import Classification


def mount_tmpfs(tmp_path, mb):
    """A real tmpfs of ``mb`` MiB (root with mount rights), or None."""
    mnt = tmp_path / f"fs{mb}"
    mnt.mkdir()
    if os.geteuid() != 0:
        return None
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={mb}m", "tmpfs", str(mnt)], capture_output=True
    )
    return mnt if res.returncode == 0 else None


def counters_add_up(st):
    dropped = sum(v for k, v in st.items() if k.startswith("dropped_"))
    return st["received"] == st["written"] + dropped + st["queued"]


def frame(n, kb, image=True):
    return FrameRecord(
        0,
        n,
        pts_ns=n * 1000,
        layers={"out": np.full(kb * 256, n + 1, np.float32)},
        image=ImageRecord(np.full((32, 32, 3), n % 256, np.uint8), (0, 0, 32, 32))
        if image
        else None,
    )


# (file system MiB, frame KiB, own free-space check on): 'off' stands for a disk another process
# fills between our check and HDF5's write: HDF5 itself then meets ENOSPC
DISK_CASES = [
    (12, 200, True),
    (20, 300, True),
    (20, 300, False),
    (16, 64, False),
    (30, 1000, True),
    (30, 1000, False),
]


@pytest.mark.parametrize("fs_mb,kb,guard", DISK_CASES)
def test_disk_full_never_costs_a_flushed_frame(tmp_path, monkeypatch, fs_mb, kb, guard):
    mnt = mount_tmpfs(tmp_path, fs_mb)
    if mnt is None:
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        if not guard:
            import dsprobe.recording.write_loop as write_loop

            monkeypatch.setattr(write_loop, "check_space", lambda *a: None)
        path = mnt / "full.h5"
        rec = Recorder(
            path, flush_interval_s=0.03, block_frames=4, image_format="raw", drop_when_full=False
        )
        for n in range(fs_mb * 1024 // kb * 2):  # twice what fits
            rec.record(frame(n, kb))
            if n % 8 == 0:
                time.sleep(0.01)  # let flushes happen
            if rec.failed:
                break
        rec.close()
        st = rec.stats
        assert rec.failed and counters_add_up(st) and st["queued"] == 0, st
        if guard:
            assert st["failed_reason"].startswith("NoSpace: disk full"), st["failed_reason"]
        with h5py.File(path, "r") as f:  # plain h5py opens it
            # the own check stops before HDF5 meets the full disk: closed cleanly; when HDF5 meets
            # it (filled from outside), the file is let go as its last commit left it
            assert bool(f.attrs["closed_cleanly"]) == guard
        with open_recording(path) as r:
            assert r.closed_cleanly == guard
            assert len(r) == st["written"] == st["frames_flushed"]
            if guard:
                assert r.stats["failed_reason"] == st["failed_reason"]
            if len(r):  # every stored frame is the frame recorded, no zero-filled tensor
                got = r.read_layer("out")
                np.testing.assert_array_equal(got[:, 0], np.arange(1, len(r) + 1))
                assert (got == got[:, :1]).all()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# ------------------------------------------------------------------ bad frames among good ones
def good(n):
    return FrameRecord(
        n % 3,
        n,
        pts_ns=n * 1000,
        network_size=(64, 64, 3),
        frame_size=(640, 480),
        layers={"x": np.full(4, n, np.float32)},
        detections=[ObjectRecord((1.0, 2.0, 3.0, 4.0), 1, 0.5, label="car")],
    )


def with_(n, **changes):
    f = good(n)
    for k, v in changes.items():
        setattr(f, k, v)
    return f


def det(n, **changes):
    o = ObjectRecord((1.0, 2.0, 3.0, 4.0), 1, 0.5, label="car")
    for k, v in changes.items():
        setattr(o, k, v)
    return with_(n, detections=[o])


BAD_FRAMES = {
    "object_id=-1": lambda n: det(n, object_id=-1),
    "source_id=2**31": lambda n: with_(n, source_id=2**31),
    "label=123": lambda n: det(n, label=123),
    "label with NUL": lambda n: det(n, label="a\0b"),
    "rect holds a string": lambda n: det(n, rect=(1, 2, "3", 4)),
    "rect of 3": lambda n: det(n, rect=(1, 2, 3)),
    "class_id float": lambda n: det(n, class_id=1.5),
    "confidence None": lambda n: det(n, confidence=None),
    "parent_index -2": lambda n: det(n, parent_index=-2),
    "layer name with NUL": lambda n: with_(n, layers={"x\0": np.zeros(4, np.float32)}),
    "layer is a list": lambda n: with_(n, layers={"x": [1.0, 2.0]}),
    "complex layer": lambda n: with_(n, layers={"x": np.zeros(4, np.complex64)}),
    "object layer": lambda n: with_(n, layers={"x": np.array([None] * 4)}),
    "layer changes shape": lambda n: with_(n, layers={"x": np.zeros(5, np.float32)}),
    "layer set changes": lambda n: with_(n, layers={"y": np.zeros(4, np.float32)}),
    "network_size of 2": lambda n: with_(n, network_size=(64, 64)),
    "frame_size negative": lambda n: with_(n, frame_size=(-1, 480)),
    "pts_ns text": lambda n: with_(n, pts_ns="12"),
    "unique_id bool": lambda n: with_(n, unique_id=True),
    "raw image float": lambda n: with_(n, image=ImageRecord(np.zeros((4, 4, 3)), (0, 0, 4, 4))),
    "image encoding bmp": lambda n: with_(n, image=ImageRecord(b"BM", (0, 0, 4, 4), "bmp")),
    "detections not a list": lambda n: with_(n, detections="car"),
    "classification class_id text": lambda n: det(
        n, classifications=[Classification(1, 0, "2", 0.5, "x")]
    ),
    "not a FrameRecord": lambda n: {"source_id": 0},
}


def test_bad_frames_are_dropped_counted_and_named_the_rest_kept(tmp_path):
    """100 good frames, every bad kind once, 50 more good: all 150 good ones are in the file."""
    path = tmp_path / "bad.h5"
    rec = Recorder(path, images=False, drop_when_full=False)
    for n in range(100):
        assert rec.record(good(n))
    for k, make in enumerate(BAD_FRAMES.values()):
        rec.record(make(1000 + k))
    for n in range(100, 150):
        rec.record(good(n))
    rec.close()
    st = rec.stats
    assert st["dropped_invalid"] == len(BAD_FRAMES) and st["written"] == 150, st
    assert counters_add_up(st) and not rec.failed
    with open_recording(path) as r:
        assert list(r.frames["frame_num"]) == list(range(150))
        assert r.read_layer("x")[:, 0].tolist() == list(range(150))


@pytest.mark.parametrize("kind", sorted(BAD_FRAMES))
def test_each_bad_frame_names_its_field(tmp_path, kind, caplog):
    rec = Recorder(tmp_path / "one.h5", images=False, drop_when_full=False)
    rec.record(good(0))
    rec.record(BAD_FRAMES[kind](1))
    rec.close()
    st = rec.stats
    assert st["dropped_invalid"] == 1 and st["written"] == 1 and counters_add_up(st), st
    assert st["last_error"].startswith(("invalid-frame:", "not-a-frame:")), st["last_error"]


def test_big_endian_layers_are_converted_every_frame(tmp_path):
    path = tmp_path / "be.h5"
    with Recorder(path, images=False) as rec:
        for n in range(5):
            rec.record(FrameRecord(0, n, layers={"x": np.arange(n, n + 4, dtype=">f4")}))
    assert rec.stats["written"] == 5 and rec.stats["dropped_invalid"] == 0
    with open_recording(path) as r:
        got = r.read_layer("x")
        assert got.dtype == np.float32 and got.dtype.isnative
        np.testing.assert_array_equal(got, [np.arange(n, n + 4) for n in range(5)])


JUNK = [
    None,
    True,
    -1,
    -(2**63),
    2**64,
    2**70,
    1.5,
    float("nan"),
    float("inf"),
    "7",
    b"x",
    [1, 2],
    (1, 2, 3, 4, 5),
    np.int64(3),
    np.float32(0.5),
    np.array([1, 2]),
    object(),
]
FRAME_FIELDS = [
    "source_id",
    "frame_num",
    "pts_ns",
    "unique_id",
    "batch_id",
    "network_size",
    "frame_size",
]
OBJECT_FIELDS = [
    "rect",
    "class_id",
    "confidence",
    "object_id",
    "label",
    "parent_index",
    "parent_object_id",
]


def fuzzed(rng, n):
    """A good frame with a few fields replaced by values of any type or range."""
    f = good(n)
    o = f.detections[0]
    for obj, names in ((f, FRAME_FIELDS), (o, OBJECT_FIELDS)):
        for name in rng.sample(names, rng.randint(0, 2)):
            setattr(obj, name, rng.choice(JUNK))
    return f


def test_fuzzed_frames_never_stop_the_writer(tmp_path):
    """600 fuzzed frames between good ones: every good one is in the file, in order; the rest are
    either stored as given or dropped and counted."""
    rng = random.Random(3)
    path = tmp_path / "fz.h5"
    rec = Recorder(path, images=False, drop_when_full=False, queue_size=1024)
    for i in range(600):
        rec.record(fuzzed(rng, i))
        rec.record(good(10**6 + i))
    rec.close()
    st = rec.stats
    assert not rec.failed and counters_add_up(st) and st["queued"] == 0, st
    assert st["received"] == 1200 and st["dropped_invalid"] > 100, st
    with open_recording(path) as r:
        nums = r.frames["frame_num"].to_numpy()
        assert len(r) == st["written"]
        assert nums[nums >= 10**6].tolist() == [10**6 + i for i in range(600)]


# ------------------------------------------------------------------ one writer per path
def test_one_writer_per_path_and_no_overwrite(tmp_path):
    path = tmp_path / "one.h5"
    rec = Recorder(path, images=False)
    with pytest.raises(OutputError, match=rf"another recorder is writing.*pid {os.getpid()}"):
        Recorder(path, images=False)
    rec.record(good(0))
    rec.close()
    with pytest.raises(OutputError, match="a recording is already there.*overwrite=True"):
        Recorder(path, images=False)
    with open_recording(path) as r:  # the refused writers touched nothing
        assert len(r) == 1
    Recorder(path, images=False, overwrite=True).close()
    with open_recording(path) as r:
        assert len(r) == 0


def test_overwriting_a_series_removes_all_its_segments(tmp_path):
    path = tmp_path / "s.h5"
    with Recorder(path, images=False, segment_max_seconds=0.05, flush_interval_s=0.02) as rec:
        for n in range(6):
            rec.record(good(n))
            time.sleep(0.04)
    assert len(list(tmp_path.glob("s-*.h5"))) >= 3
    with pytest.raises(OutputError, match="already there"):
        Recorder(path, images=False, segment_max_seconds=10)
    with Recorder(path, images=False, segment_max_seconds=10, overwrite=True) as rec:
        rec.record(good(99))
    with open_recording(path) as r:  # the new series alone, it opens
        assert list(r.frames["frame_num"]) == [99] and len(r.paths) == 1


def test_never_onto_its_own_config(tmp_path):
    cfg = tmp_path / "pgie.txt"
    cfg.write_text("[property]\ngie-unique-id=1\n")
    with pytest.raises(OutputError, match="would overwrite an input"):
        Recorder(cfg, nvinfer_config=cfg, overwrite=True)
    assert cfg.read_text().startswith("[property]")


def test_unwritable_output_fails_at_once(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="cannot"):
        Recorder(tmp_path / "file" / "rec.h5")


# ------------------------------------------------------------------ exit and signals
EXIT_CHILD = textwrap.dedent("""
    import faulthandler, signal, sys, time
    # Ctrl-C as a script started from a shell gets it: a suite run as a background job of a
    # non-interactive shell inherits SIGINT ignored (POSIX), and so would this child (it hung)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # run_child's stack dump on a hang
    import numpy as np
    from dsprobe import FrameRecord, Recorder
    rec = Recorder(sys.argv[1], images=False, drop_when_full=False, flush_interval_s=0.2)
    n = 0
    print("GO", flush=True)
    while True:
        rec.record(FrameRecord(0, n, layers={"x": np.full(1000, n, np.float32)}))
        n += 1
        if sys.argv[2] == "exit" and n == 300:
            break          # the script ends without close()
        time.sleep(0.0005)
""")


def run_child(tmp_path, mode, sig=None, after=0.0):
    script = tmp_path / "child.py"
    script.write_text(EXIT_CHILD)
    path = tmp_path / f"{mode}.h5"
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    err = tmp_path / "child_stderr.txt"
    with open(err, "w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), mode],
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
            env=env,
        )
    assert proc.stdout.readline().strip() == "GO"
    if sig is not None:
        time.sleep(after)
        proc.send_signal(sig)
    try:
        proc.wait(timeout=60)  # a hang at exit fails here, with every thread's stack
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)
        time.sleep(2)
        proc.kill()
        proc.wait()
        pytest.fail(f"the child hung after {sig!r}; its threads:\n{err.read_text()[-8000:]}")
    return proc, path


def test_interpreter_exit_without_close_closes_cleanly(tmp_path):
    proc, path = run_child(tmp_path, "exit")
    assert proc.returncode == 0
    with open_recording(path) as r:
        assert r.closed_cleanly and len(r) == 300 and r.stats["written"] == 300


@pytest.mark.parametrize("trial", range(3))
def test_ctrl_c_without_close_closes_cleanly(tmp_path, trial):
    proc, path = run_child(tmp_path, "loop", signal.SIGINT, random.Random(trial).uniform(0.05, 0.6))
    assert proc.returncode != -signal.SIGSEGV and proc.returncode in (1, -signal.SIGINT, 130)
    with open_recording(path) as r:
        assert r.closed_cleanly
        assert list(r.frames["frame_num"]) == list(range(len(r)))
        st = r.stats
        assert len(r) == st["written"] and counters_add_up(st) and st["queued"] == 0


@pytest.mark.parametrize("trial", range(2))
def test_sigkill_at_a_random_moment_keeps_every_committed_frame(tmp_path, trial):
    proc, path = run_child(
        tmp_path, "loop", signal.SIGKILL, random.Random(10 + trial).uniform(0.1, 0.8)
    )
    assert proc.returncode == -signal.SIGKILL
    with open_recording(path) as r:
        assert not r.closed_cleanly
        n = len(r)
        assert list(r.frames["frame_num"]) == list(range(n))
        if n:
            np.testing.assert_array_equal(r.read_layer("x")[:, 0], np.arange(n))


def test_record_onnx_checks_its_output_before_any_model_or_frame(sample_videos, tmp_path, capsys):
    from dsprobe.sample import CONFIG_PATH

    video = str(sample_videos.paths[0])
    size = os.path.getsize(video)
    t0 = time.monotonic()
    assert (
        cli_main(["record-onnx", "--config", str(CONFIG_PATH), "--video", video, "-o", video]) == 1
    )
    assert "would overwrite an input" in capsys.readouterr().err
    assert os.path.getsize(video) == size
    out = tmp_path / "there.h5"
    out.write_bytes(b"an earlier recording")
    assert (
        cli_main(["record-onnx", "--config", str(CONFIG_PATH), "--video", video, "-o", str(out)])
        == 1
    )
    assert (
        "already there" in capsys.readouterr().err and out.read_bytes() == b"an earlier recording"
    )
    assert time.monotonic() - t0 < 5  # refused before loading the model or decoding a frame
