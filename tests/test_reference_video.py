"""Video decoding for the reference recorder: container PTS, nvstreammux-like interleaving, luma
planes for GRAY models, and errors that name the file."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from dsprobe.reference.video import VideoError, batches, probe_video, read_frames

av = pytest.importorskip("av")


def write_video(
    path: Path,
    values: list[int],
    times_ms: list[int] | None = None,
    size: tuple[int, int] = (64, 48),
    container: str | None = None,
) -> Path:
    """Flat grey frames of ``values`` at ``times_ms`` (default 10 fps), H.264, no B-frames."""
    times_ms = times_ms if times_ms is not None else [100 * i for i in range(len(values))]
    with av.open(str(path), "w", format=container) as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        s.options = {"bf": "0", "threads": "1"}
        s.codec_context.time_base = Fraction(1, 1000)
        for v, t in zip(values, times_ms):
            f = av.VideoFrame.from_ndarray(
                np.full((size[1], size[0], 3), v, np.uint8), format="rgb24"
            )
            f.pts, f.time_base = t, Fraction(1, 1000)
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def test_pts_come_from_the_container(tmp_path):
    p = write_video(
        tmp_path / "vfr.mkv", [0, 255, 0, 255], [0, 100, 300, 350]
    )  # variable frame rate
    frames = list(read_frames(p, source_id=3))
    assert [f.pts_ns for f in frames] == [0, 100_000_000, 300_000_000, 350_000_000]
    assert [f.frame_num for f in frames] == [0, 1, 2, 3] and {f.source_id for f in frames} == {3}
    assert frames[1].image.shape == (48, 64, 3) and frames[1].image.dtype == np.uint8
    assert frames[1].image.min() > 245 and frames[0].image.max() < 10
    assert [f.frame_num for f in read_frames(p, max_frames=2)] == [0, 1]


def test_gray_frames_are_the_decoded_luma_plane(tmp_path):
    p = write_video(tmp_path / "bw.mkv", [0, 255])
    black, white = (f.image for f in read_frames(p, gray=True))
    # H.264 stores limited-range luma: black 16, white 235 — passed on untouched (NV12 -> GRAY8 keeps Y)
    assert (
        black.shape == (48, 64, 1) and int(np.median(black)) == 16 and int(np.median(white)) == 235
    )


def test_batches_interleave_streams_like_nvstreammux(tmp_path):
    paths = [write_video(tmp_path / f"v{i}.mkv", [0] * n) for i, n in enumerate((3, 1, 2))]
    got = [[(f.source_id, f.frame_num) for f in b] for b in batches(paths, 2)]
    # one frame per stream in turn; finished streams drop out; batches of 2
    assert got == [[(0, 0), (1, 0)], [(2, 0), (0, 1)], [(2, 1), (0, 2)]]
    assert [[(f.source_id, f.frame_num) for f in b] for b in batches(paths, 4)] == [
        [(0, 0), (1, 0), (2, 0), (0, 1)],
        [(2, 1), (0, 2)],
    ]
    with pytest.raises(ValueError, match="batch size must be >= 1"):
        next(batches(paths, 0))


def test_probe_video(tmp_path):
    p = write_video(tmp_path / "a.mp4", [0] * 5, size=(96, 64))
    info = probe_video(p)
    assert (info.width, info.height, info.codec) == (96, 64, "h264") and info.frames == 5


def test_errors_name_the_file(tmp_path):
    with pytest.raises(VideoError, match=r"nope\.mp4: video file not found"):
        next(read_frames(tmp_path / "nope.mp4"))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoError, match=r"junk\.mp4: cannot open video"):
        next(read_frames(junk))
    audio = tmp_path / "audio.m4a"
    with av.open(str(audio), "w") as out:
        s = out.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 8000
        for pkt in list(s.encode(frame)) + list(s.encode()):
            out.mux(pkt)
    with pytest.raises(VideoError, match=r"audio\.m4a: has no video stream"):
        next(read_frames(audio))
    good = write_video(tmp_path / "good.mkv", [0, 255] * 3)
    unknown = tmp_path / "unknown_codec.mkv"  # a Matroska codec id no decoder knows
    unknown.write_bytes(good.read_bytes().replace(b"V_MPEG4/ISO/AVC", b"V_UNKNOWN/XYZ12"))
    with pytest.raises(VideoError, match=r"unknown_codec\.mkv: this FFmpeg build has no decoder"):
        next(read_frames(unknown))
    with pytest.raises(VideoError, match=r"unknown_codec\.mkv: this FFmpeg build has no decoder"):
        probe_video(unknown)
