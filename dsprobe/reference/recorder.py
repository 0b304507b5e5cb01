"""``record_onnx``: the reference recorder. It writes what a DeepStream pipeline with the dsprobe
probe would record, from video files, with ONNX Runtime and nvinfer's preprocessing, no DeepStream.

Per nvstreammux batch: decode one frame per stream in turn -> scale to the muxer size -> PGIE:
crop/letterbox/normalise as nvinfer does for its config -> ONNX Runtime -> every output layer, batch
axis removed, true dtype -> FrameRecord (source_id = video index, frame_num, pts_ns from the
container, frame_size = muxer size, network_size, unique_id = gie-unique-id, batch_id = position in
the batch, the downscaled frame as image). With a postprocess (or secondary GIEs) the PGIE's
detections become the frame's objects; each secondary GIE then runs on the object crops it selects
(nvinfer's SGIE rules) and is recorded as per-object tensors, like the probe records an SGIE.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dsprobe.nvinfer.config import NvinferConfig, as_nvinfer_config
from dsprobe.records import FrameRecord, ImageRecord, ObjectRecord
from dsprobe.reference.preprocess import (
    FILTER_NAMES,
    clip_rect,
    exact_filter,
    load_mean_file,
    muxer_scale,
    preprocess,
    preprocess_source,
)
from dsprobe.reference.runner import ModelError, OnnxModel
from dsprobe.reference.sgie import select_objects
from dsprobe.reference.video import VideoError, batches, probe_video

GieSpec = Any  # config path / text / NvinferConfig, or (config, model path)


@dataclass
class RecordSummary:
    """What a reference recording run did: frames recorded per GIE, objects inferred by SGIEs,
    wall-clock seconds and seconds per stage."""

    output: Path
    frames: int = 0
    objects: int = 0
    skipped_frames: int = 0
    clipped_objects: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    recorder_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        """Frames (per stream, PGIE) recorded per wall-clock second."""
        return self.frames / self.seconds if self.seconds else 0.0

    def text(self) -> str:
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in self.stage_seconds.items() if v)
        extra = f", {self.objects} SGIE objects" if self.objects else ""
        return (
            f"recorded {self.frames} frames{extra} to {self.output} in {self.seconds:.1f} s "
            f"({self.fps:.1f} frames/s; {stages})"
        )


class Gie:
    """One nvinfer element: its parsed config, the ONNX model and the mean-file (if any)."""

    def __init__(
        self,
        config: str | Path | NvinferConfig,
        model: str | Path | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        self.config = as_nvinfer_config(config)
        base = Path(self.config.path).parent if self.config.path else Path(".")
        if model is None:
            if not self.config.onnx_file:
                raise ModelError(
                    f"{self.config.path or 'config'}: no model given and no onnx-file in the config"
                )
            model = base / self.config.onnx_file
        self.model = OnnxModel(model, self.config, providers)
        w, h, _ = self.model.network_size
        pre = self.config.preprocessing
        self.mean = load_mean_file(base / pre.mean_file, w, h) if pre.mean_file else None

    @property
    def unique_id(self) -> int:
        return self.config.gie_unique_id

    @property
    def network_size(self) -> tuple[int, int, int]:
        return self.model.network_size

    def tensor(
        self, frame: np.ndarray, crop_rect: tuple[float, float, float, float] | None = None
    ) -> np.ndarray:
        """The network input nvinfer builds from ``frame`` (muxer size) or a crop of it."""
        w, h, _ = self.network_size
        return preprocess(frame, self.config.preprocessing, crop_rect, (w, h), self.mean)[0]

    def source_tensor(
        self,
        source: np.ndarray,
        muxer: tuple[int, int],
        keep_aspect: bool = False,
        muxer_filter: int = 0,
    ) -> np.ndarray:
        """The network input built from a decoded frame that nvstreammux scales to ``muxer`` first."""
        w, h, _ = self.network_size
        return preprocess_source(
            source,
            muxer,
            self.config.preprocessing,
            keep_aspect=keep_aspect,
            muxer_filter=muxer_filter,
            network_size=(w, h),
            mean=self.mean,
        )[0]

    def infer(self, tensors: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        return self.model(np.stack(tensors)) if tensors else []


def detections_to_objects(dets: Any, unique_id: int, labels: Sequence[str]) -> list[ObjectRecord]:
    """Frame-pixel Detections as the NvDsObjectMeta a live probe would add (rect, class, label)."""
    out = []
    for (x1, y1, x2, y2), s, c in zip(
        dets.boxes.tolist(), dets.scores.tolist(), dets.class_ids.tolist()
    ):
        out.append(
            ObjectRecord(
                rect=(x1, y1, x2 - x1, y2 - y1),
                class_id=int(c),
                confidence=float(s),
                unique_component_id=unique_id,
                label=labels[c] if 0 <= c < len(labels) else str(c),
            )
        )
    return out


def record_onnx(  # noqa: C901 (to take an options object)
    videos: Sequence[str | Path],
    config: str | Path | NvinferConfig,
    model: str | Path | None,
    output: str | Path,
    *,
    muxer: tuple[int, int] = (1280, 720),
    muxer_keep_aspect: bool = False,
    muxer_filter: int = 0,
    batch: int = 1,
    images: bool = True,
    image_max_size: int = 640,
    object_images: bool = False,
    max_frames: int | None = None,
    postprocess: Any = None,
    secondary: Sequence[GieSpec] = (),
    decoder: str = "yolov8",
    deepstream_version: float = 7.1,
    honour_interval: bool = True,
    progress: bool = True,
    providers: Sequence[str] | None = None,
    notes: Any = None,
    **recorder_kwargs: Any,
) -> RecordSummary:
    """Record ``videos`` through ``model`` as nvinfer would with ``config``; returns a RecordSummary.

    * ``model``: the ONNX file; None takes the config's ``onnx-file`` (relative to the config).
    * ``muxer``: nvstreammux (width, height); ``muxer_keep_aspect``: its ``enable-padding=1``;
      ``muxer_filter``: its ``interpolation-method`` (0 nearest, 1 bilinear; set it to your pipeline's).
    * ``batch``: nvstreammux batch-size: frames of the videos are interleaved into batches of this
      size (``batch_id`` = position); the model runs on the batch (in chunks of its fixed batch size).
    * ``images``: store the frame, downscaled to ``image_max_size`` (longest side) by the Recorder;
      ``object_images``: also store each SGIE object's crop.
    * ``postprocess``: a Postprocess or spec path whose detections become the frame's objects (stored
      as its pipeline detections, as a live probe would see them). With ``secondary`` GIEs and no
      postprocess, the PGIE config's own (``Postprocess.from_nvinfer_config(cfg, decoder)``) is used.
    * ``secondary``: SGIE configs (process-mode=2), each a config or a ``(config, model)`` pair.
    * ``honour_interval``: skip batches as the PGIE's ``interval`` says (nvinfer attaches nothing to
      them, so the probe records nothing).
    * ``recorder_kwargs`` go to :class:`dsprobe.recording.writer.Recorder` (compression, every_n...).
    """
    from dsprobe.recording.writer import Recorder

    for v in videos:
        if not Path(v).exists():
            raise VideoError(f"{v}: video file not found")
    if not videos:
        raise VideoError("no video given")
    pgie = Gie(config, model, providers)
    sgies = [Gie(*(s if isinstance(s, tuple) else (s,)), providers=providers) for s in secondary]
    for s in sgies:
        if s.config.process_mode != 2:
            raise ValueError(
                f"{s.config.path or 'secondary config'}: process-mode={s.config.process_mode}; a "
                "secondary GIE needs process-mode=2"
            )
    uids = [pgie.unique_id] + [s.unique_id for s in sgies]
    if len(set(uids)) != len(uids):
        raise ValueError(f"gie-unique-id values {uids} must differ between the GIEs")
    for g in [pgie] + sgies:
        f = g.config.preprocessing.scaling_filter
        if not exact_filter(f):
            warnings.warn(
                f"{g.config.path or 'config'}: scaling-filter={f} ({FILTER_NAMES.get(f, 'unknown')}) has no "
                "public definition; the reference recorder resizes with bilinear instead",
                stacklevel=2,
            )
    if postprocess is not None and not hasattr(postprocess, "run"):
        from dsprobe.postprocess import Postprocess

        postprocess = Postprocess.load(postprocess)
    if postprocess is None and sgies:
        from dsprobe.postprocess import Postprocess

        postprocess = Postprocess.from_nvinfer_config(
            pgie.config, decoder=decoder, deepstream_version=deepstream_version
        )
    labels = (postprocess.labels if postprocess is not None else []) or pgie.config.labels()
    gray = pgie.config.preprocessing.model_color_format == 2

    summary = RecordSummary(Path(output))
    stages = {
        "decode": 0.0,
        "preprocess": 0.0,
        "inference": 0.0,
        "postprocess": 0.0,
        "sgie": 0.0,
        "record": 0.0,
    }
    total = sum(
        min(probe_video(v).frames or 0, max_frames if max_frames is not None else 1 << 62)
        for v in videos
    )
    bar = _bar(progress, total)
    configs = {g.unique_id: g.config for g in [pgie] + sgies}
    default_notes = {
        "recorded_by": "dsprobe record-onnx",
        "videos": [str(v) for v in videos],
        "models": {str(g.unique_id): str(g.model.path) for g in [pgie] + sgies},
        "muxer": list(muxer),
        "muxer_keep_aspect": muxer_keep_aspect,
        "muxer_filter": muxer_filter,
        "batch": batch,
        "providers": pgie.model.providers,
    }
    recorder_kwargs.setdefault("drop_when_full", False)
    t_start = time.perf_counter()
    rec = Recorder(
        output,
        nvinfer_config=configs if sgies else pgie.config,
        images=images or object_images,
        image_max_size=image_max_size,
        notes=notes if notes is not None else default_notes,
        **recorder_kwargs,
    )
    try:
        t0 = time.perf_counter()
        for batch_num, group in enumerate(batches(videos, batch, max_frames, gray)):
            t1 = time.perf_counter()
            stages["decode"] += t1 - t0
            if honour_interval and batch_num % (pgie.config.interval + 1):
                summary.skipped_frames += len(group)
                if bar is not None:
                    bar.update(len(group))
                t0 = time.perf_counter()
                continue
            if sgies:  # SGIEs crop the muxer-size frame
                frames = [
                    muxer_scale(
                        f.image, *muxer, keep_aspect=muxer_keep_aspect, scaling_filter=muxer_filter
                    )
                    for f in group
                ]
                tensors = [pgie.tensor(fr) for fr in frames]
            else:  # nearest twice = one composed gather; the muxer-size frame is never built
                frames = []
                tensors = [
                    pgie.source_tensor(f.image, muxer, muxer_keep_aspect, muxer_filter)
                    for f in group
                ]
            t2 = time.perf_counter()
            stages["preprocess"] += t2 - t1
            outputs = pgie.infer(tensors)
            stages["inference"] += time.perf_counter() - t2
            records = []
            for b, (f, layers) in enumerate(zip(group, outputs)):
                image = None
                if images:  # the decoded frame shown over the whole muxer frame (the Recorder downscales it)
                    pic = (
                        muxer_scale(f.image, *muxer, keep_aspect=True)
                        if muxer_keep_aspect
                        else f.image
                    )
                    image = ImageRecord(
                        np.repeat(pic, 3, axis=2) if pic.shape[2] == 1 else pic,
                        (0.0, 0.0, float(muxer[0]), float(muxer[1])),
                    )
                record = FrameRecord(
                    source_id=f.source_id,
                    frame_num=f.frame_num,
                    pts_ns=f.pts_ns,
                    unique_id=pgie.unique_id,
                    network_size=pgie.network_size,
                    frame_size=muxer,
                    layers=layers,
                    batch_id=b,
                    pad_index=f.source_id,
                    image=image,
                )
                if postprocess is not None:
                    tp = time.perf_counter()
                    record.detections = detections_to_objects(
                        postprocess(record), pgie.unique_id, labels
                    )
                    stages["postprocess"] += time.perf_counter() - tp
                records.append(record)
            ts = time.perf_counter()
            sgie_records = [
                _run_sgie(s, records, frames, object_images, deepstream_version, summary)
                for s in sgies
            ]
            stages["sgie"] += time.perf_counter() - ts
            tr = time.perf_counter()
            for k, record in enumerate(records):
                rec.record(record)
                summary.frames += 1
                for per_frame in sgie_records:
                    if per_frame[k] is not None:
                        rec.record(per_frame[k])
                        summary.objects += len(per_frame[k].objects)
            stages["record"] += time.perf_counter() - tr
            if bar is not None:
                bar.update(len(group))
            t0 = time.perf_counter()
        summary.stage_seconds = stages
        rec.update_stats(
            "reference",
            {
                "frames": summary.frames,
                "sgie_objects": summary.objects,
                "skipped_by_interval": summary.skipped_frames,
                "clipped_objects": summary.clipped_objects,
                "stage_seconds": {k: round(v, 3) for k, v in stages.items()},
                "providers": pgie.model.providers,
            },
        )
    finally:
        tc = time.perf_counter()
        rec.close()
        if summary.stage_seconds:
            summary.stage_seconds["record"] += time.perf_counter() - tc
        if bar is not None:
            bar.close()
    summary.seconds = time.perf_counter() - t_start
    summary.recorder_stats = rec.stats
    if rec.stats.get("failed_reason"):
        raise RuntimeError(f"{output}: recorder failed: {rec.stats['failed_reason']}")
    return summary


def _run_sgie(
    sgie: Gie,
    records: list[FrameRecord],
    frames: list[np.ndarray],
    object_images: bool,
    deepstream_version: float,
    summary: RecordSummary,
) -> list[FrameRecord | None]:
    """One SGIE over a batch: select objects per frame, crop, infer in chunks, build its records."""
    jobs: list[tuple[int, ObjectRecord]] = []
    tensors = []
    for k, (record, frame) in enumerate(zip(records, frames)):
        objects = record.detections
        for i in select_objects(objects, sgie.config, deepstream_version):
            rect, clipped = clip_rect(objects[i].rect, record.frame_size)
            if rect[2] < 2 or rect[3] < 2:  # nothing left inside the frame to crop
                continue
            summary.clipped_objects += clipped
            jobs.append((k, objects[i]))
            tensors.append(sgie.tensor(frame, rect))
    outputs = sgie.infer(tensors)
    per_frame: list[list[ObjectRecord]] = [[] for _ in records]
    for (k, obj), layers in zip(jobs, outputs):
        image = None
        if object_images:
            (x, y, w, h), _ = clip_rect(obj.rect, records[k].frame_size)
            crop = frames[k][int(y) : int(y + h), int(x) : int(x + w)]
            image = ImageRecord(
                np.repeat(crop, 3, axis=2) if crop.shape[2] == 1 else crop, obj.rect
            )
        per_frame[k].append(
            ObjectRecord(
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
        )
    out: list[FrameRecord | None] = []
    for record, objs in zip(records, per_frame):
        out.append(
            None
            if not objs
            else FrameRecord(
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
        )
    return out


def _bar(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        warnings.warn("no progress bar without tqdm: pip install 'dsprobe[onnx]'", stacklevel=3)
        return None
    return tqdm(total=total or None, unit="frame", desc="record-onnx")
