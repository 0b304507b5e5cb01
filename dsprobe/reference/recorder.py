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
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Sequence

from dsprobe.nvinfer.config import NvinferConfig
from dsprobe.recording.options import RecorderOptions
from dsprobe.recording.output import check_output
from dsprobe.reference.frames import BatchRunner
from dsprobe.reference.gie import Gie, GieSpec, load_gies
from dsprobe.reference.video import VideoError, batches, probe_video


@dataclass(frozen=True)
class ReferenceOptions:
    """How :func:`record_onnx` models the pipeline and what it stores.

    * ``muxer``: nvstreammux (width, height); ``muxer_keep_aspect``: its ``enable-padding=1``;
      ``muxer_filter``: its ``interpolation-method`` (0 nearest, 1 bilinear; set it to your pipeline's).
    * ``batch``: nvstreammux batch-size: frames of the videos are interleaved into batches of this
      size (``batch_id`` = position); the model runs on the batch (in chunks of its fixed batch size).
    * ``images``: store the frame (downscaled by the Recorder, see ``RecorderOptions.image_max_size``);
      ``object_images``: also store each SGIE object's crop.
    * ``max_frames``: frames per stream at most (None: all).
    * ``postprocess``: a Postprocess or spec path whose detections become the frame's objects (stored
      as its pipeline detections, as a live probe would see them). With ``secondary`` GIEs and no
      postprocess, the PGIE config's own (``Postprocess.from_nvinfer_config(cfg, decoder)``) is used.
    * ``secondary``: SGIE configs (process-mode=2), each a config or a ``(config, model)`` pair.
    * ``deepstream_version``: whose nvinfer rules apply where versions differ (SGIE size floor).
    * ``honour_interval``: skip batches as the PGIE's ``interval`` says (nvinfer attaches nothing to
      them, so the probe records nothing).
    * ``progress``: a tqdm progress bar; ``providers``: ONNX Runtime execution providers;
      ``notes``: stored with the recording (default: videos, models, muxer settings, providers).
    """

    muxer: tuple[int, int] = (1280, 720)
    muxer_keep_aspect: bool = False
    muxer_filter: int = 0
    batch: int = 1
    images: bool = True
    object_images: bool = False
    max_frames: int | None = None
    postprocess: Any = None
    secondary: Sequence[GieSpec] = ()
    decoder: str = "yolov8"
    deepstream_version: float = 7.1
    honour_interval: bool = True
    progress: bool = True
    providers: Sequence[str] | None = None
    notes: Any = None

    @classmethod
    def build(cls, options: "ReferenceOptions | None" = None, **values: Any) -> "ReferenceOptions":
        """``options`` (default: the defaults) with ``values`` applied; unknown names are an error."""
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(
                f"unknown record_onnx option(s) {unknown}; known: {[f.name for f in fields(cls)]} "
                "(Recorder options go in recorder=RecorderOptions(...))"
            )
        base = options if options is not None else cls()
        return replace(base, **values) if values else base


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


def record_onnx(
    videos: Sequence[str | Path],
    config: str | Path | NvinferConfig,
    model: str | Path | None,
    output: str | Path,
    options: ReferenceOptions | None = None,
    *,
    recorder: RecorderOptions | None = None,
    **option_values: Any,
) -> RecordSummary:
    """Record ``videos`` through ``model`` as nvinfer would with ``config``; returns a RecordSummary.

    * ``model``: the ONNX file; None takes the config's ``onnx-file`` (relative to the config).
    * ``options``: a :class:`ReferenceOptions`; single options can also be given as keywords
      (``record_onnx(..., batch=2, max_frames=10)``), applied over ``options``.
    * ``recorder``: the :class:`~dsprobe.recording.options.RecorderOptions` of the Recorder that
      writes ``output`` (image size and quality, compression, ``overwrite``...); it never drops a
      frame (``drop_when_full=False``) and keeps pictures when ``images`` or ``object_images`` asks.
      ``output`` is checked before any model is loaded: not one of the inputs, not in use, not an
      existing recording unless ``overwrite``.
    """
    from dsprobe.recording.writer import Recorder

    opts = ReferenceOptions.build(options, **option_values)
    rec_opts = replace(
        recorder or RecorderOptions(),
        images=opts.images or opts.object_images,
        drop_when_full=False,
    )
    _check_videos(videos)
    check_output(Path(output), rec_opts.overwrite, _inputs(videos, config, model, opts))
    pgie, sgies = load_gies(config, model, opts.secondary, opts.providers)
    postprocess = _postprocess(opts, pgie, sgies)
    labels = (postprocess.labels if postprocess is not None else []) or pgie.config.labels()
    runner = BatchRunner(pgie, sgies, postprocess, labels, opts)
    summary = RecordSummary(Path(output))
    t_start = time.perf_counter()
    rec = Recorder(
        output,
        rec_opts,
        nvinfer_config={g.unique_id: g.config for g in [pgie] + sgies} if sgies else pgie.config,
        notes=opts.notes if opts.notes is not None else _default_notes(videos, pgie, sgies, opts),
    )
    bar = _bar(opts.progress, _total_frames(videos, opts.max_frames))
    try:
        _record_batches(videos, opts, pgie, runner, rec, summary, bar)
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


def _record_batches(
    videos: Sequence[str | Path],
    opts: ReferenceOptions,
    pgie: Gie,
    runner: BatchRunner,
    rec: Any,
    summary: RecordSummary,
    bar: Any,
) -> None:
    """Decode, run and record every batch; the stage timings go into ``summary`` and the recording."""
    stages = runner.seconds
    gray = pgie.config.preprocessing.model_color_format == 2
    t0 = time.perf_counter()
    for batch_num, group in enumerate(batches(videos, opts.batch, opts.max_frames, gray)):
        stages["decode"] += time.perf_counter() - t0
        if opts.honour_interval and batch_num % (pgie.config.interval + 1):
            summary.skipped_frames += len(group)
        else:
            records, per_sgie = runner.run(group)
            tr = time.perf_counter()
            for k, record in enumerate(records):
                rec.record(record)
                summary.frames += 1
                for per_frame in per_sgie:
                    if per_frame[k] is not None:
                        rec.record(per_frame[k])
                        summary.objects += len(per_frame[k].objects)
            stages["record"] += time.perf_counter() - tr
        if bar is not None:
            bar.update(len(group))
        t0 = time.perf_counter()
    summary.clipped_objects = runner.clipped_objects
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


def _inputs(videos: Sequence[Any], config: Any, model: Any, opts: ReferenceOptions) -> list[Any]:
    """Every file record_onnx reads (the output must be none of them)."""
    files = [
        *videos,
        model,
        opts.postprocess if isinstance(opts.postprocess, (str, Path)) else None,
    ]
    for spec in [config, *opts.secondary]:
        files += list(spec) if isinstance(spec, tuple) else [spec]
    return [f for f in files if isinstance(f, (str, Path)) and "\n" not in str(f)]


def _check_videos(videos: Sequence[str | Path]) -> None:
    for v in videos:
        if not Path(v).exists():
            raise VideoError(f"{v}: video file not found")
    if not videos:
        raise VideoError("no video given")


def _postprocess(opts: ReferenceOptions, pgie: Gie, sgies: Sequence[Gie]) -> Any:
    """The postprocess whose detections become the frames' objects (None: none)."""
    pp = opts.postprocess
    if pp is not None and not hasattr(pp, "run"):
        from dsprobe.postprocess import Postprocess

        return Postprocess.load(pp)
    if pp is None and sgies:
        from dsprobe.postprocess import Postprocess

        return Postprocess.from_nvinfer_config(
            pgie.config, decoder=opts.decoder, deepstream_version=opts.deepstream_version
        )
    return pp


def _total_frames(videos: Sequence[str | Path], max_frames: int | None) -> int:
    cap = max_frames if max_frames is not None else 1 << 62
    return sum(min(probe_video(v).frames or 0, cap) for v in videos)


def _default_notes(
    videos: Sequence[str | Path], pgie: Gie, sgies: Sequence[Gie], opts: ReferenceOptions
) -> dict[str, Any]:
    return {
        "recorded_by": "dsprobe record-onnx",
        "videos": [str(v) for v in videos],
        "models": {str(g.unique_id): str(g.model.path) for g in [pgie] + list(sgies)},
        "muxer": list(opts.muxer),
        "muxer_keep_aspect": opts.muxer_keep_aspect,
        "muxer_filter": opts.muxer_filter,
        "batch": opts.batch,
        "providers": pgie.model.providers,
    }


def _bar(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        warnings.warn("no progress bar without tqdm: pip install 'dsprobe[onnx]'", stacklevel=3)
        return None
    return tqdm(total=total or None, unit="frame", desc="record-onnx")
