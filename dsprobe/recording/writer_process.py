"""The Recorder's writer in a child process (``RecorderOptions(writer="process")``, issue 20 item 6).

With the writer on a thread, HDF5 calls and the Python around them hold the GIL for milliseconds at a
time and the probe on DeepStream's streaming thread waits for it. Here the caller's process keeps
only ``record()``, which copies the frame's arrays once into a shared-memory ring
(:mod:`dsprobe.recording.shm_ring`, ``ring_mib`` MiB) with a small pickled skeleton of the record
(no numpy array is pickled) and never waits: a frame that does not fit (``queue_size`` frames not
yet taken, or the ring's bytes) is dropped and counted as ``dropped_queue_full``, as the thread's
full queue is. A child process (plain ``python -c``, not multiprocessing: nothing of the caller's
``__main__`` is re-run) runs the same :class:`~dsprobe.recording.write_loop.WriteLoop` as the thread
does (validation, JPEG encoding, HDF5 blocks, commits, rotation, the space checks) on records whose
arrays are views of the ring; their bytes are given back once the views are gone (the block they
are in was written, or the frame was dropped).

Besides the ring, three pipes: control (caller -> child: the start, the caller's counters every
half second, the end), reports (child -> caller: after every commit, the end) and a wake-up pipe
(one byte when the child sleeps and ``block_frames`` frames wait, as the thread's queue wakes it).

The caller keeps the one-writer lock (``<file>.lock``, its reserve included); the child inherits
the locked descriptor, so the lock holds while either lives. The ring's memory has no name (a
``memfd``): nothing is left in ``/dev/shm`` whoever dies. The child ignores Ctrl-C (the caller's
``close()`` or ``atexit`` stops it), and ends cleanly, writing what the ring holds, when the caller
dies.

Counters: the caller counts what ``record()`` decides, the child what the writer does, and
``Recorder.stats`` adds them (so ``received = written + dropped_* + queued`` holds). The child
reports after every commit; the caller forwards its counters and ``update_stats`` sections every
half second, so the stats stored in the file are at most that old (exact at close). If the child
dies (killed, out of memory), the caller sees its report pipe close: the recorder stops
(``failed_reason`` says how the child ended), the frames it was sent but had not committed are
counted in ``dropped_stopped`` (by its last report: a commit in the child's last instant may count
as lost, never the other way), and the file is left as its last commit made it (``closed_cleanly``
False, a reader reads every committed frame; see docs/reliability.md)."""

from __future__ import annotations

import io
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import dsprobe
from dsprobe.recording.options import RecorderOptions
from dsprobe.recording.output import OutputError, OutputLock
from dsprobe.recording.segment import SegmentHeader
from dsprobe.recording.shm_ring import (
    CTL_BYTES,
    Consumer,
    Producer,
    Ring,
    aligned,
    fence,
    make_memory,
)
from dsprobe.recording.stats import COUNTERS, RecorderStats, log
from dsprobe.recording.write_loop import STOP, WriteLoop
from dsprobe.records import FrameRecord

#: control messages, caller -> child
INIT, CALLER_STATS, END = 0, 2, 3
#: a message on a pipe: kind, length of its pickle
HEAD = struct.Struct("<BQ")
#: how often the caller's counters and sections reach the child (seconds)
STATS_EVERY_S = 0.5
#: the longest the caller waits for the child to open the file
START_TIMEOUT_S = 120.0
#: how often a busy child looks at its control pipe (seconds)
CONTROL_EVERY_S = 0.1
#: niceness added to the writer process: on a busy CPU the pipeline's threads (the probe among
#: them) go first, the writer takes what is left (the ring absorbs the rest)
WRITER_NICENESS = 10


def write_all(fd: int, data: Any) -> None:
    """Write all of ``data`` (bytes-like) to ``fd`` (the GIL is released inside each write)."""
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def read_into(f: io.FileIO, buf: Any) -> bool:
    """Fill ``buf`` from ``f``; False at end of file before it is full."""
    view = memoryview(buf).cast("B")
    while view:
        n = f.readinto(view)
        if not n:
            return False
        view = view[n:]
    return True


def send(fd: int, kind: int, obj: Any) -> None:
    """One control message (small: no arrays go this way)."""
    data = pickle.dumps(obj, protocol=5)
    write_all(fd, HEAD.pack(kind, len(data)) + data)


def receive(f: io.FileIO) -> tuple[int, Any] | None:
    """The next control message (kind, object), None at end of file (the other side closed or
    died)."""
    head = bytearray(HEAD.size)
    if not read_into(f, head):
        return None
    kind, n = HEAD.unpack(head)
    data = bytearray(n)
    if not read_into(f, data):
        return None
    return kind, pickle.loads(data)


def lower_priority() -> None:
    """Lower the calling thread's scheduling priority (Linux: niceness is per thread)."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + WRITER_NICENESS)
    except (AttributeError, OSError):  # pragma: no cover - not Linux, or not allowed
        pass


class WriterProcess:
    """The caller's side: starts the child, puts frames into the ring, watches the child."""

    def __init__(
        self,
        path: Path,
        options: RecorderOptions,
        header: SegmentHeader,
        stats: RecorderStats,
        lock: OutputLock,
    ) -> None:
        self.path, self.stats, self.lock = path, stats, lock
        self.failed = False
        self.ended = False  # the child is gone (closed the recording, or died)
        self.child: dict[str, Any] = {}  # the child's counters, as of its last report
        self.report_lock = threading.Lock()
        self.control_lock = threading.Lock()
        nbytes = CTL_BYTES + aligned(int(options.ring_mib * (1 << 20)))
        mem = make_memory(nbytes)
        try:
            ring = Ring(mem, nbytes, populate=True)
        except BaseException:
            os.close(mem)
            raise
        r_ctrl, w_ctrl = os.pipe()
        r_status, w_status = os.pipe()
        r_wake, w_wake = os.pipe()
        os.set_blocking(w_wake, False)
        root = str(Path(dsprobe.__file__).resolve().parent.parent)
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "from dsprobe.recording.writer_process import child_main; child_main()"
        )
        fds = (r_ctrl, w_status, r_wake, lock.fd, mem)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, root, *map(str, fds), str(nbytes)],
                pass_fds=fds,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal reaches the caller only
            )
        except BaseException:
            for fd in (w_ctrl, r_status, w_wake):
                os.close(fd)
            raise
        finally:
            for fd in (r_ctrl, w_status, r_wake, mem):
                os.close(fd)
        self.ctrl, self.wake_fd = w_ctrl, w_wake
        self.status = io.FileIO(r_status, "rb")
        self.producer = Producer(ring, options.queue_size, self._wake)
        self.producer.wake_at = max(1, min(options.block_frames, options.queue_size // 2))
        try:
            send(self.ctrl, INIT, (str(path), options, header, lock.head_len))
            reply = receive(self.status)
        except OSError:
            reply = None
        if reply is None or reply[1][0] != "ready":
            self._close_pipes()
            self.proc.wait()
            why = reply[1][1] if reply else f"writer process ended ({self.exit_text()})"
            raise OutputError(f"{path}: cannot start the recording: {why}")
        self.watcher = threading.Thread(
            target=self._watch, name="dsprobe-recorder-watch", daemon=True
        )
        self.watcher.start()

    # ------------------------------------------------------------------ frames (any thread)
    def put(self, frame: FrameRecord, recv_ns: int) -> bool | None:
        """Copy ``frame`` into the ring; False when it does not fit now, None after :meth:`stop`.
        Raises what pickling its skeleton raises (a frame no writer could store)."""
        return self.producer.put(frame, recv_ns)

    def _wake(self) -> None:
        try:
            os.write(self.wake_fd, b"\0")
        except OSError:  # the pipe is full (the child will look anyway) or gone
            pass

    def qsize(self) -> int:
        """Frames in the ring not yet taken by the writer."""
        return self.producer.in_flight()

    def stop(self) -> None:
        """Send the caller's last counters and the end: the child writes what the ring holds."""
        sent = self.producer.stop()
        with self.control_lock:
            if self.ctrl < 0:
                return
            self._send(CALLER_STATS, self._caller_stats(sent))
            self._send(END, None)
            self._close_control()

    def _send(self, kind: int, obj: Any) -> bool:
        """False when the child is gone (broken pipe)."""
        try:
            send(self.ctrl, kind, obj)
            return True
        except OSError:
            return False

    def _close_control(self) -> None:
        if self.ctrl >= 0:
            try:
                os.close(self.ctrl)  # end of file for the child: it finishes what it has
            except OSError:
                pass
            self.ctrl = -1

    def _caller_stats(self, sent: int | None = None) -> dict[str, Any]:
        """The caller's counters and sections; with ``sent`` (the last, no more frames go), the
        frames counted but never sent (a Ctrl-C inside ``record()``) as ``dropped_stopped``."""
        snap = self.stats.snapshot()
        counters = {k: snap[k] for k in COUNTERS}
        if sent is not None:
            unsent = max(0, counters["queued"] - sent)
            counters["queued"] -= unsent
            counters["dropped_stopped"] += unsent
        sections = {k: v for k, v in snap.items() if k not in self.stats.values}
        return {"counters": counters, "sections": sections}

    # ------------------------------------------------------------------ watching
    def _watch(self) -> None:
        # not niced: a thread of the caller's process at a lower priority can be preempted while it
        # holds the GIL or the stats lock, and the probe then waits for it (a 110 ms stall seen)
        done = False
        last_stats = time.monotonic()
        try:
            while True:
                ready, _, _ = select.select([self.status], [], [], STATS_EVERY_S)
                if ready:
                    msg = receive(self.status)
                    if msg is None:
                        break
                    what, values = msg[1]
                    with self.report_lock:
                        self.child = values
                    done = done or what == "done"
                    if values.get("failed_reason"):
                        self.failed = True
                if time.monotonic() - last_stats >= STATS_EVERY_S:
                    last_stats = time.monotonic()
                    with self.control_lock:
                        if self.ctrl >= 0 and not self._send(CALLER_STATS, self._caller_stats()):
                            self.failed = True
        except Exception as exc:  # pragma: no cover - a garbled report: treated as a death
            self.stats.error("writer-process", exc)
        self.proc.wait()
        self.producer.close()
        self.ended = True
        if not done:
            self._died()
        with self.control_lock:
            self._close_control()
        self.status.close()
        try:
            os.close(self.wake_fd)
        except OSError:
            pass
        self.lock.close()

    def _died(self) -> None:
        """The child ended without closing the recording: what it had not committed is lost."""
        why = f"writer process died ({self.exit_text()}); frames committed before are kept"
        with self.report_lock:
            self.child = {**self.child, "failed_reason": f"WriterDied: {why}"}
        self.failed = True
        self.stats.count("errors")
        log.error("dsprobe recorder stopped (%s): %s", self.path, why)

    def exit_text(self) -> str:
        rc = self.proc.returncode
        if rc is None:
            return "running"
        if rc < 0:
            try:
                return f"killed by {signal.Signals(-rc).name}"
            except ValueError:
                return f"killed by signal {-rc}"
        return f"exit code {rc}"

    # ------------------------------------------------------------------ what the Recorder asks
    def merged_stats(self, out: dict[str, Any]) -> dict[str, Any]:
        """``out`` (the caller's snapshot) with the child's counters added. Once the child is gone,
        every frame sent that it did not settle (by its last report) is ``dropped_stopped``."""
        with self.report_lock:
            c = dict(self.child)
        if self.ended:
            sent = self.producer.sent
            unsent = max(0, out.get("queued", 0) - sent)  # counted, never sent (Ctrl-C)
            out["queued"] = out.get("queued", 0) - unsent
            out["dropped_stopped"] = out.get("dropped_stopped", 0) + unsent
            flushed = int(c.get("frames_flushed", 0))
            settled = flushed + int(c.get("dropped_invalid", 0)) + int(c.get("dropped_stopped", 0))
            c["dropped_stopped"] = int(c.get("dropped_stopped", 0)) + max(0, sent - settled)
            c["written"] = flushed
            c["queued"] = -sent
        for k in COUNTERS:
            out[k] = out.get(k, 0) + int(c.get(k, 0))
        for k in ("failed_reason", "last_error"):
            if c.get(k):
                out[k] = c[k]
        out["writer_cpu_s"] = float(c.get("writer_cpu_s", 0.0))
        return out

    def is_alive(self) -> bool:
        return self.watcher.is_alive()

    def join(self, timeout: float | None) -> None:
        self.watcher.join(timeout)

    def _close_pipes(self) -> None:
        self._close_control()
        for close in (lambda: os.close(self.wake_fd), self.status.close):
            try:
                close()
            except OSError:
                pass


# ---------------------------------------------------------------------- the child
class RingFrames:
    """The writer loop's queue in the child: frames from the ring, the caller's counters and the
    end from the control pipe (``get`` / ``pop`` / ``qsize``, as :class:`FrameQueue`)."""

    def __init__(self, consumer: Consumer, ctrl: io.FileIO, wake: int, stats: RecorderStats):
        self.consumer, self.ctrl, self.wake, self.stats = consumer, ctrl, wake, stats
        self.ended = False  # END came (or the caller is gone): STOP once the ring is empty
        self.stopped = False  # STOP was handed out
        self.last_control = time.monotonic()

    def qsize(self) -> int:
        return self.consumer.in_flight()

    def pressed(self) -> bool:
        """True when the frames taken hold more than half the ring: their block is written now,
        not once ``block_frames`` frames wait (which a small ring could never hold)."""
        return self.consumer.held_bytes() > self.consumer.ring.size // 2

    def pop(self) -> Any:
        """The next frame (frame, recv_ns), STOP once after the end, else None (never waits)."""
        now = time.monotonic()
        if now - self.last_control >= CONTROL_EVERY_S:
            self.last_control = now
            if select.select([self.ctrl], [], [], 0)[0]:
                self._control()
        while True:
            item = self.consumer.take()
            if item is None:
                break
            frame, recv_ns = item
            if isinstance(frame, BaseException):  # a record that cannot be loaded here
                self.stats.move("queued", "dropped_invalid")
                self.stats.error("invalid-frame", frame)
                continue
            return item
        if self.ended and not self.stopped:
            self.stopped = True
            return STOP
        return None

    def get(self, timeout: float) -> Any:
        """The next item, waiting up to ``timeout`` seconds for one; None when there is none."""
        item = self.pop()
        deadline = time.monotonic() + timeout
        while item is None and not self.stopped:
            self.consumer.sleeping(True)
            fence()  # the flag before the look at the write index (the producer: the reverse)
            item = self.pop()
            left = deadline - time.monotonic()
            if item is not None or left <= 0:
                self.consumer.sleeping(False)
                return item
            ready, _, _ = select.select([self.wake, self.ctrl], [], [], left)
            self.consumer.sleeping(False)
            if self.wake in ready:
                os.read(self.wake, 1 << 16)
            if self.ctrl in ready:
                self._control()
            item = self.pop()
        return item

    def _control(self) -> None:
        if self.ended:
            return
        msg = receive(self.ctrl)
        if msg is None or msg[0] == END:  # END, or the caller died: finish what the ring holds
            self.ended = True
            return
        kind, obj = msg
        if kind == CALLER_STATS:
            self.stats.base = obj["counters"]
            for section, values in obj["sections"].items():
                self.stats.update_section(section, values)


def child_main() -> None:
    """Entry point of the writer process: ``argv``: root, control pipe, report pipe, wake-up pipe,
    lock fd, ring memory fd, ring bytes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller stops us (close / atexit)
    lower_priority()
    r_ctrl, w_status, r_wake, lock_fd, mem, nbytes = (int(v) for v in sys.argv[2:8])
    ring = Ring(mem, nbytes)
    os.close(mem)
    ctrl = io.FileIO(r_ctrl, "rb")

    def report(what: str, values: Any) -> None:
        try:
            send(w_status, 0, (what, values))
        except OSError:  # the caller is gone: nothing to tell
            pass

    first = receive(ctrl)
    if first is None or first[0] != INIT:
        return
    path_text, options, header, head_len = first[1]
    path = Path(path_text)
    stats = RecorderStats(path)
    lock = OutputLock.inherited(path, lock_fd, head_len)
    frames = RingFrames(Consumer(ring), ctrl, r_wake, stats)
    loop = WriteLoop(path, options, header, frames, stats, lock)

    started = [time.process_time()]

    def own() -> dict[str, Any]:
        with stats.lock:
            values = dict(stats.values)
        # the CPU writing took (as the thread's): the interpreter's start and imports left out
        values["writer_cpu_s"] = time.process_time() - started[0]
        return values

    loop.report = lambda: report("stats", own())
    try:
        loop.open()
    except Exception as exc:
        report("error", f"{type(exc).__name__}: {exc}")
        lock.close()
        return
    report("ready", {})
    started[0] = time.process_time()
    loop.run()
    report("done", own())
