"""``attach_recorder``: a pad probe that turns DeepStream metadata into FrameRecords for a Recorder.

Runs on the streaming thread: per frame and GIE it makes the Recorder's rate-limit decision first
(a skipped frame copies nothing), then copies each output layer once (ctypes address + one numpy
copy) and, if asked, a strided downscale of the frame and object crops; JPEG encoding and HDF5 happen
on the Recorder's thread. It never raises into the pipeline (see :mod:`dsprobe.deepstream.base`).

Where things come from: PGIE tensors from ``frame_user_meta_list``, SGIE tensors from each object's
``obj_user_meta_list``; GIEs told apart by ``tensor_meta.unique_id`` (gie-unique-id);
``network_size`` from ``tensor_meta.network_info`` (zeros on pyds < 1.1.1); ``frame_size`` per frame
as :mod:`dsprobe.deepstream.sizes` says; classifications from each object's
``classifier_meta_list``. What the probe checks when attached (configs, surface memory, tilers) is
in :func:`attach_recorder`.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dsprobe.deepstream.base import PadProbe, ProbeHandle, ProbeStats, attach
from dsprobe.deepstream.meta import (
    classifications,
    frame_metas,
    network_size,
    object_metas,
    parent_indices,
    read_tensor_meta,
    rect_of,
    tensor_metas,
)
from dsprobe.deepstream.sizes import FrameSizes
from dsprobe.deepstream.surface import SurfaceReader, crop_copy, downscaled_copy, is_jetson
from dsprobe.deepstream.tensors import TensorMetaReader
from dsprobe.records import UNTRACKED_OBJECT_ID, FrameRecord, ImageRecord, ObjectRecord

#: frames without any (wanted) tensor meta before the one-time "no tensor meta" warning
NO_TENSOR_META_FRAMES = 30


@dataclass(frozen=True)
class RecorderProbeOptions:
    """Options of :func:`attach_recorder` (all optional).

    * ``unique_ids``: gie-unique-ids to record (None: all).
    * ``images``: a downscaled picture of each recorded frame (default: the recorder's ``images``).
    * ``object_crops``: a crop of each object an SGIE inferred on.
    * ``image_max_size``: longest side of pictures and crops (default: the recorder's).
    * ``muxer_size``: (width, height) of the nvstreammux output (default: found in the pipeline).
    * ``record_detections``: the NvDsObjectMeta on the frame as ``FrameRecord.detections``.
    * ``record_classifications``: each object's ``classifier_meta_list`` as
      ``ObjectRecord.classifications``.
    * ``layers``: layer names to copy (default: the recorder's selection).
    * ``jetson``: integrated GPU (surfaces are mapped, no memory-type requirement); default detected.
    * ``cpu_surfaces``: dGPU only: True if you know the probed surfaces are CUDA unified or pinned
      memory; default: read from the upstream element's ``nvbuf-memory-type``.
    * ``stats_every_s``: how often the stats go to ``recorder.update_stats("probe", ...)``.
    """

    unique_ids: frozenset[int] | None = None
    images: bool | None = None
    object_crops: bool = False
    image_max_size: int | None = None
    muxer_size: tuple[int, int] | None = None
    record_detections: bool = True
    record_classifications: bool = True
    layers: frozenset[str] | None = None
    jetson: bool | None = None
    cpu_surfaces: bool | None = None
    stats_every_s: float = 2.0

    def __post_init__(self) -> None:
        if self.unique_ids is not None:
            object.__setattr__(self, "unique_ids", frozenset(int(u) for u in self.unique_ids))
        if self.layers is not None:
            object.__setattr__(self, "layers", frozenset(self.layers))


def recorder_options(options: RecorderProbeOptions | None, overrides: dict) -> RecorderProbeOptions:
    opts = options or RecorderProbeOptions()
    return dataclasses.replace(opts, **overrides) if overrides else opts


@dataclass
class _FrameWork:
    """One frame's metas and copies, shared by the records of every GIE admitted on it."""

    fm: Any
    frame_level: list
    per_object: dict[int, list[tuple[int, Any]]]
    objects: list
    parents: list[int] = field(default_factory=list)
    detections: list[ObjectRecord] = field(default_factory=list)
    image: ImageRecord | None = None
    crop_surface: np.ndarray | None = None
    frame_size: tuple[int, int] = (0, 0)
    alloc: Any = None  # the recorder's frame_memory allocator (writer="process"), or None


class RecorderProbe(PadProbe):
    """The recording probe callback (a plain callable, so it is testable without GStreamer).

    ``ObjectRecord.parent_index`` indexes the frame's NvDsObjectMeta list in order, which is
    ``FrameRecord.detections`` (also for the objects of an SGIE record).
    """

    def __init__(
        self, recorder: Any, options: RecorderProbeOptions | None = None, **kw: Any
    ) -> None:
        opts = self.options = recorder_options(options, kw)
        self.recorder = recorder
        self.unique_ids = opts.unique_ids
        recorder_images = bool(getattr(recorder, "images", True))
        self.images = recorder_images if opts.images is None else opts.images and recorder_images
        self.object_crops = bool(opts.object_crops) and recorder_images
        self.image_max_size = (  # copy no more than the recorder keeps
            int(getattr(recorder, "image_max_size", 640) or 0)
            if opts.image_max_size is None
            else int(opts.image_max_size)
        )
        layers = opts.layers if opts.layers is not None else getattr(recorder, "layers", None)
        self.layers = frozenset(layers) if layers is not None else None
        self.stats = ProbeStats()
        self.sizes = FrameSizes(opts.muxer_size, self.stats)
        self.tensors = TensorMetaReader(self.stats)
        self.jetson = is_jetson() if opts.jetson is None else bool(opts.jetson)
        self.surfaces = SurfaceReader(lambda kind, msg: self.stats.warn_once(kind, msg))
        if not self.jetson and opts.cpu_surfaces is False:
            self.surfaces.disable("surface-memory", "cpu_surfaces=False: recording no images")
        self._last_stats = 0.0
        self._seen_tensor_meta = False

    # ------------------------------------------------------------------ stats
    def _after_batch(self) -> None:
        now = time.perf_counter()
        if now - self._last_stats >= self.options.stats_every_s:
            self._last_stats = now
            self.flush_stats()

    def flush_stats(self) -> None:
        try:
            self.recorder.update_stats("probe", self.stats.as_dict())
        except Exception as exc:
            self.stats.error("update_stats", exc)

    # ------------------------------------------------------------------ per batch / frame
    def _after_frames(self, pyds: Any, batch_meta: Any) -> None:
        if not self._seen_tensor_meta and self.stats.frames >= NO_TENSOR_META_FRAMES:
            self._warn_no_tensor_meta(pyds, batch_meta)

    def _frame(self, pyds: Any, buf_hash: int, batch_meta: Any, fm: Any) -> None:
        uids = self.unique_ids
        work = _FrameWork(
            fm, list(self.tensors.metas(pyds, batch_meta, fm.frame_user_meta_list, uids)), {}, []
        )
        work.objects = list(object_metas(pyds, fm))
        for k, om in enumerate(work.objects):
            for tm in self.tensors.metas(pyds, batch_meta, om.obj_user_meta_list, uids):
                work.per_object.setdefault(int(tm.unique_id), []).append((k, tm))
        gies = sorted({int(tm.unique_id) for tm in work.frame_level} | set(work.per_object))
        if not gies:
            return
        self._seen_tensor_meta = True
        admitted = []
        source_id, pts = int(fm.source_id), int(fm.buf_pts)
        for uid in gies:  # the rate-limit decision comes before any copy
            if self.recorder.admit(source_id, pts, uid):
                admitted.append(uid)
            else:
                self.stats.frames_skipped += 1
        if not admitted:
            return
        crops = self.object_crops and any(work.per_object.get(uid) for uid in admitted)
        want_surface = self.images or crops or not self.sizes.known
        if want_surface and int(fm.batch_id) >= int(batch_meta.num_frames_in_batch):
            self.surfaces.disable(
                "surface-count",
                f"frame batch_id {int(fm.batch_id)} >= num_frames_in_batch "
                f"{int(batch_meta.num_frames_in_batch)}: not reading surfaces (probe before the tiler)",
            )
        mapped = self.surfaces.mapped(pyds, buf_hash, int(fm.batch_id))
        memory = getattr(self.recorder, "frame_memory", None)  # copies straight into the
        with memory() if memory is not None else nullcontext() as alloc:  # writer's memory
            work.alloc = alloc
            self._copy_and_record(pyds, work, admitted, want_surface, mapped, crops)

    def _copy_and_record(
        self,
        pyds: Any,
        work: _FrameWork,
        admitted: list[int],
        want_surface: bool,
        mapped: Any,
        crops: bool,
    ) -> None:
        fm = work.fm
        with mapped if want_surface else nullcontext() as surface:
            work.frame_size = self.sizes.frame_size(fm, surface)
            if self.images and surface is not None:
                work.image = ImageRecord(
                    downscaled_copy(surface, self.image_max_size, work.alloc),
                    (0.0, 0.0, float(work.frame_size[0]), float(work.frame_size[1])),
                )
            work.crop_surface = surface if crops else None
            work.parents = parent_indices(pyds, work.objects) if work.objects else []
            if self.options.record_detections:
                work.detections = [
                    self._object(pyds, om, work.parents[k]) for k, om in enumerate(work.objects)
                ]
            for uid in admitted:
                try:  # one GIE's bad meta does not cost the other GIEs' records of this frame
                    self._record(pyds, work, uid)
                except Exception as exc:
                    self.stats.error(f"frame:{type(exc).__name__}", exc)

    def _record(self, pyds: Any, work: _FrameWork, uid: int) -> None:
        """Copy GIE ``uid``'s tensors of one frame (and crops if asked for) into a record."""
        layers: dict[str, np.ndarray] = {}
        net = (0, 0, 0)
        for tm in work.frame_level:
            if int(tm.unique_id) == uid:
                self.stats.tensor_metas += 1
                layers = self._read(pyds, tm, work.alloc)
                net = network_size(tm)
        objs = []
        for k, tm in work.per_object.get(uid, ()):
            self.stats.tensor_metas += 1
            net = network_size(tm)
            crop = None
            if work.crop_surface is not None:
                om = work.objects[k]
                got = crop_copy(
                    work.crop_surface, rect_of(om), work.frame_size, self.image_max_size, work.alloc
                )
                crop = None if got is None else ImageRecord(*got)
            objs.append(
                self._object(
                    pyds, work.objects[k], work.parents[k], self._read(pyds, tm, work.alloc), crop
                )
            )
        fm = work.fm
        record = FrameRecord(
            source_id=int(fm.source_id),
            frame_num=int(fm.frame_num),
            pts_ns=int(fm.buf_pts),
            unique_id=uid,
            network_size=net,
            frame_size=work.frame_size,
            layers=layers,
            objects=objs,
            detections=work.detections,
            image=work.image,
            ntp_timestamp=int(fm.ntp_timestamp),
            batch_id=int(fm.batch_id),
            pad_index=int(fm.pad_index),
        )
        if self.recorder.record(record, admitted=True):
            self.stats.frames_recorded += 1

    def _read(self, pyds: Any, tm: Any, alloc: Any = None) -> dict[str, np.ndarray]:
        return read_tensor_meta(pyds, tm, self.layers, check=self.tensors.check, alloc=alloc)

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
        elif "input-tensor-meta" not in self.stats.warnings:
            self.stats.warn_once(
                "no-tensor-meta",
                f"no NvDsInferTensorMeta in {self.stats.frames} frames: set "
                "output-tensor-meta=1 in the nvinfer config (or the element property) and probe "
                "downstream of the nvinfer element (its src pad or later). PGIE tensors are in "
                "frame_user_meta_list, SGIE tensors (process-mode=2) in each object's "
                "obj_user_meta_list; dsprobe reads both. An SGIE with classifier-async-mode=1 "
                "attaches none: set classifier-async-mode=0 (dsprobe doctor CONFIG checks this).",
            )

    def _object(
        self,
        pyds: Any,
        om: Any,
        parent_index: int,
        layers: dict | None = None,
        crop: ImageRecord | None = None,
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
            classifications=(
                classifications(pyds, om) if self.options.record_classifications else []
            ),
        )


def attach_recorder(
    target: Any, recorder: Any, options: RecorderProbeOptions | None = None, **overrides: Any
) -> ProbeHandle:
    """Record the tensor output of the GIE(s) upstream of ``target`` into ``recorder``.

    ``target``: an nvinfer element (the probe goes on its src pad) or any Gst.Pad downstream of the
    GIEs (put it after an RGBA ``nvvideoconvert`` to get images). ``options``: a
    :class:`RecorderProbeOptions`, or its fields as keywords. Returns a :class:`ProbeHandle`
    (``.stats``, ``.flush_stats()``, ``.detach()``).

    When attached it checks, once (each problem is a warning in ``stats["warnings"]``, logged once):
    the GIE configs (the recorder's and those of the pipeline's nvinfer elements: a GIE with
    ``disable-output-host-copy=1`` is not recorded, ``classifier-async-mode=1`` SGIEs and
    ``input-tensor-from-meta`` are named); on dGPU the ``nvbuf-memory-type`` of the element that
    allocated the probed surfaces (images only from CUDA unified or pinned memory: a CPU read of
    device memory is an uncatchable segfault); tilers / demuxers upstream (``batch_id`` no longer
    indexes the surfaces: no images); the nvstreammux output size (``muxer_size``).
    """
    from dsprobe.deepstream.attach_checks import check_recorder_attach

    probe = RecorderProbe(recorder, options, **overrides)
    check_recorder_attach(probe, target)
    return attach(target, probe)
