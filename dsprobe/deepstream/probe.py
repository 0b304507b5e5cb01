"""``attach_recorder``: a pad probe that turns DeepStream metadata into FrameRecords for a Recorder.

Runs on the streaming thread: per frame and GIE it makes the Recorder's rate-limit decision first
(a skipped frame copies nothing), then copies each output layer once (ctypes address + one numpy
copy) and, if asked, a strided downscale of the frame and object crops; JPEG encoding and HDF5 happen
on the Recorder's thread. It never raises into the pipeline and always returns
``Gst.PadProbeReturn.OK``: errors are counted per kind, logged once, and stored with the stats.

Where things come from (docs/pyds-notes.md): PGIE tensors from ``frame_user_meta_list``, SGIE tensors from
each object's ``obj_user_meta_list``; GIEs told apart by ``tensor_meta.unique_id`` (gie-unique-id);
``network_size`` from ``tensor_meta.network_info`` (zeros on pyds < 1.1.1); ``frame_size`` (the
space of object rects) is the nvstreammux output size: ``muxer_size=`` if given, else the
pipeline's nvstreammux ``width``/``height`` properties, else the size of the probed RGBA surface
(right unless an nvvideoconvert upstream of the probe scales), else the source size with a warning.
"""

from __future__ import annotations

import abc
import logging
import time
from collections import deque
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import numpy as np

from dsprobe.deepstream import bindings
from dsprobe.deepstream.meta import (
    frame_metas,
    network_size,
    object_metas,
    parent_indices,
    read_tensor_meta,
    rect_of,
    tensor_metas,
)
from dsprobe.deepstream.surface import SurfaceReader, crop_copy, downscaled_copy, is_jetson
from dsprobe.records import UNTRACKED_OBJECT_ID, FrameRecord, ImageRecord, ObjectRecord

log = logging.getLogger("dsprobe.deepstream")

#: frames without any (wanted) tensor meta before the one-time "no tensor meta" warning
NO_TENSOR_META_FRAMES = 30


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


def find_muxer_size(target: Any) -> tuple[int, int] | None:
    """(width, height) of the pipeline's nvstreammux, walking up from an element; None if not found."""
    try:
        top = target if not hasattr(target, "add_probe") else target.get_parent_element()
        while top is not None and top.get_parent() is not None:
            top = top.get_parent()
        it = top.iterate_recurse() if top is not None else None
        while it is not None:
            ok, el = it.next()
            if ok != 1:  # Gst.IteratorResult.OK
                break
            factory = el.get_factory()
            if factory is not None and factory.get_name() == "nvstreammux":
                return int(el.get_property("width")), int(el.get_property("height"))
    except Exception:
        return None
    return None


class PadProbe(abc.ABC):
    """Base of dsprobe's pad-probe callbacks: times each batch, walks its frames, counts errors (per
    frame: a bad frame costs only itself), always returns OK.

    Subclasses implement ``_frame(pyds, buf_hash, batch_meta, frame_meta)``; ``lock_meta = True``
    holds ``nvds_acquire_meta_lock`` over the walk (for probes that add meta); ``_after_frames``
    runs after each batch's frames, ``_after_batch()`` after the timing is recorded."""

    stats: ProbeStats
    lock_meta = False

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
        if self.lock_meta:
            pyds.nvds_acquire_meta_lock(batch_meta)
        try:
            for frame_meta in frame_metas(pyds, batch_meta):
                self.stats.frames += 1
                try:
                    self._frame(pyds, buf_hash, batch_meta, frame_meta)
                except Exception as exc:
                    self.stats.error(f"frame:{type(exc).__name__}", exc)
        finally:
            if self.lock_meta:
                pyds.nvds_release_meta_lock(batch_meta)
        self._after_frames(pyds, batch_meta)

    @abc.abstractmethod
    def _frame(self, pyds: Any, buf_hash: int, batch_meta: Any, frame_meta: Any) -> None:
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


class RecorderProbe(PadProbe):
    """The recording probe callback (a plain callable, so it is testable without GStreamer).

    Options (all keyword): ``unique_ids`` (gie-unique-ids to record; None: all), ``images`` (full
    frame picture; default: the recorder's ``images``), ``object_crops`` (a crop per recorded SGIE
    object), ``image_max_size`` (longest side of pictures and crops; default: the recorder's),
    ``muxer_size`` ((width, height) of the nvstreammux output), ``record_detections`` (the
    NvDsObjectMeta on the frame as ``FrameRecord.detections``), ``layers`` (layer names to copy;
    default: the recorder's selection), ``jetson`` (unmap surfaces; default: detected),
    ``stats_every_s`` (how often the stats go to ``recorder.update_stats("probe", ...)``).

    ``ObjectRecord.parent_index`` indexes the frame's NvDsObjectMeta list in order, which is
    ``FrameRecord.detections`` (also for the objects of an SGIE record).
    """

    def __init__(
        self,
        recorder: Any,
        *,
        unique_ids: Iterable[int] | None = None,
        images: bool | None = None,
        object_crops: bool = False,
        image_max_size: int | None = None,
        muxer_size: tuple[int, int] | None = None,
        record_detections: bool = True,
        layers: Iterable[str] | None = None,
        jetson: bool | None = None,
        stats_every_s: float = 2.0,
    ) -> None:
        self.recorder = recorder
        self.unique_ids = frozenset(int(u) for u in unique_ids) if unique_ids is not None else None
        recorder_images = bool(getattr(recorder, "images", True))
        self.images = recorder_images if images is None else bool(images) and recorder_images
        self.object_crops = bool(object_crops) and recorder_images
        # copy no more than the recorder keeps
        self.image_max_size = (
            int(getattr(recorder, "image_max_size", 640) or 0)
            if image_max_size is None
            else int(image_max_size)
        )
        if layers is None:
            layers = getattr(recorder, "layers", None)
        self.layers = frozenset(layers) if layers is not None else None
        self.muxer_size = (
            (int(muxer_size[0]), int(muxer_size[1])) if muxer_size is not None else None
        )
        self.record_detections = record_detections
        self.stats = ProbeStats()
        self.surfaces = SurfaceReader(
            is_jetson() if jetson is None else jetson,
            lambda msg: self.stats.warn_once("surface-format", msg),
        )
        self.stats_every_s = stats_every_s
        self._last_stats = 0.0
        self._seen_tensor_meta = False

    # ------------------------------------------------------------------ stats
    def _after_batch(self) -> None:  # noqa: B027 (optional hook)
        now = time.perf_counter()
        if now - self._last_stats >= self.stats_every_s:
            self._last_stats = now
            self.flush_stats()

    def flush_stats(self) -> None:  # noqa: B027 (optional hook)
        try:
            self.recorder.update_stats("probe", self.stats.as_dict())
        except Exception as exc:
            self.stats.error("update_stats", exc)

    # ------------------------------------------------------------------ per batch / frame
    def _after_frames(self, pyds: Any, batch_meta: Any) -> None:  # noqa: B027 (optional hook)
        if not self._seen_tensor_meta and self.stats.frames >= NO_TENSOR_META_FRAMES:
            self._warn_no_tensor_meta(pyds, batch_meta)

    def _frame(self, pyds: Any, buf_hash: int, batch_meta: Any, fm: Any) -> None:
        source_id, pts = int(fm.source_id), int(fm.buf_pts)
        frame_level = list(tensor_metas(pyds, fm.frame_user_meta_list, self.unique_ids))
        objects = list(object_metas(pyds, fm))
        per_object: dict[int, list[tuple[int, Any]]] = {}
        for k, om in enumerate(objects):
            for tm in tensor_metas(pyds, om.obj_user_meta_list, self.unique_ids):
                per_object.setdefault(int(tm.unique_id), []).append((k, tm))
        uids = sorted({int(tm.unique_id) for tm in frame_level} | set(per_object))
        if not uids:
            return
        self._seen_tensor_meta = True
        admitted = []
        for uid in uids:  # the rate-limit decision comes before any copy
            if self.recorder.admit(source_id, pts, uid):
                admitted.append(uid)
            else:
                self.stats.frames_skipped += 1
        if not admitted:
            return
        crops = self.object_crops and any(per_object.get(uid) for uid in admitted)
        want_surface = self.images or crops or self.muxer_size is None
        with (
            self.surfaces.mapped(pyds, buf_hash, int(fm.batch_id))
            if want_surface
            else _nothing() as surface
        ):
            if surface is not None and self.muxer_size is None:
                self.muxer_size = (int(surface.shape[1]), int(surface.shape[0]))
            frame_size = self._frame_size(fm)
            image = None
            if self.images and surface is not None:
                image = ImageRecord(
                    downscaled_copy(surface, self.image_max_size),
                    (0.0, 0.0, float(frame_size[0]), float(frame_size[1])),
                )
            parents = parent_indices(pyds, objects) if objects else []
            detections = (
                [self._object(om, parents[k]) for k, om in enumerate(objects)]
                if self.record_detections
                else []
            )
            for uid in admitted:
                try:  # one GIE's bad meta does not cost the other GIEs' records of this frame
                    self._record(
                        pyds,
                        fm,
                        uid,
                        frame_level,
                        per_object.get(uid, ()),
                        objects,
                        parents,
                        detections,
                        image,
                        surface if crops else None,
                        frame_size,
                    )
                except Exception as exc:
                    self.stats.error(f"frame:{type(exc).__name__}", exc)

    def _record(
        self,
        pyds: Any,
        fm: Any,
        uid: int,
        frame_level: list,
        per_object: Iterable[tuple[int, Any]],
        objects: list,
        parents: list[int],
        detections: list[ObjectRecord],
        image: ImageRecord | None,
        surface: np.ndarray | None,
        frame_size: tuple[int, int],
    ) -> None:
        """Copy GIE ``uid``'s tensors of one frame (and crops from ``surface`` if given) into a record."""
        layers: dict[str, np.ndarray] = {}
        net = (0, 0, 0)
        for tm in frame_level:
            if int(tm.unique_id) == uid:
                self.stats.tensor_metas += 1
                layers = read_tensor_meta(pyds, tm, self.layers)
                net = network_size(tm)
        objs = []
        for k, tm in per_object:
            self.stats.tensor_metas += 1
            net = network_size(tm)
            crop = None
            if surface is not None:
                got = crop_copy(surface, rect_of(objects[k]), frame_size, self.image_max_size)
                crop = None if got is None else ImageRecord(*got)
            objs.append(
                self._object(objects[k], parents[k], read_tensor_meta(pyds, tm, self.layers), crop)
            )
        record = FrameRecord(
            source_id=int(fm.source_id),
            frame_num=int(fm.frame_num),
            pts_ns=int(fm.buf_pts),
            unique_id=uid,
            network_size=net,
            frame_size=frame_size,
            layers=layers,
            objects=objs,
            detections=detections,
            image=image,
            ntp_timestamp=int(fm.ntp_timestamp),
            batch_id=int(fm.batch_id),
            pad_index=int(fm.pad_index),
        )
        if self.recorder.record(record, admitted=True):
            self.stats.frames_recorded += 1

    def _frame_size(self, fm: Any) -> tuple[int, int]:
        """The nvstreammux output size (see the module docstring), else the source size with a warning."""
        if self.muxer_size is not None:
            return self.muxer_size
        self.stats.warn_once(
            "muxer-size",
            "nvstreammux output size unknown (no nvstreammux found, no RGBA "
            "surface at the probe): using the source frame size. Pass attach_recorder(..., "
            "muxer_size=(width, height)) so boxes map to the right space",
        )
        return (int(fm.source_frame_width), int(fm.source_frame_height))

    def _warn_no_tensor_meta(self, pyds: Any, batch_meta: Any) -> None:
        others: set[int] = set()
        if self.unique_ids is not None:  # tensor meta there, but only from GIEs not asked for?
            for fm in frame_metas(pyds, batch_meta):
                others |= {int(tm.unique_id) for tm in tensor_metas(pyds, fm.frame_user_meta_list)}
                for om in object_metas(pyds, fm):
                    others |= {
                        int(tm.unique_id) for tm in tensor_metas(pyds, om.obj_user_meta_list)
                    }
        if others:
            self.stats.warn_once(
                "no-tensor-meta",
                f"no tensor meta from unique_ids={sorted(self.unique_ids)} in "
                f"{self.stats.frames} frames, only from gie-unique-id {sorted(others)}: check "
                "gie-unique-id in the configs, and probe downstream of every GIE you record "
                "(an SGIE's tensors are attached only after it ran)",
            )
        else:
            self.stats.warn_once(
                "no-tensor-meta",
                f"no NvDsInferTensorMeta in {self.stats.frames} frames: set "
                "output-tensor-meta=1 in the nvinfer config (or the element property) and probe "
                "downstream of the nvinfer element (its src pad or later). PGIE tensors are in "
                "frame_user_meta_list, SGIE tensors (process-mode=2) in each object's "
                "obj_user_meta_list; dsprobe reads both.",
            )

    @staticmethod
    def _object(
        om: Any, parent_index: int, layers: dict | None = None, crop: ImageRecord | None = None
    ) -> ObjectRecord:
        parent = om.parent
        return ObjectRecord(
            rect=rect_of(om),
            class_id=int(om.class_id),
            confidence=float(om.confidence),
            object_id=int(om.object_id),
            unique_component_id=int(om.unique_component_id),
            label=str(om.obj_label or ""),
            parent_index=parent_index,
            parent_object_id=int(parent.object_id) if parent is not None else UNTRACKED_OBJECT_ID,
            layers=layers or {},
            image=crop,
        )


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def attach_recorder(target: Any, recorder: Any, **options: Any) -> ProbeHandle:
    """Record the tensor output of the GIE(s) upstream of ``target`` into ``recorder``.

    ``target``: an nvinfer element (the probe goes on its src pad) or any Gst.Pad downstream of the
    GIEs (put it after an RGBA ``nvvideoconvert`` to get images). ``options``: see
    :class:`RecorderProbe` (``unique_ids``, ``images``, ``object_crops``, ``image_max_size``,
    ``muxer_size``, ``record_detections``, ``layers``, ``jetson``, ``stats_every_s``); ``muxer_size``
    is read from the pipeline's nvstreammux when not given. Returns a :class:`ProbeHandle`
    (``.stats``, ``.flush_stats()``, ``.detach()``).
    """
    if options.get("muxer_size") is None:
        options["muxer_size"] = find_muxer_size(target)
    return attach(target, RecorderProbe(recorder, **options))
