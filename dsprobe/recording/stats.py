"""The Recorder's counters, shared by the caller side and the writer thread under one lock
(:class:`RecorderStats`); a warning is logged the first time each kind of error happens."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Mapping

from dsprobe.recording.schema import jsonable

log = logging.getLogger("dsprobe.recorder")

COUNTERS = (
    "received",
    "queued",
    "written",
    "frames_flushed",
    "dropped_queue_full",
    "dropped_rate_limited",
    "dropped_stopped",
    "dropped_invalid",
    "errors",
    "flushes",
    "segments",
    "bytes_written",
)


class RecorderStats:
    """Counters (see :data:`COUNTERS`), ``failed_reason``, ``last_error`` and extra sections."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.values: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
        self.values.update(failed_reason=None, last_error=None, writer_cpu_s=0.0)
        self.sections: dict[str, dict] = {}
        #: counters kept elsewhere and added to a snapshot (a writer process gets the caller's)
        self.base: dict[str, int] = {}
        self._error_kinds: set[str] = set()

    def count(self, *keys: str, n: int = 1) -> None:
        with self.lock:
            for key in keys:
                self.values[key] += n

    def move(self, src: str, dst: str, n: int = 1) -> None:
        """Move ``n`` from counter ``src`` to ``dst`` (a frame changing state: the sum stays)."""
        with self.lock:
            self.values[src] -= n
            self.values[dst] += n

    def set(self, **values: Any) -> None:
        with self.lock:
            self.values.update(values)

    def get(self, key: str) -> Any:
        return self.values[key]

    def update_section(self, section: str, values: Mapping[str, Any]) -> None:
        if section in self.values:
            raise ValueError(f"stats section {section!r} clashes with a recorder counter")
        with self.lock:
            self.sections.setdefault(section, {}).update(jsonable(values))

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            out = dict(self.values)
            for k, v in self.base.items():
                out[k] += v
            out.update({k: dict(v) for k, v in self.sections.items()})
            return out

    def first(self, kind: str) -> bool:
        """True the first time ``kind`` is seen (to log each kind of trouble once)."""
        with self.lock:
            new = kind not in self._error_kinds
            self._error_kinds.add(kind)
        return new

    def error(self, kind: str, exc: BaseException) -> None:
        """Count an error; log it the first time its kind happens."""
        with self.lock:
            self.values["errors"] += 1
            self.values["last_error"] = f"{kind}: {exc}"
        if self.first(kind):
            log.warning(
                "dsprobe recorder (%s): %s: %s (further errors of this kind are only counted)",
                self.path,
                kind,
                str(exc),  # not the exception: a log record kept (a capture) would keep its frames
            )

    def fail(self, exc: BaseException) -> None:
        """Record the reason the recorder stopped."""
        reason = f"{type(exc).__name__}: {exc}"
        with self.lock:
            self.values["failed_reason"] = reason
            self.values["errors"] += 1
        log.error(
            "dsprobe recorder stopped (%s): %s; frames flushed before this are kept",
            self.path,
            reason,
        )
