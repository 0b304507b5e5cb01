"""Shared fixtures: short sample videos and a reference recording made from them (real PyAV decoding,
real ONNX Runtime inference with the bundled sample model)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def sample_videos(tmp_path_factory):
    from dsprobe.sample import make_videos

    return make_videos(tmp_path_factory.mktemp("videos"), seconds=2.0)


@pytest.fixture(scope="session")
def sample_recording(sample_videos, tmp_path_factory) -> Path:
    from dsprobe.reference.recorder import record_onnx
    from dsprobe.sample import CONFIG_PATH

    out = tmp_path_factory.mktemp("rec") / "sample.h5"
    record_onnx(sample_videos.paths, CONFIG_PATH, None, out, batch=2, progress=False)
    return out
