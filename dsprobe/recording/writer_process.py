"""The Recorder's writer in a child process (``RecorderOptions(writer="process")``, issue 20 item 6).

With the writer on a thread, HDF5 calls and the Python around them hold the GIL for milliseconds at a
time and the probe on DeepStream's streaming thread waits for it. Here the caller's process keeps
only ``record()`` (a deque append) and a feeder thread that pickles each frame (protocol 5: the
arrays' bytes go out of band, not through the pickle) and writes it to a pipe: ``os.write`` copies
the bytes into the kernel with the GIL released. A child process (plain ``python -c``, not
multiprocessing: nothing of the caller's ``__main__`` is re-run) reads the frames into fresh arrays
and runs the same :class:`~dsprobe.recording.write_loop.WriteLoop` as the thread does: validation,
JPEG encoding, HDF5 blocks, commits, rotation, the space checks.

The caller keeps the one-writer lock (``<file>.lock``, its reserve included); the child inherits
the locked descriptor, so the lock holds while either lives. The child ignores Ctrl-C (the caller's
``close()`` or ``atexit`` stops it), and ends cleanly, flushing what it has, when the caller dies.

Counters: the caller counts what ``record()`` decides, the child what the writer does, and
``Recorder.stats`` adds them (so ``received = written + dropped_* + queued`` holds). The child
reports after every commit; the caller forwards its counters and ``update_stats`` sections every
half second, so the stats stored in the file are at most that old (exact at close). If the child
dies (killed, out of memory), the caller sees its pipe close: the recorder stops
(``failed_reason`` says how the child ended), the frames it had taken but not committed are counted
in ``dropped_stopped`` (by its last report: a commit in the child's last instant may count as lost,
never the other way), and the file is left as its last commit made it (``closed_cleanly`` False, a
reader reads every committed frame; see docs/reliability.md)."""

from __future__ import annotations

import io
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import dsprobe
from dsprobe.recording.frame_queue import FrameQueue
from dsprobe.recording.options import RecorderOptions
from dsprobe.recording.output import OutputError, OutputLock
from dsprobe.recording.segment import SegmentHeader
from dsprobe.recording.stats import COUNTERS, RecorderStats, log
from dsprobe.recording.write_loop import STOP, WriteLoop

#: message kinds, caller -> child
INIT, FRAME, CALLER_STATS, END = 0, 1, 2, 3
#: a message: kind and number of parts; per part its pickle's length and number of out-of-band
#: buffers; then the buffers' lengths, the pickles, the buffers. Each part (a frame, or a report) is
#: pickled apart, so a frame the other side cannot load costs that frame only.
HEAD = struct.Struct("<BI")
PART = struct.Struct("<QI")
LENGTH = struct.Struct("<Q")
#: how often the caller's counters and sections reach the child (seconds)
STATS_EVERY_S = 0.5
#: the longest the caller waits for the child to open the file
START_TIMEOUT_S = 120.0
#: frames sent in one message at most
SEND_BATCH = 64
#: pipe buffer asked for (Linux raises it up to /proc/sys/fs/pipe-max-size, 1 MiB by default)
PIPE_BYTES = 1 << 20


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


class BadPart:
    """Stands for a part whose pickle could not be loaded here (``error``: why)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def send(fd: int, kind: int, objs: list) -> None:
    """One message of ``objs``, each pickled apart, contiguous numpy arrays' bytes out of band."""
    heads, pickles, raws = [HEAD.pack(kind, len(objs))], [], []
    for obj in objs:
        buffers: list[pickle.PickleBuffer] = []
        pickles.append(pickle.dumps(obj, protocol=5, buffer_callback=buffers.append))
        heads.append(PART.pack(len(pickles[-1]), len(buffers)))
        raws += [b.raw() for b in buffers]
    heads += [LENGTH.pack(r.nbytes) for r in raws]
    write_all(fd, b"".join(heads + pickles))
    for r in raws:
        write_all(fd, r)


def receive(f: io.FileIO) -> tuple[int, list] | None:
    """The next message (kind, its objects; a :class:`BadPart` for each that cannot be loaded),
    None at end of file (the other side closed or died)."""
    import numpy as np

    head = bytearray(HEAD.size)
    if not read_into(f, head):
        return None
    kind, n_parts = HEAD.unpack(head)
    parts = bytearray(PART.size * n_parts)
    if not read_into(f, parts):
        return None
    sizes = list(PART.iter_unpack(parts))
    lengths = bytearray(LENGTH.size * sum(n for _, n in sizes))
    pickles = [bytearray(n) for n, _ in sizes]
    if not read_into(f, lengths) or not all(read_into(f, p) for p in pickles):
        return None
    buffers = []
    for (n,) in LENGTH.iter_unpack(lengths):
        buf = np.empty(n, np.uint8)  # the arrays are views of these: owned, writable, aligned
        if not read_into(f, buf):
            return None
        buffers.append(buf)
    out, at = [], 0
    for data, (_, n_buf) in zip(pickles, sizes):
        try:
            out.append(pickle.loads(data, buffers=buffers[at : at + n_buf]))
        except Exception as exc:  # e.g. a class defined in the caller's __main__
            out.append(BadPart(exc))
        at += n_buf
    return kind, out


class WriterProcess:
    """The caller's side: starts the child, feeds it frames from ``frames``, watches it."""

    def __init__(
        self,
        path: Path,
        options: RecorderOptions,
        header: SegmentHeader,
        frames: FrameQueue,
        stats: RecorderStats,
        lock: OutputLock,
    ) -> None:
        self.path, self.frames, self.stats, self.lock = path, frames, stats, lock
        self.failed = False
        self.child: dict[str, Any] = {}  # the child's counters, as of its last report
        self.sent = 0  # frames handed to the child whole
        self.done = False  # the child said it closed the recording
        self.report_lock = threading.Lock()
        r_frames, w_frames = os.pipe()
        r_status, w_status = os.pipe()
        try:
            import fcntl

            fcntl.fcntl(w_frames, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
        except (ImportError, OSError):
            pass
        root = str(Path(dsprobe.__file__).resolve().parent.parent)
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); "
            "from dsprobe.recording.writer_process import child_main; child_main()"
        )
        args = [str(v) for v in (r_frames, w_status, lock.fd)]
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, root, *args],
                pass_fds=(r_frames, w_status, lock.fd),
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal reaches the caller only
            )
        finally:
            os.close(r_frames)
            os.close(w_status)
        self.fd = w_frames
        self.status = io.FileIO(r_status, "rb")
        try:
            send(self.fd, INIT, [(str(path), options, header, lock.head_len)])
            reply = receive(self.status)
        except OSError:
            reply = None
        if reply is None or reply[1][0][0] != "ready":
            self._close_pipes()
            self.proc.wait()
            why = reply[1][0][1] if reply else f"writer process ended ({self.exit_text()})"
            raise OutputError(f"{path}: cannot start the recording: {why}")
        self.feeder = threading.Thread(target=self._feed, name="dsprobe-recorder-feed", daemon=True)
        self.watcher = threading.Thread(
            target=self._watch, name="dsprobe-recorder-watch", daemon=True
        )
        self.feeder.start()
        self.watcher.start()

    # ------------------------------------------------------------------ feeding
    def _feed(self) -> None:
        last_stats = 0.0
        try:
            while True:
                item = self.frames.get(timeout=STATS_EVERY_S)
                batch = []  # the frames queued now go out in one message (one pickle, one header)
                while item is not None and item is not STOP and len(batch) < SEND_BATCH:
                    batch.append(item)
                    item = self.frames.pop() if len(batch) < SEND_BATCH else None
                if batch:
                    self._send_frames(batch)
                now = time.monotonic()
                if item is STOP or now - last_stats >= STATS_EVERY_S:
                    last_stats = now
                    if not self._send(CALLER_STATS, [self._caller_stats()]):
                        self._drain_after_death()
                        return
                if item is STOP:
                    self._send(END, [])
                    return
        finally:
            try:
                os.close(self.fd)  # end of file for the child: it finishes what it has
            except OSError:
                pass

    def _send_frames(self, batch: list) -> None:
        if self.failed:
            self.stats.move("queued", "dropped_stopped", n=len(batch))
            return
        try:
            ok = self._send(FRAME, batch)
        except Exception:  # one of them cannot be pickled: send them one by one
            for item in batch:
                try:
                    ok = self._send(FRAME, [item])
                except Exception as exc:  # a frame no writer could store
                    self.stats.move("queued", "dropped_invalid")
                    self.stats.error("invalid-frame", exc)
                    continue
                if ok:
                    self.sent += 1
                else:
                    self.stats.move("queued", "dropped_stopped")
            return
        if ok:
            self.sent += len(batch)
        else:
            self.stats.move("queued", "dropped_stopped", n=len(batch))

    def _send(self, kind: int, objs: list) -> bool:
        """False when the child is gone (broken pipe)."""
        try:
            send(self.fd, kind, objs)
            return True
        except OSError:
            self.failed = True
            return False

    def _caller_stats(self) -> dict[str, Any]:
        snap = self.stats.snapshot()
        counters = {k: snap[k] for k in COUNTERS}
        sections = {k: v for k, v in snap.items() if k not in self.stats.values}
        return {"counters": counters, "sections": sections}

    def _drain_after_death(self) -> None:
        while True:
            item = self.frames.pop()
            if item is None:
                return
            if item is not STOP:
                self.stats.move("queued", "dropped_stopped")

    # ------------------------------------------------------------------ watching
    def _watch(self) -> None:
        try:
            while True:
                msg = receive(self.status)
                if msg is None:
                    break
                what, values = msg[1][0]
                with self.report_lock:
                    self.child = values
                    if what == "done":
                        self.done = True
                if values.get("failed_reason"):
                    self.failed = True
        except Exception as exc:  # pragma: no cover - a garbled report: treated as a death
            self.stats.error("writer-process", exc)
        self.proc.wait()
        if not self.done:
            self._died()
        self.status.close()
        self.lock.close()

    def _died(self) -> None:
        """The child ended without closing the recording: what it had not committed is lost."""
        why = f"writer process died ({self.exit_text()}); frames committed before are kept"
        with self.report_lock:
            c = dict(self.child)
            flushed = int(c.get("frames_flushed", 0))
            settled = flushed + int(c.get("dropped_invalid", 0)) + int(c.get("dropped_stopped", 0))
            c["dropped_stopped"] = int(c.get("dropped_stopped", 0)) + max(0, self.sent - settled)
            c["written"] = flushed
            c["queued"] = -self.sent
            c["failed_reason"] = f"WriterDied: {why}"
            self.child = c
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
        """``out`` (the caller's snapshot) with the child's counters added."""
        with self.report_lock:
            c = dict(self.child)
        for k in COUNTERS:
            out[k] = out.get(k, 0) + int(c.get(k, 0))
        for k in ("failed_reason", "last_error"):
            if c.get(k):
                out[k] = c[k]
        out["writer_cpu_s"] = float(c.get("writer_cpu_s", 0.0))
        return out

    def is_alive(self) -> bool:
        return self.feeder.is_alive() or self.watcher.is_alive()

    def join(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in (self.feeder, self.watcher):
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def drain(self) -> None:
        self._drain_after_death()

    def _close_pipes(self) -> None:
        for close in (lambda: os.close(self.fd), self.status.close):
            try:
                close()
            except OSError:
                pass


# ---------------------------------------------------------------------- the child
def child_main() -> None:
    """Entry point of the writer process: ``argv``: root, frame pipe, report pipe, lock fd."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the caller stops us (close / atexit)
    r_frames, w_status, lock_fd = (int(v) for v in sys.argv[2:5])
    frames_in = io.FileIO(r_frames, "rb")
    report_lock = threading.Lock()

    def report(what: str, values: dict[str, Any]) -> None:
        try:
            with report_lock:
                send(w_status, 0, [(what, values)])
        except OSError:  # the caller is gone: nothing to tell
            pass

    first = receive(frames_in)
    if first is None or first[0] != INIT:
        return
    path_text, options, header, head_len = first[1][0]
    path = Path(path_text)
    stats = RecorderStats(path)
    lock = OutputLock.inherited(path, lock_fd, head_len)
    queue = FrameQueue(
        options.queue_size, wake_at=min(options.block_frames, options.queue_size // 2)
    )
    loop = WriteLoop(path, options, header, queue, stats, lock)

    def own() -> dict[str, Any]:
        with stats.lock:
            values = dict(stats.values)
        values["writer_cpu_s"] = time.process_time()
        return values

    loop.report = lambda: report("stats", own())
    try:
        loop.open()
    except Exception as exc:
        report("error", f"{type(exc).__name__}: {exc}")  # type: ignore[arg-type]
        lock.close()
        return
    report("ready", {})
    writer = threading.Thread(target=loop.run, name="dsprobe-writer", daemon=False)
    writer.start()
    _child_read(frames_in, loop, queue, stats, writer)
    while writer.is_alive():
        try:
            queue.put(STOP, timeout=0.5)
            break
        except Exception:
            continue
    writer.join()
    loop.drain()
    report("done", own())


def _child_read(
    frames_in: io.FileIO,
    loop: WriteLoop,
    queue: FrameQueue,
    stats: RecorderStats,
    writer: threading.Thread,
) -> None:
    """Hand the caller's frames to the writer thread until END or the end of the pipe."""
    while True:
        msg = receive(frames_in)
        if msg is None or msg[0] == END:  # END, or the caller died: finish what we have
            return
        kind, objs = msg
        for obj in objs:
            if isinstance(obj, BadPart):  # a frame that cannot be loaded here: that frame only
                stats.move("queued", "dropped_invalid")
                stats.error("invalid-frame", obj.error)
            elif kind == CALLER_STATS:
                stats.base = obj["counters"]
                for section, values in obj["sections"].items():
                    stats.update_section(section, values)
            elif kind == FRAME:
                _hand_over(obj, loop, queue, stats, writer)


def _hand_over(
    item: tuple, loop: WriteLoop, queue: FrameQueue, stats: RecorderStats, writer: threading.Thread
) -> None:
    while True:
        if loop.failed or not writer.is_alive():
            stats.move("queued", "dropped_stopped")
            return
        try:
            queue.put(item, timeout=0.5)
            return
        except Exception:  # full: the writer is busy; the pipe holds the caller back
            continue
