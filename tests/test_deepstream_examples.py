"""The example apps' platform choices follow NVIDIA's deepstream-imagedata-multistream sample
(unified memory on dGPU, pinned on WSL, nothing on Jetson; nv3dsink on Jetson) and link only NVMM
decoder pads (deepstream-test3). Their pipelines need DeepStream; these parts run here."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class FakePyds:
    NVBUF_MEM_CUDA_PINNED = 1
    NVBUF_MEM_CUDA_UNIFIED = 3


def test_example_platform_choices():
    rec = load("deepstream_record")
    assert rec.platform_choices(FakePyds, jetson=False, wsl=False) == {
        "memory_type": 3,
        "sink": "nveglglessink",
    }
    assert rec.platform_choices(FakePyds, jetson=False, wsl=True)["memory_type"] == 1
    assert rec.platform_choices(FakePyds, jetson=True, wsl=False) == {
        "memory_type": None,
        "sink": "nv3dsink",
    }


class _Features:
    def __init__(self, nvmm):
        self.nvmm = nvmm

    def contains(self, name):
        return self.nvmm and name == "memory:NVMM"


class _Caps:
    def __init__(self, media, nvmm):
        self.media, self.nvmm = media, nvmm

    def get_structure(self, i):
        return type("S", (), {"get_name": lambda s: self.media})()

    def get_features(self, i):
        return _Features(self.nvmm)


class _Pad:
    def __init__(self, media, nvmm):
        self.caps, self.linked_to = _Caps(media, nvmm), None

    def get_current_caps(self):
        return self.caps

    def link(self, target):
        self.linked_to = target
        return 0


class _Sink:
    def is_linked(self):
        return False


def test_example_links_only_nvmm_video_pads(capsys):
    rec = load("deepstream_record")
    sink = _Sink()
    assert rec.link_if_nvmm(_Pad("video/x-raw", True), sink, "cam")
    assert not rec.link_if_nvmm(_Pad("audio/x-raw", True), sink, "cam")
    system_memory = _Pad("video/x-raw", False)
    assert not rec.link_if_nvmm(system_memory, sink, "cam") and system_memory.linked_to is None
    assert "no NVMM" in capsys.readouterr().err


def test_example_refuses_configs_doctor_calls_errors(capsys):
    rec = load("deepstream_record")
    data = Path(__file__).parent / "data" / "deepstream"
    assert not rec.check_configs(
        [str(data / "pgie_detector.txt"), str(data / "sgie_classifier_async.txt")]
    )
    assert "classifier-async-mode=0" in capsys.readouterr().err
    assert rec.check_configs([str(data / "ssd_nopostprocess.txt"), None])


def test_postprocess_example_cli():
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "deepstream_postprocess.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for flag in ("--pgie", "--spec", "--sgie", "--tracker", "--record"):
        assert flag in out
