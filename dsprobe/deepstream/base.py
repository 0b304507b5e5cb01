"""What every dsprobe pad probe shares: stats, the handle ``attach_*`` returns, and the callback
base class that walks a batch, never raises into the pipeline and always returns
``Gst.PadProbeReturn.OK`` (errors are counted per kind, logged once, stored with the stats)."""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Iterator

import numpy as np

from dsprobe.deepstream import bindings
from dsprobe.deepstream.meta import frame_metas

log = logging.getLogger("dsprobe.deepstream")


class ProbeStats:
    """Counters and probe timing shared by the recorder and postprocess probes."""

    def __init__(self) -> None:
        self.batches = 0
        self.frames = 0
        self.frames_recorded = 0
        self.frames_skipped = 0
        self.tensor_metas = 0
        self.errors: dict[str, int] = {}
        self.warnings: set[str] = set()
        self._times = deque(maxlen=2048)
        self._total = 0.0

    def time(self, seconds: float) -> None:
        self._times.append(seconds)
        self._total += seconds

    def error(self, kind: str, exc: BaseException | str) -> None:
        n = self.errors.get(kind, 0)
        self.errors[kind] = n + 1
        if n == 0:
            log.error("dsprobe probe: %s: %s (counted from now on, not logged again)", kind, exc)

    def warn_once(self, kind: str, message: str) -> None:
        if kind not in self.warnings:
            self.warnings.add(kind)
            log.warning("dsprobe probe: %s", message)

    def as_dict(self) -> dict[str, Any]:
        t = np.asarray(self._times, dtype=np.float64) * 1e3
        return {
            "batches": self.batches,
            "frames": self.frames,
            "frames_recorded": self.frames_recorded,
            "frames_skipped": self.frames_skipped,
            "tensor_metas": self.tensor_metas,
            "errors": dict(self.errors),
            "error_count": sum(self.errors.values()),
            "warnings": sorted(self.warnings),
            "probe_ms_mean": float(self._total / self.batches * 1e3) if self.batches else 0.0,
            "probe_ms_p99": float(np.percentile(t, 99)) if len(t) else 0.0,
            "probe_ms_max": float(t.max()) if len(t) else 0.0,
        }


class ProbeHandle:
    """What ``attach_*`` returns: the pad, the probe id, live stats; ``detach()`` removes the probe."""

    def __init__(self, pad: Any, probe_id: int, stats: ProbeStats, callback: Any) -> None:
        self.pad = pad
        self.probe_id = probe_id
        self._stats = stats
        self.callback = callback

    @property
    def stats(self) -> dict[str, Any]:
        """Counters, errors per kind, warnings given, ``probe_ms_mean`` (all batches) and
        ``probe_ms_p99`` / ``probe_ms_max`` (the last 2048 batches), in milliseconds per batch."""
        return self._stats.as_dict()

    def flush_stats(self) -> None:  # noqa: B027 (optional hook)
        """Hand the current stats to the probe's Recorder now (it also does so every few seconds)."""
        self.callback.flush_stats()

    def detach(self) -> None:
        """Remove the probe from the pad, then flush its stats."""
        self.pad.remove_probe(self.probe_id)
        self.flush_stats()


def resolve_pad(target: Any) -> Any:
    """A Gst.Pad as is; an element gives its ``src`` pad (after nvinfer: where its meta is attached)."""
    if hasattr(target, "add_probe"):
        return target
    pad = target.get_static_pad("src")
    if pad is None:
        raise ValueError(
            f"element {target.get_name()} has no static 'src' pad; pass the pad to probe"
        )
    return pad


class PadProbe:
    """Base of dsprobe's pad-probe callbacks: times each batch, walks its frames, counts errors (per
    frame: a bad frame costs only itself), always returns OK.

    ``_batch_meta(pyds, buf_hash, batch_meta)`` handles a batch; by default it calls
    ``_frame(pyds, buf_hash, batch_meta, frame_meta)`` for each frame of :meth:`frames`.
    ``tensors`` (a :class:`~dsprobe.deepstream.tensors.TensorMetaReader`) gets ``begin_batch`` first.
    ``_after_frames`` runs after each batch's frames, ``_after_batch()`` after the timing."""

    stats: ProbeStats
    tensors: Any = None

    def __call__(self, pad: Any, info: Any, user_data: Any = None) -> Any:
        Gst = bindings.gst()
        t0 = time.perf_counter()
        try:
            self._batch(info)
        except Exception as exc:  # never into the pipeline
            self.stats.error(type(exc).__name__, exc)
        self.stats.batches += 1
        self.stats.time(time.perf_counter() - t0)
        self._after_batch()
        return Gst.PadProbeReturn.OK

    def _batch(self, info: Any) -> None:
        pyds = bindings.pyds()
        buf = info.get_buffer()
        if buf is None:
            return
        buf_hash = hash(buf)
        batch_meta = pyds.gst_buffer_get_nvds_batch_meta(buf_hash)
        if not batch_meta:
            self.stats.warn_once(
                "no-batch-meta",
                "buffer has no NvDsBatchMeta: probe a pad downstream of "
                "nvstreammux and nvinfer (e.g. the pgie's src pad)",
            )
            return
        if self.tensors is not None:
            self.tensors.begin_batch(pyds, batch_meta)
        self._batch_meta(pyds, buf_hash, batch_meta)
        self._after_frames(pyds, batch_meta)

    def frames(self, pyds: Any, batch_meta: Any) -> Iterator[Any]:
        """The batch's NvDsFrameMeta, counted in ``stats.frames``."""
        for frame_meta in frame_metas(pyds, batch_meta):
            self.stats.frames += 1
            yield frame_meta

    def _batch_meta(self, pyds: Any, buf_hash: int, batch_meta: Any) -> None:
        for frame_meta in self.frames(pyds, batch_meta):
            try:
                self._frame(pyds, buf_hash, batch_meta, frame_meta)
            except Exception as exc:
                self.stats.error(f"frame:{type(exc).__name__}", exc)

    def _frame(self, pyds: Any, buf_hash: int, batch_meta: Any, frame_meta: Any) -> None:  # noqa: B027
        """Handle one frame of the batch (``buf_hash`` = ``hash(gst_buffer)``)."""

    def _after_frames(self, pyds: Any, batch_meta: Any) -> None:  # noqa: B027 (optional hook)
        """Hook after the frames of each batch (default: nothing)."""

    def _after_batch(self) -> None:  # noqa: B027 (optional hook)
        """Hook after each batch (default: nothing)."""

    def flush_stats(self) -> None:  # noqa: B027 (optional hook)
        """Store the stats wherever the probe keeps them (default: nowhere)."""


def attach(target: Any, probe: PadProbe) -> ProbeHandle:
    """Add ``probe`` as a buffer probe on ``target`` (a pad, or an element's src pad).
    Raises ImportError saying what to install when pyds or Gst is missing (never later, in the probe)."""
    bindings.pyds()
    Gst = bindings.gst()
    pad = resolve_pad(target)
    probe_id = pad.add_probe(Gst.PadProbeType.BUFFER, probe, None)
    return ProbeHandle(pad, probe_id, probe.stats, probe)
