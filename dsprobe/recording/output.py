"""Where a Recorder writes, made safe before the first frame: one writer per path (an exclusive
``flock`` on ``<file>.lock`` beside the recording, which names its holder), no overwriting an
existing recording or segment series unless asked, never onto the writer's own inputs, and a
reserve of disk space held in the lock file and given back for the closing flush when the disk fills.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

#: bytes held in the lock file while recording and released for the closing flush when the disk fills
RESERVE_BYTES = 2 << 20


class OutputError(OSError):
    """The output path cannot be written: in use, already recorded, one of the inputs, unwritable."""


def lock_path(path: Path) -> Path:
    """The lock file of the recording ``path`` (``run.h5`` -> ``run.h5.lock``)."""
    return path.with_name(path.name + ".lock")


def series_files(path: Path) -> list[Path]:
    """Existing files that ``open_recording(path)`` would read: the file and its numbered segments."""
    out = [path] if path.exists() else []
    pattern = f"{path.stem}-[0-9][0-9][0-9][0-9][0-9]{path.suffix or '.h5'}"
    return out + sorted(path.parent.glob(pattern))


def holder_text(path: Path) -> str | None:
    """Who holds the lock of recording ``path`` (``pid 123 on host x (dsprobe record-onnx), since
    ...``), or None when nobody does (no lock file, or its process is gone)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    try:
        fd = os.open(lock_path(path), os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None  # nobody holds it
        except OSError:
            pass
        return _describe(os.pread(fd, 4096, 0))
    finally:
        os.close(fd)


def _describe(raw: bytes) -> str:
    try:
        info = json.loads(raw.split(b"\0", 1)[0].decode("utf-8"))
        return (
            f"pid {info['pid']} on host {info['host']} ({info['program']}), since {info['since']}"
        )
    except (ValueError, KeyError, TypeError):
        return "another process"


class OutputLock:
    """Exclusive hold on a recording path for one writer; ``release_reserve`` frees the disk space
    kept for the closing flush, ``close`` lets go (and removes the lock file)."""

    def __init__(
        self, path: Path, overwrite: bool = False, inputs: Iterable[str | os.PathLike] = ()
    ) -> None:
        self.path = path
        check_not_input(path, inputs)
        self.lock_file = lock_path(path)
        self.owner = True  # removes the lock file when it lets go
        self.fd = self._acquire()
        try:
            existing = series_files(path)
            if existing and not overwrite:
                raise OutputError(
                    f"{path}: a recording is already there ({', '.join(p.name for p in existing)}); "
                    "pass overwrite=True (--overwrite) to replace it, or choose another path"
                )
            for p in existing:
                p.unlink()
            self._reserve()
        except BaseException:
            self.close()
            raise

    @classmethod
    def inherited(cls, path: Path, fd: int, head_len: int) -> "OutputLock":
        """The lock as a writer process holds it: the caller's locked descriptor, inherited. Its
        ``release_reserve`` frees the reserve; its ``close`` only closes the descriptor (the caller
        removes the lock file once the writer has ended)."""
        lock = cls.__new__(cls)
        lock.path, lock.lock_file, lock.fd, lock.head_len = path, lock_path(path), fd, head_len
        lock.owner = False
        return lock

    def _acquire(self) -> int:
        import fcntl

        for _ in range(10):
            try:
                fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputError(
                    f"{self.path}: cannot write in {self.path.parent}: {exc.strerror or exc}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                who = _describe(os.pread(fd, 4096, 0))
                os.close(fd)
                raise OutputError(
                    f"{self.path}: another recorder is writing this recording ({who}); "
                    "choose another path or stop that one first"
                ) from None
            # the file we locked must still be the one at the path (a closing writer unlinks it)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lock_file).st_ino
            except OSError:
                same = False
            if same:
                return fd
            os.close(fd)
        raise OutputError(
            f"{self.path}: could not take the lock {self.lock_file}"
        )  # pragma: no cover

    def _reserve(self) -> None:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "program": " ".join(sys.argv[:2]) or "python",
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        head = json.dumps(info).encode("utf-8") + b"\0"
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, head, 0)
        try:  # real blocks (fallocate; written zeros where it is missing), not a sparse hole
            os.posix_fallocate(self.fd, len(head), RESERVE_BYTES)
        except (AttributeError, OSError):
            os.pwrite(self.fd, bytes(RESERVE_BYTES), len(head))
        self.head_len = len(head)

    def release_reserve(self) -> None:
        """Give the reserved space back to the file system (for the closing flush)."""
        if self.fd >= 0:
            try:
                os.ftruncate(self.fd, self.head_len)
            except OSError:
                pass

    def close(self) -> None:
        if self.fd < 0:
            return
        if self.owner:
            try:
                self.lock_file.unlink()
            except OSError:
                pass
        os.close(self.fd)
        self.fd = -1


def check_output(path: Path, overwrite: bool, inputs: Iterable[str | os.PathLike]) -> None:
    """The checks :class:`OutputLock` makes, without taking the lock: for a caller that wants to fail
    before a long setup (loading models) rather than at the Recorder."""
    check_not_input(path, inputs)
    who = holder_text(path)
    if who is not None:
        raise OutputError(f"{path}: another recorder is writing this recording ({who})")
    existing = series_files(path)
    if existing and not overwrite:
        raise OutputError(
            f"{path}: a recording is already there ({', '.join(p.name for p in existing)}); "
            "pass overwrite=True (--overwrite) to replace it, or choose another path"
        )
    parent = path.parent if str(path.parent) else Path(".")
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot write in {probe}")


def config_inputs(configs: Mapping[int, Any]) -> list[str]:
    """The files a recorder reads for its nvinfer configs (config files and their label files)."""
    out = []
    for cfg in configs.values():
        if cfg.path:
            out.append(cfg.path)
            if cfg.labelfile_path:
                out.append(str(Path(cfg.path).parent / cfg.labelfile_path))
    return out


def check_not_input(path: Path, inputs: Iterable[str | os.PathLike]) -> None:
    """OutputError when ``path`` (or, for a series, one of its segments) is one of ``inputs``."""
    out = _real(path)
    for p in inputs:
        if p is None:
            continue
        q = _real(Path(p))
        segment = re.fullmatch(
            re.escape(out.stem) + r"-\d{5}" + re.escape(out.suffix or ".h5"), q.name
        )
        if q == out or (q.parent == out.parent and segment):
            raise OutputError(f"{path}: the output would overwrite an input ({p})")


def _real(p: Path) -> Path:
    try:
        return p.resolve()
    except OSError:  # pragma: no cover
        return p.absolute()
