"""Video decoding with PyAV (FFmpeg), interleaved into batches like nvstreammux.

Frames come out as RGB uint8 ``(H, W, 3)`` at the source resolution (FFmpeg's swscale does the
YUV -> RGB conversion, BT.601 unless the stream says otherwise), or, for GRAY models, as the decoded
luma plane ``(H, W, 1)`` untouched (what an NV12 -> GRAY8 conversion keeps). ``pts_ns`` comes from
the container's timestamps (``frame.pts * time_base``), not from the frame index.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np


class VideoError(ValueError):
    """A video that cannot be opened or decoded; the message names the file."""


@dataclass
class DecodedFrame:
    """One decoded frame: ``image`` RGB (H, W, 3) or luma (H, W, 1) uint8 at the source resolution."""

    source_id: int
    frame_num: int
    pts_ns: int
    image: np.ndarray


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video's first video stream (``frames`` 0 when unknown)."""

    path: Path
    width: int
    height: int
    fps: float
    frames: int
    codec: str


def _av() -> Any:
    try:
        import av
    except ImportError as exc:  # pragma: no cover - environment dependent
        raise ImportError(
            "the reference recorder decodes video with PyAV: pip install 'dsprobe[onnx]'"
        ) from exc
    return av


def _open(path: str | Path) -> tuple[Path, Any]:
    av = _av()
    p = Path(path)
    if not p.exists():
        raise VideoError(f"{p}: video file not found")
    try:
        container = av.open(str(p))
    except Exception as exc:
        raise VideoError(f"{p}: cannot open video ({type(exc).__name__}: {exc})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{p}: has no video stream")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        tag = getattr(stream, "codec_tag", "") or "unknown"
        container.close()
        raise VideoError(
            f"{p}: this FFmpeg build has no decoder for its video codec ({tag}); re-encode it "
            "(e.g. ffmpeg -i in -c:v libx264 out.mp4)"
        )
    return p, container


def probe_video(path: str | Path) -> VideoInfo:
    """Size, frame rate, frame count and codec of ``path`` without decoding it."""
    p, container = _open(path)
    try:
        s = container.streams.video[0]
        rate = s.average_rate or s.guessed_rate
        return VideoInfo(
            p,
            int(s.codec_context.width),
            int(s.codec_context.height),
            float(rate) if rate else 0.0,
            int(s.frames or 0),
            str(s.codec_context.name),
        )
    finally:
        container.close()


def luma_plane(frame: Any) -> np.ndarray:
    """The decoded Y plane of a planar/semi-planar 8-bit YUV frame as ``(H, W, 1)`` uint8 (values as
    decoded, limited range for most H.264/H.265); other formats go through swscale's gray."""
    if frame.format.name in (
        "yuv420p",
        "yuvj420p",
        "nv12",
        "yuv422p",
        "yuvj422p",
        "yuv444p",
        "yuvj444p",
    ):
        plane = frame.planes[0]
        buf = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
        return np.ascontiguousarray(buf[:, : plane.width])[..., None]
    return frame.to_ndarray(format="gray")[..., None]


def read_frames(
    path: str | Path, source_id: int = 0, max_frames: int | None = None, gray: bool = False
) -> Iterator[DecodedFrame]:
    """Decode ``path`` frame by frame (RGB, or the luma plane with ``gray``).

    Raises VideoError naming the file (and codec, and frame number) on any decode problem.
    """
    p, container = _open(path)
    try:
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        stream.thread_type = "AUTO"
        n = 0
        try:
            for frame in container.decode(stream):
                if max_frames is not None and n >= max_frames:
                    break
                tb = frame.time_base or stream.time_base
                pts_ns = (
                    int(round(float(frame.pts * tb) * 1e9)) if frame.pts is not None and tb else n
                )
                image = luma_plane(frame) if gray else frame.to_ndarray(format="rgb24")
                yield DecodedFrame(source_id, n, pts_ns, image)
                n += 1
        except Exception as exc:
            raise VideoError(
                f"{p}: decoding the {codec} stream failed at frame {n} "
                f"({type(exc).__name__}: {exc})"
            ) from None
        if n == 0 and max_frames != 0:
            raise VideoError(
                f"{p}: no frame of its {codec} stream could be decoded (unsupported codec or "
                "damaged file?)"
            )
    finally:
        container.close()


def batches(
    paths: Sequence[str | Path], batch_size: int, max_frames: int | None = None, gray: bool = False
) -> Iterator[list[DecodedFrame]]:
    """Frames of several videos round-robin into batches of up to ``batch_size``, like nvstreammux
    with equal-rate file sources: ``source_id`` = index in ``paths``, one frame per source in turn,
    finished streams drop out, the last batch may be partial."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    iters = [read_frames(p, i, max_frames, gray) for i, p in enumerate(paths)]
    pending: list[DecodedFrame] = []
    active = list(range(len(iters)))
    while active:
        for i in list(active):
            try:
                pending.append(next(iters[i]))
            except StopIteration:
                active.remove(i)
                continue
            if len(pending) == batch_size:
                yield pending
                pending = []
    if pending:
        yield pending
