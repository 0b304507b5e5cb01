"""One nvstreammux batch through the reference GIEs (:class:`BatchRunner`): muxer scaling, PGIE
preprocessing and inference, the postprocess's detections as the frame's objects, then each SGIE on
the object crops it selects; the result is the FrameRecords a live probe would record, with the
seconds spent per stage."""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from dsprobe.records import FrameRecord, ImageRecord, ObjectRecord
from dsprobe.reference.gie import Gie, detections_to_objects
from dsprobe.reference.preprocess import clip_rect, muxer_scale
from dsprobe.reference.sgie import select_objects

STAGES = ("decode", "preprocess", "inference", "postprocess", "sgie", "record")


class BatchRunner:
    """The GIEs and settings of one reference recording; :meth:`run` turns a decoded batch into
    ``(pgie_records, per_sgie_records)``. Counts go to ``counts`` (SGIE objects clipped at the frame
    edge), seconds per stage to ``seconds``."""

    def __init__(
        self,
        pgie: Gie,
        sgies: Sequence[Gie],
        postprocess: Any,
        labels: Sequence[str],
        opts: Any,  # ReferenceOptions
    ) -> None:
        self.pgie, self.sgies = pgie, list(sgies)
        self.postprocess = postprocess
        self.labels = list(labels)
        self.opts = opts
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.clipped_objects = 0

    def run(self, group: Sequence[Any]) -> tuple[list[FrameRecord], list[list[FrameRecord | None]]]:
        """PGIE records of the batch ``group`` (decoded frames) and, per SGIE, its record per frame
        (None where it inferred on no object)."""
        t1 = time.perf_counter()
        frames, tensors = self._pgie_inputs(group)
        t2 = time.perf_counter()
        self.seconds["preprocess"] += t2 - t1
        outputs = self.pgie.infer(tensors)
        self.seconds["inference"] += time.perf_counter() - t2
        records = [self._record(b, f, layers) for b, (f, layers) in enumerate(zip(group, outputs))]
        ts = time.perf_counter()
        per_sgie = [self._run_sgie(s, records, frames) for s in self.sgies]
        self.seconds["sgie"] += time.perf_counter() - ts
        return records, per_sgie

    def _pgie_inputs(self, group: Sequence[Any]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        o = self.opts
        if self.sgies:  # SGIEs crop the muxer-size frame
            frames = [
                muxer_scale(
                    f.image,
                    *o.muxer,
                    keep_aspect=o.muxer_keep_aspect,
                    scaling_filter=o.muxer_filter,
                )
                for f in group
            ]
            return frames, [self.pgie.tensor(fr) for fr in frames]
        # nearest twice = one composed gather; the muxer-size frame is never built
        tensors = [
            self.pgie.source_tensor(f.image, o.muxer, o.muxer_keep_aspect, o.muxer_filter)
            for f in group
        ]
        return [], tensors

    def _record(self, batch_id: int, f: Any, layers: dict[str, np.ndarray]) -> FrameRecord:
        o = self.opts
        image = None
        if (
            o.images
        ):  # the decoded frame shown over the whole muxer frame (the Recorder downscales it)
            pic = (
                muxer_scale(f.image, *o.muxer, keep_aspect=True) if o.muxer_keep_aspect else f.image
            )
            image = ImageRecord(
                np.repeat(pic, 3, axis=2) if pic.shape[2] == 1 else pic,
                (0.0, 0.0, float(o.muxer[0]), float(o.muxer[1])),
            )
        record = FrameRecord(
            source_id=f.source_id,
            frame_num=f.frame_num,
            pts_ns=f.pts_ns,
            unique_id=self.pgie.unique_id,
            network_size=self.pgie.network_size,
            frame_size=o.muxer,
            layers=layers,
            batch_id=batch_id,
            pad_index=f.source_id,
            image=image,
        )
        if self.postprocess is not None:
            tp = time.perf_counter()
            record.detections = detections_to_objects(
                self.postprocess(record), self.pgie.unique_id, self.labels
            )
            self.seconds["postprocess"] += time.perf_counter() - tp
        return record

    def _run_sgie(
        self, sgie: Gie, records: list[FrameRecord], frames: list[np.ndarray]
    ) -> list[FrameRecord | None]:
        """One SGIE over a batch: select objects per frame, crop, infer in chunks, build its records."""
        jobs: list[tuple[int, ObjectRecord]] = []
        tensors = []
        for k, (record, frame) in enumerate(zip(records, frames)):
            objects = record.detections
            for i in select_objects(objects, sgie.config, self.opts.deepstream_version):
                rect, clipped = clip_rect(objects[i].rect, record.frame_size)
                if rect[2] < 2 or rect[3] < 2:  # nothing left inside the frame to crop
                    continue
                self.clipped_objects += clipped
                jobs.append((k, objects[i]))
                tensors.append(sgie.tensor(frame, rect))
        per_frame: list[list[ObjectRecord]] = [[] for _ in records]
        for (k, obj), layers in zip(jobs, sgie.infer(tensors)):
            per_frame[k].append(self._sgie_object(obj, layers, records[k], frames[k]))
        return [
            None if not objs else _sgie_record(sgie, record, objs)
            for record, objs in zip(records, per_frame)
        ]

    def _sgie_object(
        self, obj: ObjectRecord, layers: dict, record: FrameRecord, frame: np.ndarray
    ) -> ObjectRecord:
        image = None
        if self.opts.object_images:
            (x, y, w, h), _ = clip_rect(obj.rect, record.frame_size)
            crop = frame[int(y) : int(y + h), int(x) : int(x + w)]
            image = ImageRecord(
                np.repeat(crop, 3, axis=2) if crop.shape[2] == 1 else crop, obj.rect
            )
        return ObjectRecord(
            rect=obj.rect,
            class_id=obj.class_id,
            confidence=obj.confidence,
            object_id=obj.object_id,
            unique_component_id=obj.unique_component_id,
            label=obj.label,
            parent_index=obj.parent_index,
            parent_object_id=obj.parent_object_id,
            layers=layers,
            image=image,
        )


def _sgie_record(sgie: Gie, record: FrameRecord, objs: list[ObjectRecord]) -> FrameRecord:
    return FrameRecord(
        source_id=record.source_id,
        frame_num=record.frame_num,
        pts_ns=record.pts_ns,
        unique_id=sgie.unique_id,
        network_size=sgie.network_size,
        frame_size=record.frame_size,
        objects=objs,
        detections=list(record.detections),
        image=record.image,
        batch_id=record.batch_id,
        pad_index=record.pad_index,
    )
