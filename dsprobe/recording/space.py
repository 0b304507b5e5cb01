"""Free-space checks done before every block write, so HDF5 never meets ENOSPC/EFBIG mid-write (a
failed HDF5 write leaves a file that cannot be closed cleanly): :func:`check_space` raises
:class:`NoSpace` while there is still room to flush and close the file."""

from __future__ import annotations

import shutil
from pathlib import Path

#: Room kept free besides what the next block and flush need, when judging "disk full" (the room
#: for closing the file is held apart, in the lock file's reserve: see output.py).
SPACE_MARGIN_BYTES = 1 << 20


class NoSpace(OSError):
    """Not enough room on the file system (or under RLIMIT_FSIZE) for the next block + the margin."""


def check_space(path: Path, pending: int, flush: int) -> None:
    """Raise NoSpace when the next block (``pending`` bytes), what the flush after it writes
    (``flush`` bytes) and the margin do not fit on the file system or under RLIMIT_FSIZE."""
    need = int(pending * 1.05) + flush + SPACE_MARGIN_BYTES
    free = shutil.disk_usage(path.parent).free
    if free < need:
        raise NoSpace(
            f"disk full: {free} bytes free on the file system of {path.parent}, "
            f"a block of {pending} bytes needs {need} with the margin"
        )
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):  # pragma: no cover - non-POSIX
        return
    if limit != resource.RLIM_INFINITY:
        size = path.stat().st_size if path.exists() else 0
        if size + need > limit:
            raise NoSpace(
                f"file size limit: {path} is {size} bytes, RLIMIT_FSIZE is {limit}, "
                f"a block of {pending} bytes needs {need} with the margin"
            )
