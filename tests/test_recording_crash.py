"""Crash safety (kill -9 of the recording process) and I/O errors (a real full file system)."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from dsprobe import FrameRecord, ImageRecord, Recorder, open_recording
from dsprobe.recording.reader import RecordingError

CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from dsprobe import FrameRecord, ImageRecord, Recorder

    path, segment_bytes = sys.argv[1], int(sys.argv[2]) or None

    def frame(n):
        return FrameRecord(n % 2, n, pts_ns=n * 1000, layers={"out": np.full((64, 100), n, np.float32)},
                           image=ImageRecord(np.full((24, 32, 3), n % 256, np.uint8), (0, 0, 64, 48)))

    rec = Recorder(path, flush_interval_s=0.05, image_format="raw", segment_max_bytes=segment_bytes,
                   drop_when_full=False)
    for n in range(40):
        rec.record(frame(n))
    while rec.stats["frames_flushed"] < 40:     # all 40 written and flushed
        time.sleep(0.01)
    n = 40
    if segment_bytes:                            # and a second segment begun (compressed frames
        from pathlib import Path                 # are small: how many it takes varies)
        p = Path(path)
        while len(list(p.parent.glob(p.stem + "-*.h5"))) < 2:
            rec.record(frame(n))
            n += 1
            time.sleep(0.001)
    print("FLUSHED", flush=True)
    while True:                                  # keep writing until killed
        rec.record(frame(n))
        n += 1
""")


def run_and_kill(tmp_path, segment_bytes=0, after_s=0.3):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    path = tmp_path / "crash.h5"
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), str(segment_bytes)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout.readline().strip() == "FLUSHED"
        time.sleep(after_s)  # mid-write, between flushes, more frames in flight
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return path


def check_frames(r):
    assert len(r) >= 40
    assert list(r.frames["frame_num"]) == list(range(len(r)))
    for v in r:
        n = v.frame_num
        np.testing.assert_array_equal(v.tensors["out"], np.full((64, 100), n, np.float32))
        assert v.image[0, 0, 0] == n % 256 and v.source_id == n % 2
    np.testing.assert_array_equal(r.read_layer("out")[:, 0, 0], np.arange(len(r)))


@pytest.mark.parametrize("after_s", [0.05, 0.3])
def test_sigkill_keeps_every_flushed_frame(tmp_path, after_s):
    path = run_and_kill(tmp_path, after_s=after_s)
    with open_recording(path) as r:
        assert not r.closed_cleanly
        check_frames(r)


@pytest.mark.parametrize("after_s", [0.05, 0.3])
def test_sigkill_with_segments_keeps_closed_and_open_segments(tmp_path, after_s):
    run_and_kill(tmp_path, segment_bytes=400_000, after_s=after_s)
    files = sorted(tmp_path.glob("crash-*.h5"))
    assert len(files) >= 2
    with open_recording(tmp_path / "crash.h5") as r:
        assert len(r.paths) == len(files)
        check_frames(r)


def make_small_fs(tmp_path):
    """A 12 MiB tmpfs (needs root and mount rights); None when it cannot be made here."""
    mnt = tmp_path / "small_fs"
    mnt.mkdir()
    if os.geteuid() != 0:
        return None
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)], capture_output=True
    )
    return mnt if res.returncode == 0 else None


def big_frame(n):
    return FrameRecord(
        0,
        n,
        layers={"out": np.full(50_000, n, np.float32)},  # 200 kB a frame
        image=ImageRecord(np.zeros((8, 8, 3), np.uint8), (0, 0, 8, 8)),
    )


def test_disk_full_stops_cleanly(tmp_path, caplog):
    mnt = make_small_fs(tmp_path)
    if mnt is None:
        pytest.skip(
            "cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN); "
            "test_file_size_limit_stops_cleanly covers the same path"
        )
    try:
        path = mnt / "full.h5"
        caplog.set_level(logging.ERROR, logger="dsprobe.recorder")
        rec = Recorder(
            path, flush_interval_s=0.02, block_frames=4, image_format="raw", drop_when_full=False
        )
        accepted = 0
        for n in range(200):  # 40 MB into 12 MiB; the caller never sees an exception
            accepted += rec.record(big_frame(n))
            time.sleep(0.002)
        rec.close()
        st = rec.stats
        assert rec.failed and st["failed_reason"].startswith("NoSpace: disk full"), st[
            "failed_reason"
        ]
        assert rec.record(big_frame(999)) is False  # stopped: counted, not raised
        assert "dsprobe recorder stopped" in caplog.text and "disk full" in caplog.text
        with open_recording(path) as r:  # closed cleanly before the disk was full, reason inside
            assert r.closed_cleanly and 0 < len(r) < 60
            assert r.stats["failed_reason"].startswith("NoSpace: disk full")
            assert [int(v.tensors["out"][0]) for v in r] == list(range(len(r)))
        assert st["written"] == len(r) and st["dropped_stopped"] >= 1
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


LIMITED_CHILD = textwrap.dedent("""
    import resource, sys, time
    import numpy as np
    from dsprobe import FrameRecord, Recorder
    import dsprobe.recording.write_loop as write_loop
    if sys.argv[2] == "no-guard":   # let HDF5 itself meet the I/O error (EFBIG)
        write_loop.check_space = lambda *args: None
    resource.setrlimit(resource.RLIMIT_FSIZE, (8_000_000, 8_000_000))
    rec = Recorder(sys.argv[1], flush_interval_s=0.02, block_frames=4, images=False, drop_when_full=False)
    for n in range(100):
        rec.record(FrameRecord(0, n, layers={"out": np.full(50_000, n, np.float32)}))
        time.sleep(0.002)
    deadline = time.monotonic() + 10
    while not rec.failed and time.monotonic() < deadline:
        time.sleep(0.01)
    after = rec.record(FrameRecord(0, 1000, layers={"out": np.zeros(50_000, np.float32)}))
    rec.close()
    print("FAILED", rec.failed, "AFTER", after, "REASON", rec.stats["failed_reason"])
    print("CALLER STILL RUNNING")
""")


@pytest.mark.parametrize("guard", ["guard", "no-guard"])
def test_file_size_limit_stops_cleanly(tmp_path, guard):
    """RLIMIT_FSIZE in a child process: caught before writing ('guard'), or as the kernel's EFBIG that
    HDF5 meets mid-write ('no-guard'). Either way the recorder stops, logs, and the caller runs on."""
    script = tmp_path / "child.py"
    script.write_text(LIMITED_CHILD)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    path = tmp_path / "limited.h5"
    out = subprocess.run(
        [sys.executable, str(script), str(path), guard],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "FAILED True AFTER False" in out.stdout and "CALLER STILL RUNNING" in out.stdout
    assert "dsprobe recorder stopped" in out.stderr
    if guard == "guard":
        assert "REASON NoSpace: file size limit" in out.stdout
        with open_recording(path) as r:
            assert r.closed_cleanly and len(r) > 0
            assert [int(v.tensors["out"][0]) for v in r] == list(range(len(r)))
    else:
        assert "File too large" in out.stdout or "errno = 27" in out.stdout
        try:  # HDF5 may leave a damaged file after its failed write: then one clear error, never a crash
            with open_recording(path) as r:
                assert [int(v.tensors["out"][0]) for v in r] == list(range(len(r)))
        except RecordingError as exc:
            assert str(path) in str(exc)
