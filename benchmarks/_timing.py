"""Tiny timing helper shared by the benchmarks: median of repeated runs, side by side in one process."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def median_time(fn: Callable[[], object], repeat: int = 50, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def row(name: str, seconds: float, base: float | None = None, base_name: str = "") -> str:
    ratio = f"{seconds / base:6.2f}x {base_name}" if base else ""
    return f"  {name:<46} {seconds * 1e3:9.3f} ms  {ratio}"
