"""Video decoding with PyAV (FFmpeg), interleaved like nvstreammux batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np


class VideoError(ValueError):
    """A video that cannot be opened or decoded; the message names the file."""


@dataclass
class DecodedFrame:
    """One decoded frame: RGB uint8 HxWx3 at the source resolution, PTS in ns."""

    source_id: int
    frame_num: int
    pts_ns: int
    image: np.ndarray


def _av():
    try:
        import av
    except ImportError as exc:  # pragma: no cover - environment dependent
        raise ImportError("the reference recorder decodes video with PyAV: pip install 'dsprobe[onnx]'") from exc
    return av


def read_frames(path: str | Path, source_id: int = 0, max_frames: int | None = None) -> Iterator[DecodedFrame]:
    """Decode ``path`` frame by frame (RGB). Raises VideoError naming the file on any decode problem."""
    av = _av()
    p = Path(path)
    if not p.exists():
        raise VideoError(f"{p}: video file not found")
    try:
        container = av.open(str(p))
    except Exception as exc:
        raise VideoError(f"{p}: cannot open video ({exc})") from None
    try:
        if not container.streams.video:
            raise VideoError(f"{p}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        n = 0
        try:
            for frame in container.decode(stream):
                if max_frames is not None and n >= max_frames:
                    break
                pts = frame.pts if frame.pts is not None else n
                tb = frame.time_base or stream.time_base
                pts_ns = int(round(float(pts * tb) * 1e9)) if tb is not None else n
                yield DecodedFrame(source_id, n, pts_ns, frame.to_ndarray(format="rgb24"))
                n += 1
        except VideoError:
            raise
        except Exception as exc:
            raise VideoError(f"{p}: decoding failed at frame {n} ({type(exc).__name__}: {exc})") from None
        if n == 0:
            raise VideoError(f"{p}: no frames could be decoded (unsupported codec?)")
    finally:
        container.close()


def batches(paths: Sequence[str | Path], batch_size: int, max_frames: int | None = None
            ) -> Iterator[list[DecodedFrame]]:
    """Round-robin frames of several videos into batches of up to ``batch_size`` (nvstreammux-like:
    source_id = index in ``paths``; finished streams drop out)."""
    iters = [read_frames(p, i, max_frames) for i, p in enumerate(paths)]
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
