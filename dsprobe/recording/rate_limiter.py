"""Which frames to record: every Nth frame and at most ``max_fps`` per stream (:class:`RateLimiter`),
decided before anything is copied (the probe asks on DeepStream's streaming thread)."""

from __future__ import annotations

import time


class RateLimiter:
    """Every-Nth-frame and max-frames-per-second decisions per (source_id, unique_id) stream.

    ``max_fps`` is judged on the frame's PTS (so several GIEs keep the same frames); a stream whose
    PTS does not move (0, unknown) is judged on the host's monotonic clock. ``admit`` is cheap and is meant to
    be called *before* anything is copied (the probe uses it).
    """

    def __init__(self, every_n: int = 1, max_fps: float | None = None) -> None:
        if every_n < 1:
            raise ValueError(f"every_n must be >= 1, got {every_n}")
        if max_fps is not None and max_fps <= 0:
            raise ValueError(f"max_fps must be > 0, got {max_fps}")
        self.every_n = every_n
        self.min_interval_ns = int(1e9 / max_fps) if max_fps else 0
        #: every frame is admitted (every_n=1, no max_fps): callers may skip ``admit``
        self.admits_all = every_n == 1 and not self.min_interval_ns
        self._seen: dict[tuple[int, int], int] = {}
        self._last: dict[
            tuple[int, int], tuple[int, int]
        ] = {}  # stream -> (last kept PTS, host clock)

    def admit(self, source_id: int, pts_ns: int, unique_id: int = 0) -> bool:
        key = (source_id, unique_id)
        n = self._seen.get(key, 0)
        self._seen[key] = n + 1
        if n % self.every_n:
            return False
        if self.min_interval_ns:
            now = time.monotonic_ns()
            last = self._last.get(key)
            if last is not None:
                last_pts, last_clock = last
                # PTS not moving (unknown, 0): judge on the host clock; PTS jumping back (loop, seek): admit
                elapsed = now - last_clock if pts_ns == last_pts else pts_ns - last_pts
                if 0 <= elapsed < self.min_interval_ns:
                    return False
            self._last[key] = (pts_ns, now)
        return True
