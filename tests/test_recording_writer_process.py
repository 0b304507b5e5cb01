"""The writer in a child process (``RecorderOptions(writer="process")``, issue 20 item 6): the same
file as the writer thread writes, the same counters; its death (SIGKILL) is detected, counted and
reported while every committed frame survives; the caller's death, interpreter exit and Ctrl-C still
leave a cleanly closed file; a path that cannot be written fails at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from test_recording_blocks import check_against_reference, varied_frames

from dsprobe import FrameRecord, ImageRecord, Recorder, open_recording
from dsprobe.recording.output import OutputError


def counters_add_up(st: dict) -> bool:
    dropped = sum(v for k, v in st.items() if k.startswith("dropped_"))
    return st["received"] == st["written"] + dropped + st["queued"]


def test_same_file_as_the_per_frame_reference(tmp_path):
    frames = varied_frames(90)
    path = tmp_path / "p.h5"
    with Recorder(
        path, writer="process", drop_when_full=False, image_format="raw", flush_interval_s=0.02
    ) as rec:
        assert rec.writer_pid and rec.writer_pid != os.getpid()
        for i, f in enumerate(frames):
            assert rec.record(f)
            if i % 30 == 0:
                time.sleep(0.05)
        rec.update_stats("probe", {"frames": 90})
    st = rec.stats
    assert st["written"] == 90 and st["queued"] == 0 and counters_add_up(st), st
    assert st["writer_cpu_s"] > 0
    check_against_reference(path, frames)
    with open_recording(path) as r:
        assert r.stats["received"] == 90 and r.stats["probe"] == {"frames": 90}
        assert r[1].image.shape == (9, 16, 3)  # images: through the pipe, as arrays


class OnlyHere:
    """A class the writer process cannot import (this test module is not on its path)."""


def test_jpeg_and_bad_frames_in_the_process(tmp_path):
    path = tmp_path / "j.h5"
    rec = Recorder(path, writer="process", drop_when_full=False)
    rng = np.random.default_rng(0)
    for n in range(20):
        img = ImageRecord(rng.integers(0, 255, (48, 64, 3), np.uint8), (0, 0, 64, 48))
        assert rec.record(FrameRecord(0, n, layers={"x": np.full(4, n, np.float32)}, image=img))
        if n == 10:  # in the same message as good frames: only it is lost
            rec.record(FrameRecord(0, 97, layers={"x": np.zeros(4, np.float32)}, image=OnlyHere()))
    rec.record(FrameRecord(0, 99, layers={"x": "not an array"}))  # dropped by the writer, named
    rec.record(FrameRecord(0, 98, layers={"x": np.zeros(4, np.float32)}, image=object()))
    rec.record(FrameRecord(0, 96, layers={"x": np.zeros(4, np.float32)}, image=lambda: 0))
    rec.close()
    st = rec.stats
    assert st["written"] == 20 and st["dropped_invalid"] == 4 and counters_add_up(st), st
    assert (
        "layers" in st["last_error"] or "image" in st["last_error"] or "pickle" in st["last_error"]
    )
    with open_recording(path) as r:
        assert len(r) == 20 and r.closed_cleanly
        assert r[5].image.shape == (48, 64, 3)
        np.testing.assert_array_equal(r.read_layer("x")[:, 0], np.arange(20))


def test_a_file_the_writer_process_cannot_create_fails_at_once(tmp_path):
    path = tmp_path / "x.h5"
    (tmp_path / "x.h5.creating").mkdir()  # where the segment is built: h5py cannot create it
    t0 = time.monotonic()
    with pytest.raises(OutputError, match="cannot start the recording"):
        Recorder(path, writer="process")
    assert time.monotonic() - t0 < 60
    assert not (tmp_path / "x.h5.lock").exists()  # the lock was let go
    (tmp_path / "x.h5.creating").rmdir()
    with Recorder(path, writer="process", images=False) as rec:
        rec.record(FrameRecord(0, 0, layers={"x": np.zeros(3, np.float32)}))
    with open_recording(path) as r:
        assert len(r) == 1


def test_sigkill_of_the_writer_process_keeps_committed_frames_and_counts_the_rest(tmp_path, caplog):
    path = tmp_path / "k.h5"
    rec = Recorder(path, writer="process", images=False, flush_interval_s=0.05, queue_size=512)
    for n in range(60):
        rec.record(FrameRecord(0, n, layers={"x": np.full(2000, n, np.float32)}))
    deadline = time.monotonic() + 20
    while rec.stats["frames_flushed"] < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec.stats["frames_flushed"] == 60
    for n in range(60, 200):  # more frames in flight when the writer dies
        rec.record(FrameRecord(0, n, layers={"x": np.full(2000, n, np.float32)}))
    os.kill(rec.writer_pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while not rec.failed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rec.failed
    assert rec.record(FrameRecord(0, 999, layers={"x": np.zeros(2000, np.float32)})) is False
    rec.close()  # never raises, never hangs
    st = rec.stats
    assert "WriterDied" in st["failed_reason"] and "SIGKILL" in st["failed_reason"], st
    assert counters_add_up(st) and st["queued"] == 0, st
    assert st["written"] == st["frames_flushed"] >= 60
    assert st["dropped_stopped"] == 201 - st["written"]  # 200 accepted + the one after the death
    assert "writer process died" in caplog.text
    with open_recording(path) as r:
        assert not r.closed_cleanly
        n = len(r)
        assert n >= 60 and n >= st["written"]  # a commit in its last instant may be counted lost
        np.testing.assert_array_equal(r.read_layer("x")[:, 0], np.arange(n))
    # the lock went with the recorder: the path can be recorded again
    with Recorder(path, writer="process", images=False, overwrite=True) as again:
        again.record(FrameRecord(0, 0, layers={"x": np.zeros(2000, np.float32)}))
    with open_recording(path) as r:
        assert len(r) == 1 and r.closed_cleanly


CALLER = textwrap.dedent("""
    import signal, sys, time
    # Ctrl-C as a script started from a shell gets it (a background job of a non-interactive shell
    # inherits SIGINT ignored, and so would this script)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import numpy as np
    from dsprobe import FrameRecord, Recorder
    rec = Recorder(sys.argv[1], writer="process", images=False, drop_when_full=False,
                   flush_interval_s=0.1)
    print("PID", rec.writer_pid, flush=True)
    n = 0
    while True:
        rec.record(FrameRecord(0, n, layers={"x": np.full(1000, n, np.float32)}))
        n += 1
        if sys.argv[2] == "exit" and n == 300:
            break          # the script ends without close()
        time.sleep(0.0005)
""")


def run_caller(tmp_path, mode: str, sig=None, after: float = 0.0):
    script = tmp_path / "caller.py"
    script.write_text(CALLER)
    shm_before = set(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else set()
    path = tmp_path / f"{mode}.h5"
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), mode], stdout=subprocess.PIPE, text=True, env=env
    )
    line = proc.stdout.readline().split()
    assert line[0] == "PID", line
    writer_pid = int(line[1])
    if sig is not None:
        time.sleep(after)
        proc.send_signal(sig)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 30  # the writer process finishes on its own
    while time.monotonic() < deadline:
        try:
            os.kill(writer_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    else:
        pytest.fail("the writer process outlived its caller by 30 s")
    if os.path.isdir("/dev/shm"):  # the ring (a memfd) leaves nothing behind, whoever dies
        new = set(os.listdir("/dev/shm")) - shm_before
        assert not [n for n in new if "dsprobe" in n], new
    return proc, path


def test_interpreter_exit_without_close_closes_cleanly(tmp_path):
    proc, path = run_caller(tmp_path, "exit")
    assert proc.returncode == 0
    with open_recording(path) as r:
        assert r.closed_cleanly and len(r) == 300 and r.stats["written"] == 300


def test_ctrl_c_without_close_closes_cleanly(tmp_path):
    proc, path = run_caller(tmp_path, "loop", signal.SIGINT, 0.4)
    assert proc.returncode in (1, -signal.SIGINT, 130)
    with open_recording(path) as r:
        assert r.closed_cleanly
        st = r.stats
        assert len(r) == st["written"] > 0 and counters_add_up(st) and st["queued"] == 0
        np.testing.assert_array_equal(r.read_layer("x")[:, 0], np.arange(len(r)))


def test_sigkill_of_the_caller_lets_the_writer_close_the_file(tmp_path):
    proc, path = run_caller(tmp_path, "loop", signal.SIGKILL, 0.4)
    assert proc.returncode == -signal.SIGKILL
    with open_recording(path) as r:  # every frame the writer got is in, the file closed cleanly
        assert r.closed_cleanly and len(r) > 0
        np.testing.assert_array_equal(r.read_layer("x")[:, 0], np.arange(len(r)))
    # the lock file may stay (its holder died), but it does not stop the next recorder at the path
    with Recorder(path, overwrite=True, images=False) as again:
        again.record(FrameRecord(0, 0, layers={"x": np.zeros(1, np.float32)}))
    with open_recording(path) as r:
        assert len(r) == 1


@pytest.mark.parametrize("fs_mb,kb", [(12, 200), (20, 300)])
def test_disk_full_in_the_writer_process_never_costs_a_flushed_frame(tmp_path, fs_mb, kb):
    from test_faults_recorder import frame, mount_tmpfs

    mnt = mount_tmpfs(tmp_path, fs_mb)
    if mnt is None:
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        path = mnt / "full.h5"
        rec = Recorder(
            path,
            writer="process",
            flush_interval_s=0.03,
            block_frames=4,
            image_format="raw",
            drop_when_full=False,
        )
        for n in range(fs_mb * 1024 // kb * 2):  # twice what fits
            rec.record(frame(n, kb))
            if n == 8:  # a first commit before the disk fills, however late the writer runs
                deadline = time.monotonic() + 10
                while not rec.stats["frames_flushed"] and time.monotonic() < deadline:
                    time.sleep(0.01)
            elif n % 8 == 0:
                time.sleep(0.01)
            if rec.failed:
                break
        rec.close()
        st = rec.stats
        assert rec.failed and counters_add_up(st) and st["queued"] == 0, st
        assert st["failed_reason"].startswith("NoSpace: disk full"), st["failed_reason"]
        with open_recording(path) as r:
            assert r.closed_cleanly
            assert len(r) == st["written"] == st["frames_flushed"] > 0
            assert r.stats["failed_reason"] == st["failed_reason"]
            got = r.read_layer("out")
            np.testing.assert_array_equal(got[:, 0], np.arange(1, len(r) + 1))
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
