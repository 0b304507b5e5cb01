"""``attach_recorder``: a pad probe that turns DeepStream metadata into FrameRecords for a Recorder.

Runs on the streaming thread: per frame it makes the rate-limit decision first, then copies each
output layer once (ctypes address + one numpy copy) and, if asked, a strided downscale of the frame;
JPEG encoding and HDF5 happen on the Recorder's thread. It never raises into the pipeline and always
returns ``Gst.PadProbeReturn.OK``.
"""

from __future__ import annotations

import abc
import logging
import math
import os
import platform
import time
from collections import deque
from typing import Any, Iterable

import numpy as np

from dsprobe.deepstream import bindings
from dsprobe.deepstream.meta import (frame_metas, network_size, object_metas, read_tensor_meta, rect_of,
                                     tensor_metas)
from dsprobe.types import FrameRecord, ImageRecord, ObjectRecord

log = logging.getLogger("dsprobe.deepstream")

RGBA_CAPS_FIX = ('add "nvvideoconvert ! capsfilter caps=video/x-raw(memory:NVMM),format=RGBA" before the probed '
                 "element (and on dGPU set nvbuf-memory-type=3 (CUDA unified) on nvstreammux/nvvideoconvert)")


def is_jetson() -> bool:
    """Integrated GPU (Jetson): aarch64 with the Tegra release file (SBSA servers are aarch64 too)."""
    return platform.machine() == "aarch64" and os.path.exists("/etc/nv_tegra_release")


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
        return {"batches": self.batches, "frames": self.frames, "frames_recorded": self.frames_recorded,
                "frames_skipped": self.frames_skipped, "tensor_metas": self.tensor_metas,
                "errors": dict(self.errors), "error_count": sum(self.errors.values()),
                "warnings": sorted(self.warnings),
                "probe_ms_mean": float(self._total / self.batches * 1e3) if self.batches else 0.0,
                "probe_ms_p99": float(np.percentile(t, 99)) if len(t) else 0.0,
                "probe_ms_max": float(t.max()) if len(t) else 0.0}


class ProbeHandle:
    """What ``attach_*`` returns: the pad, the probe id, live stats; ``detach()`` removes the probe."""

    def __init__(self, pad: Any, probe_id: int, stats: ProbeStats, callback: Any) -> None:
        self.pad = pad
        self.probe_id = probe_id
        self._stats = stats
        self.callback = callback

    @property
    def stats(self) -> dict[str, Any]:
        return self._stats.as_dict()

    def detach(self) -> None:
        self.pad.remove_probe(self.probe_id)


def resolve_pad(target: Any) -> Any:
    """A Gst.Pad as is; an element gives its ``src`` pad (after nvinfer: where its meta is attached)."""
    if hasattr(target, "add_probe"):
        return target
    pad = target.get_static_pad("src")
    if pad is None:
        raise ValueError(f"element {target.get_name()} has no static 'src' pad; pass the pad to probe")
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


class FrameGrabber:
    """Copies (a downscale of) the frame surface out of the buffer as an owned HxWx3 RGB array."""

    def __init__(self, max_size: int, jetson: bool, stats: ProbeStats) -> None:
        self.max_size = max_size
        self.jetson = jetson
        self.stats = stats
        self.enabled = True

    def grab(self, pyds: Any, buf_hash: int, frame_meta: Any) -> np.ndarray | None:
        if not self.enabled:
            return None
        bid = int(frame_meta.batch_id)
        try:
            surf = pyds.get_nvds_buf_surface(buf_hash, bid)
        except RuntimeError as exc:  # not RGBA/RGB: one clear warning, then tensors only
            self.enabled = False
            self.stats.warn_once("surface-format", f"cannot read frame pixels ({exc}); recording tensors without "
                                 f"images. To get images, {RGBA_CAPS_FIX}")
            return None
        try:
            h, w = surf.shape[:2]
            step = max(1, math.ceil(max(h, w) / self.max_size)) if self.max_size else 1
            return np.array(surf[::step, ::step, :3], copy=True, order="C")
        finally:
            if self.jetson:
                pyds.unmap_nvds_buf_surface(buf_hash, bid)

    def crop(self, frame_full: np.ndarray, frame_size: tuple[int, int], rect: tuple[float, float, float, float]
             ) -> np.ndarray | None:
        """A crop of an already grabbed (possibly downscaled) frame for an object rect in frame pixels."""
        fh, fw = frame_full.shape[:2]
        sx, sy = fw / frame_size[0], fh / frame_size[1]
        l, t, w, h = rect
        x0, y0 = max(0, int(l * sx)), max(0, int(t * sy))
        x1, y1 = min(fw, int(math.ceil((l + w) * sx))), min(fh, int(math.ceil((t + h) * sy)))
        if x1 <= x0 or y1 <= y0:
            return None
        return np.array(frame_full[y0:y1, x0:x1], copy=True)


class PadProbe(abc.ABC):
    """Base of dsprobe's pad-probe callbacks: times each batch, counts errors, always returns OK.

    Subclasses implement ``_batch(info)``; ``_after_batch()`` runs after the timing is recorded."""

    stats: ProbeStats

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

    @abc.abstractmethod
    def _batch(self, info: Any) -> None:
        """Handle one batch (GstBuffer in ``info``)."""

    def _after_batch(self) -> None:
        """Hook after each batch (default: nothing)."""


def attach(target: Any, probe: PadProbe) -> ProbeHandle:
    """Add ``probe`` as a buffer probe on ``target`` (a pad, or an element's src pad)."""
    Gst = bindings.gst()
    pad = resolve_pad(target)
    probe_id = pad.add_probe(Gst.PadProbeType.BUFFER, probe, None)
    return ProbeHandle(pad, probe_id, probe.stats, probe)


class RecorderProbe(PadProbe):
    """The recording probe callback (a plain callable, so it is testable without GStreamer)."""

    def __init__(self, recorder: Any, *, unique_ids: Iterable[int] | None = None, images: bool = True,
                 object_crops: bool = False, image_max_size: int | None = None, muxer_size: tuple[int, int] | None = None,
                 record_detections: bool = True, layers: Iterable[str] | None = None, jetson: bool | None = None,
                 stats_every_s: float = 2.0) -> None:
        self.recorder = recorder
        self.unique_ids = set(unique_ids) if unique_ids is not None else None
        self.images = images
        self.object_crops = object_crops
        self.muxer_size = muxer_size
        self.record_detections = record_detections
        self.layers = set(layers) if layers is not None else None
        self.stats = ProbeStats()
        if image_max_size is None:  # the recorder's setting, so the probe copies no more than is kept
            image_max_size = int(getattr(recorder, "image_max_size", 640) or 0)
        self.grabber = FrameGrabber(image_max_size, is_jetson() if jetson is None else jetson, self.stats)
        self.stats_every_s = stats_every_s
        self._last_stats = 0.0
        self._seen_tensor_meta = False

    def _after_batch(self) -> None:
        now = time.perf_counter()
        if now - self._last_stats >= self.stats_every_s:
            self._last_stats = now
            self._push_stats()

    def _push_stats(self) -> None:
        try:
            self.recorder.update_stats("probe", self.stats.as_dict())
        except Exception as exc:
            self.stats.error("update_stats", exc)

    def _batch(self, info: Any) -> None:
        pyds = bindings.pyds()
        buf = info.get_buffer()
        if buf is None:
            return
        buf_hash = hash(buf)
        batch_meta = pyds.gst_buffer_get_nvds_batch_meta(buf_hash)
        if not batch_meta:
            self.stats.warn_once("no-batch-meta", "buffer has no NvDsBatchMeta: probe the pad after nvstreammux/nvinfer")
            return
        for frame_meta in frame_metas(pyds, batch_meta):
            self.stats.frames += 1
            try:
                self._frame(pyds, buf_hash, frame_meta)
            except Exception as exc:
                self.stats.error(f"frame:{type(exc).__name__}", exc)
        if self.stats.frames >= 30 and not self._seen_tensor_meta:
            self.stats.warn_once("no-tensor-meta", "no NvDsInferTensorMeta seen in 30 frames: set output-tensor-meta=1 "
                                 "in the nvinfer config (or the element property), and probe downstream of the "
                                 "nvinfer element (its src pad). PGIE tensors are in frame_user_meta_list, SGIE "
                                 "tensors in each object's obj_user_meta_list.")

    def _frame(self, pyds: Any, buf_hash: int, fm: Any) -> None:
        source_id, pts = int(fm.source_id), int(fm.buf_pts)
        frame_level = [tm for tm in tensor_metas(pyds, fm.frame_user_meta_list) if self._wanted(tm)]
        objects = list(object_metas(pyds, fm)) if (fm.obj_meta_list is not None) else []
        per_object = {}
        for k, om in enumerate(objects):
            for tm in tensor_metas(pyds, om.obj_user_meta_list):
                if self._wanted(tm):
                    per_object.setdefault(int(tm.unique_id), []).append((k, tm))
        uids = {int(tm.unique_id) for tm in frame_level} | set(per_object)
        if uids:
            self._seen_tensor_meta = True
        frame_img = None
        for uid in sorted(uids):
            if not self.recorder.admit(source_id, pts, uid):  # decided before copying anything
                self.stats.frames_skipped += 1
                continue
            if frame_img is None and self.images:
                frame_img = self.grabber.grab(pyds, buf_hash, fm)
            frame_size = self._frame_size(pyds, buf_hash, fm)
            layers: dict[str, np.ndarray] = {}
            net = (0, 0, 0)
            for tm in frame_level:
                if int(tm.unique_id) == uid:
                    self.stats.tensor_metas += 1
                    layers = read_tensor_meta(pyds, tm, self.layers)
                    net = network_size(tm)
            objs = []
            for k, tm in per_object.get(uid, []):
                self.stats.tensor_metas += 1
                om = objects[k]
                net = network_size(tm)
                crop = None
                if self.object_crops and frame_img is not None:
                    c = self.grabber.crop(frame_img, frame_size, rect_of(om))
                    crop = None if c is None else ImageRecord(c, rect_of(om))
                objs.append(self._object(om, objects, read_tensor_meta(pyds, tm, self.layers), crop))
            dets = [self._object(om, objects, {}, None) for om in objects] if self.record_detections else []
            image = ImageRecord(frame_img, (0.0, 0.0, float(frame_size[0]), float(frame_size[1]))) \
                if frame_img is not None else None
            record = FrameRecord(source_id=source_id, frame_num=int(fm.frame_num), pts_ns=pts, unique_id=uid,
                                 network_size=net, frame_size=(int(frame_size[0]), int(frame_size[1])), layers=layers,
                                 objects=objs, detections=dets, image=image, ntp_timestamp=int(fm.ntp_timestamp),
                                 batch_id=int(fm.batch_id), pad_index=int(fm.pad_index))
            if self.recorder.record(record, admitted=True):
                self.stats.frames_recorded += 1

    def _frame_size(self, pyds: Any, buf_hash: int, fm: Any) -> tuple[int, int]:
        """The nvstreammux output size: given, or read once from the surface, else the source size."""
        if self.muxer_size is None and self.grabber.enabled:
            try:
                surf = pyds.get_nvds_buf_surface(buf_hash, int(fm.batch_id))
                self.muxer_size = (int(surf.shape[1]), int(surf.shape[0]))
                if self.grabber.jetson:
                    pyds.unmap_nvds_buf_surface(buf_hash, int(fm.batch_id))
            except RuntimeError:
                pass
        if self.muxer_size is None:
            self.stats.warn_once("muxer-size", "nvstreammux size unknown; using the source frame size. Pass "
                                 "attach_recorder(..., muxer_size=(width, height)) so boxes map to the right space")
            return (int(fm.source_frame_width), int(fm.source_frame_height))
        return self.muxer_size

    def _wanted(self, tm: Any) -> bool:
        return self.unique_ids is None or int(tm.unique_id) in self.unique_ids

    @staticmethod
    def _object(om: Any, objects: list, layers: dict, crop: ImageRecord | None) -> ObjectRecord:
        parent = om.parent
        parent_index = -1
        parent_id = 0xFFFFFFFFFFFFFFFF
        if parent is not None:
            parent_id = int(parent.object_id)
            for i, o in enumerate(objects):
                if o is parent or (int(o.object_id) == parent_id and rect_of(o) == rect_of(parent)):
                    parent_index = i
                    break
        return ObjectRecord(rect=rect_of(om), class_id=int(om.class_id), confidence=float(om.confidence),
                            object_id=int(om.object_id), unique_component_id=int(om.unique_component_id),
                            label=str(om.obj_label or ""), parent_index=parent_index, parent_object_id=parent_id,
                            layers=layers, image=crop)


def attach_recorder(target: Any, recorder: Any, **options: Any) -> ProbeHandle:
    """Record the tensor output of the GIE(s) upstream of ``target`` into ``recorder``.

    ``target``: an nvinfer element (the probe goes on its src pad) or any Gst.Pad downstream of the
    GIEs (put it after an RGBA ``nvvideoconvert`` to get images). Options: ``unique_ids`` (GIEs to
    keep), ``images``, ``object_crops``, ``image_max_size``, ``muxer_size`` (found from the pipeline's
    nvstreammux when possible), ``record_detections``, ``layers``, ``jetson``.
    """
    if options.get("muxer_size") is None:
        options["muxer_size"] = find_muxer_size(target)
    return attach(target, RecorderProbe(recorder, **options))
