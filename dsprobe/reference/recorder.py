"""``record_onnx``: the reference recorder — what a DeepStream pipeline with a probe would record,
made from video files with ONNX Runtime and nvinfer's preprocessing (``dsprobe record-onnx``)."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dsprobe.nvinfer_config import NvinferConfig, as_nvinfer_config
from dsprobe.reference.preprocess import muxer_scale, preprocess_source
from dsprobe.reference.runner import ModelError, OnnxModel
from dsprobe.reference.video import VideoError, batches
from dsprobe.types import FrameRecord, ImageRecord, ObjectRecord


@dataclass
class RecordSummary:
    """What a reference recording run did (frames, seconds, time per stage)."""

    output: Path
    frames: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    recorder_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def detections_to_objects(dets: Any, unique_id: int, labels: Sequence[str]) -> list[ObjectRecord]:
    """Frame-pixel Detections as the NvDsObjectMeta a live probe would add (rect, class, label)."""
    out = []
    for (x1, y1, x2, y2), s, c in zip(dets.boxes.tolist(), dets.scores.tolist(), dets.class_ids.tolist()):
        out.append(ObjectRecord(rect=(x1, y1, x2 - x1, y2 - y1), class_id=int(c), confidence=float(s),
                                unique_component_id=unique_id,
                                label=labels[c] if 0 <= c < len(labels) else str(c)))
    return out


def record_onnx(videos: Sequence[str | Path], config: str | Path | NvinferConfig, model: str | Path | None,
                output: str | Path, *, muxer: tuple[int, int] = (1280, 720), batch: int = 1,
                muxer_keep_aspect: bool = False, images: bool = True, image_max_size: int = 640,
                max_frames: int | None = None, postprocess: Any = None, progress: bool = True,
                providers: Sequence[str] | None = None, notes: Any = None, **recorder_kwargs: Any) -> RecordSummary:
    """Record ``videos`` through ``model`` as nvinfer would with ``config``.

    * ``muxer``: nvstreammux width, height (frames are scaled to it first).
    * ``batch``: frames per nvstreammux batch (sets batch_id; the model runs per batch when it allows).
    * ``postprocess``: a Postprocess (or a spec path) applied live; its detections are stored as the
      frame's pipeline objects, as a live DeepStream run stores its objects.
    * ``model`` defaults to the config's ``onnx-file`` (relative to the config).
    """
    from dsprobe.recording.writer import Recorder

    cfg = as_nvinfer_config(config)
    pre = cfg.preprocessing
    if model is None:
        if not cfg.onnx_file:
            raise ModelError(f"{cfg.path or 'config'}: no model given and no onnx-file in the config")
        model = Path(cfg.path).parent / cfg.onnx_file if cfg.path else Path(cfg.onnx_file)
    net = OnnxModel(model, pre, providers)
    nw, nh, nc = net.network_size
    if postprocess is not None and not hasattr(postprocess, "run"):
        from dsprobe.postprocess import Postprocess
        postprocess = Postprocess.load(postprocess)
    labels = cfg.labels()
    for v in videos:
        if not Path(v).exists():
            raise VideoError(f"{v}: video file not found")
    summary = RecordSummary(Path(output))
    stages = {"decode": 0.0, "preprocess": 0.0, "inference": 0.0, "postprocess": 0.0, "record": 0.0}
    bar = _bar(progress)
    t_start = time.perf_counter()
    recorder_kwargs.setdefault("drop_when_full", False)
    with Recorder(output, nvinfer_config=cfg, images=images, image_max_size=image_max_size,
                  notes=notes if notes is not None else {"recorded_by": "dsprobe record-onnx",
                                                         "videos": [str(v) for v in videos], "model": str(model),
                                                         "muxer": list(muxer)}, **recorder_kwargs) as rec:
        t0 = time.perf_counter()
        for group in batches(videos, batch, max_frames):
            t1 = time.perf_counter()
            stages["decode"] += t1 - t0
            tensors = np.stack([preprocess_source(f.image, muxer, pre, keep_aspect=muxer_keep_aspect,
                                                  network_size=(nw, nh))[0] for f in group])
            t2 = time.perf_counter()
            stages["preprocess"] += t2 - t1
            outputs = net(tensors)
            t3 = time.perf_counter()
            stages["inference"] += t3 - t2
            for b, (f, layers) in enumerate(zip(group, outputs)):
                # the picture: the decoded frame, shown over the whole muxer frame (the recorder downscales;
                # with --muxer-keep-aspect the muxer frame itself, padding included)
                fr = muxer_scale(f.image, *muxer, keep_aspect=True) if muxer_keep_aspect else f.image
                record = FrameRecord(source_id=f.source_id, frame_num=f.frame_num, pts_ns=f.pts_ns,
                                     unique_id=cfg.gie_unique_id, network_size=(nw, nh, nc), frame_size=muxer,
                                     layers=layers, batch_id=b, pad_index=f.source_id,
                                     image=ImageRecord(fr, (0.0, 0.0, float(muxer[0]), float(muxer[1]))) if images else None)
                if postprocess is not None:
                    tp = time.perf_counter()
                    record.detections = detections_to_objects(postprocess(record), cfg.gie_unique_id,
                                                               postprocess.labels or labels)
                    stages["postprocess"] += time.perf_counter() - tp
                tr = time.perf_counter()
                rec.record(record)
                stages["record"] += time.perf_counter() - tr
                summary.frames += 1
            if bar is not None:
                bar.update(len(group))
            t0 = time.perf_counter()
    if bar is not None:
        bar.close()
    summary.seconds = time.perf_counter() - t_start
    summary.stage_seconds = stages
    summary.recorder_stats = rec.stats
    if rec.stats.get("failed_reason"):
        raise RuntimeError(f"{output}: recorder failed: {rec.stats['failed_reason']}")
    return summary


def _bar(enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(unit="frame", desc="record-onnx")


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    return w, h


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="nvinfer config file of the GIE")
    p.add_argument("--model", help="ONNX model (default: the config's onnx-file)")
    p.add_argument("--video", action="append", required=True, help="video file; repeat for several streams")
    p.add_argument("--muxer", type=_size, default=(1280, 720), help="nvstreammux WIDTHxHEIGHT (default 1280x720)")
    p.add_argument("--muxer-keep-aspect", action="store_true", help="letterbox into the muxer size (enable-padding)")
    p.add_argument("--batch", type=int, default=1, help="nvstreammux batch size")
    p.add_argument("--max-frames", type=int, help="frames per stream at most")
    p.add_argument("--no-images", action="store_true", help="do not store frame images")
    p.add_argument("--image-size", type=int, default=640, help="longest side of stored images")
    p.add_argument("--postprocess", help="postprocess spec (JSON) applied live; its objects are recorded")
    p.add_argument("-o", "--output", required=True, help="recording to write (.h5)")


def run(args: argparse.Namespace) -> int:
    try:
        s = record_onnx(args.video, args.config, args.model, args.output, muxer=args.muxer, batch=args.batch,
                        muxer_keep_aspect=args.muxer_keep_aspect, images=not args.no_images,
                        image_max_size=args.image_size, max_frames=args.max_frames, postprocess=args.postprocess,
                        progress=sys.stderr.isatty())
    except (VideoError, ModelError, ValueError, OSError) as exc:
        print(f"dsprobe record-onnx: {exc}", file=sys.stderr)
        return 1
    print(f"recorded {s.frames} frames to {s.output} in {s.seconds:.1f} s ({s.fps:.1f} frames/s); "
          + ", ".join(f"{k} {v:.1f}s" for k, v in s.stage_seconds.items()))
    return 0
