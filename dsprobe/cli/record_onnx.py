"""``dsprobe record-onnx``: record video files through an ONNX model as nvinfer would, no DeepStream.

Example::

    dsprobe record-onnx --config config_infer_primary.txt --model model.onnx \\
        --video a.mp4 --video b.mp4 --muxer 1280x720 --batch 2 -o recordings/ref.h5
"""

from __future__ import annotations

import argparse
import sys


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"muxer size must be positive, got {text!r}")
    return w, h


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="nvinfer config file of the primary GIE")
    p.add_argument("--model", help="ONNX model (default: the config's onnx-file)")
    p.add_argument(
        "--video",
        action="append",
        required=True,
        help="video file; repeat for several streams (source_id = position)",
    )
    p.add_argument(
        "--muxer",
        type=_size,
        default=(1280, 720),
        help="nvstreammux WIDTHxHEIGHT (default 1280x720)",
    )
    p.add_argument(
        "--muxer-keep-aspect",
        action="store_true",
        help="letterbox into the muxer size (nvstreammux enable-padding=1)",
    )
    p.add_argument(
        "--muxer-filter",
        type=int,
        default=0,
        help="nvstreammux interpolation-method (0 nearest, 1 bilinear; default 0)",
    )
    p.add_argument("--batch", type=int, default=1, help="nvstreammux batch-size (default 1)")
    p.add_argument("--max-frames", type=int, help="frames per stream at most")
    p.add_argument("--no-images", action="store_true", help="do not store frame images")
    p.add_argument(
        "--image-size", type=int, default=640, help="longest side of stored images (default 640)"
    )
    p.add_argument(
        "--postprocess",
        help="postprocess spec (JSON) run on the PGIE output; its detections are "
        "recorded as the frame's objects (and are what secondary GIEs crop)",
    )
    p.add_argument(
        "--decoder",
        default="yolov8",
        help="decoder of the PGIE's default postprocess when "
        "--sgie-config is given without --postprocess (default yolov8)",
    )
    p.add_argument(
        "--sgie-config",
        action="append",
        default=[],
        help="secondary GIE config (process-mode=2); repeat for several",
    )
    p.add_argument(
        "--sgie-model",
        action="append",
        default=[],
        help="ONNX model of the matching --sgie-config (default: its onnx-file)",
    )
    p.add_argument("--object-images", action="store_true", help="store each SGIE object's crop")
    p.add_argument(
        "--deepstream-version",
        type=float,
        default=7.1,
        help="DeepStream version whose SGIE rules apply (default 7.1)",
    )
    p.add_argument(
        "--compression", help="tensor compression (lzf, gzip, gzip-N, ...; default none)"
    )
    p.add_argument("-o", "--output", required=True, help="recording to write (.h5)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an existing recording at --output"
    )


def run(args: argparse.Namespace) -> int:
    from dsprobe.nvinfer.config import NvinferConfigError
    from dsprobe.postprocess.pipeline import PostprocessError
    from dsprobe.recording.options import RecorderOptions
    from dsprobe.recording.reader import RecordingError
    from dsprobe.reference.recorder import ReferenceOptions, record_onnx
    from dsprobe.reference.runner import ModelError
    from dsprobe.reference.video import VideoError

    if len(args.sgie_model) > len(args.sgie_config):
        print("dsprobe record-onnx: more --sgie-model than --sgie-config", file=sys.stderr)
        return 2
    models = args.sgie_model + [None] * (len(args.sgie_config) - len(args.sgie_model))
    options = ReferenceOptions(
        muxer=args.muxer,
        muxer_keep_aspect=args.muxer_keep_aspect,
        muxer_filter=args.muxer_filter,
        batch=args.batch,
        images=not args.no_images,
        object_images=args.object_images,
        max_frames=args.max_frames,
        postprocess=args.postprocess,
        secondary=list(zip(args.sgie_config, models)),
        decoder=args.decoder,
        deepstream_version=args.deepstream_version,
        progress=sys.stderr.isatty(),
    )
    try:
        recorder = RecorderOptions(
            image_max_size=args.image_size, compression=args.compression, overwrite=args.overwrite
        )
        s = record_onnx(
            args.video, args.config, args.model, args.output, options, recorder=recorder
        )
    except (
        VideoError,
        ModelError,
        NvinferConfigError,
        PostprocessError,
        RecordingError,
        ValueError,
        OSError,
    ) as exc:
        print(f"dsprobe record-onnx: {exc}", file=sys.stderr)
        return 1
    print(s.text())
    return 0
