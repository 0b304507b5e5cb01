"""Exported bundles: the user's functions' source captured into one module (helpers, imports,
constants), refused with a named reason when that cannot be done, loaded only with consent and an
unchanged SHA-256, and run in a fresh interpreter that has never seen this test file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pytest

from dsprobe import Detections, Postprocess, Range
from dsprobe.postprocess.bundle import BundleError
from dsprobe.postprocess.registry import StepContext

GRID = 4  # a constant the decoder uses
OFFSETS = (0.5, 0.5)
CTX = StepContext(network_size=(32, 32), frame_size=(64, 64))
SCRATCH = np.zeros(3)  # an array: cannot be written into a module


def cell_boxes(idx: np.ndarray, size: np.ndarray) -> np.ndarray:
    """A module-level helper the decoder calls (its source goes into the bundle too)."""
    cx = (idx % GRID + OFFSETS[0]) * (32 / GRID)
    cy = (idx // GRID + OFFSETS[1]) * (32 / GRID)
    return np.stack([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2], 1)


def grid_decoder(
    layers,
    ctx,
    *,
    score_threshold: Annotated[float, Range(0, 1)] = 0.5,
    size: float = 6.0,
    mode: Literal["max", "first"] = "max",
) -> Detections:
    """Heat map ``heat`` (C, GRID * GRID): one box per cell whose best class clears the threshold."""
    heat = np.asarray(layers["heat"], np.float32).reshape(-1, GRID * GRID)
    cls = heat.argmax(0) if mode == "max" else np.zeros(heat.shape[1], np.int64)
    score = heat[cls, np.arange(heat.shape[1])]
    idx = np.flatnonzero(score >= score_threshold)
    boxes = cell_boxes(idx, np.full(len(idx), size, np.float32)).astype(np.float32)
    return Detections(boxes, score[idx], cls[idx].astype(np.int32), "network")


def widen(dets, ctx, *, factor: float = 1.0):
    return Detections(dets.boxes * [1, 1, factor, factor], dets.scores, dets.class_ids, dets.space)


def uses_array(layers, ctx):
    return Detections.empty("network") if SCRATCH.any() else Detections.empty("network")


def user_pp(**params) -> Postprocess:
    return Postprocess(
        [
            {"kind": "decode", "name": grid_decoder, "params": params},
            {"kind": "cluster", "name": "nms", "params": {"iou_threshold": 0.5}},
            {"kind": "filter", "name": widen, "params": {"factor": 1.5}},
            {"kind": "scale", "name": "nvinfer"},
        ],
        num_classes=2,
    )


def heat() -> np.ndarray:
    return np.random.default_rng(3).random((2, GRID * GRID)).astype(np.float32)


def test_export_writes_one_module_with_helpers_imports_and_constants(tmp_path):
    pp = user_pp(score_threshold=0.4)
    spec_path = pp.export(tmp_path / "tuned")
    spec = json.loads(spec_path.read_text())
    module = (tmp_path / "tuned" / spec["bundle"]["module"]).read_text()
    assert spec["bundle"]["functions"] == {
        "test_bundle:grid_decoder": "grid_decoder",
        "test_bundle:widen": "widen",
    }
    for line in (
        "import numpy as np",
        "from dsprobe.postprocess.params import Range",
        "from typing import Annotated",
        "GRID = 4",
        "OFFSETS = (0.5, 0.5)",
        "def cell_boxes(",
        "def grid_decoder(",
        "def widen(",
    ):
        assert line in module, line
    assert "SCRATCH" not in module and "def user_pp" not in module  # only what is used
    loaded = Postprocess.load(tmp_path / "tuned", trust=True)
    assert loaded.to_dict() == pp.to_dict()
    assert loaded.run({"heat": heat()}, CTX).equals(pp.run({"heat": heat()}, CTX))
    # its params by name come from the loaded functions' signatures, ranges included
    assert loaded.param_specs()["score_threshold"].range == Range(0, 1)


def test_bundle_runs_in_a_fresh_interpreter(tmp_path):
    pp = user_pp(mode="first")
    pp.export(tmp_path / "b")
    expected = pp.run({"heat": heat()}, CTX)
    np.save(tmp_path / "heat.npy", heat())
    code = (
        "import sys, numpy as np\n"
        "from dsprobe import Postprocess\n"
        "from dsprobe.postprocess.registry import StepContext\n"
        f"pp = Postprocess.load({str(tmp_path / 'b')!r}, trust=True)\n"
        "assert 'test_bundle' not in sys.modules\n"
        f"d = pp.run({{'heat': np.load({str(tmp_path / 'heat.npy')!r})}}, "
        "StepContext(network_size=(32, 32), frame_size=(64, 64)))\n"
        "print(d.boxes.tobytes().hex(), d.scores.tobytes().hex())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent), "PATH": ""},
    )
    assert out.stdout.split() == [expected.boxes.tobytes().hex(), expected.scores.tobytes().hex()]


def test_load_without_consent_runs_nothing_and_says_how(tmp_path):
    user_pp().export(tmp_path / "b")
    before = {m for m in sys.modules if m.startswith("dsprobe_bundle_")}
    with pytest.raises(BundleError, match=r"grid_decoder, widen.*trust=True.*Nothing was executed"):
        Postprocess.load(tmp_path / "b")
    assert {m for m in sys.modules if m.startswith("dsprobe_bundle_")} == before


def test_an_edited_module_is_refused(tmp_path):
    user_pp().export(tmp_path / "b")
    module = tmp_path / "b" / "user_steps.py"
    module.write_text(module.read_text().replace("GRID = 4", "GRID = 5"))
    with pytest.raises(BundleError, match="user_steps.py: edited since it was exported"):
        Postprocess.load(tmp_path / "b", trust=True)


def test_a_builtin_only_postprocess_needs_no_consent(tmp_path):
    pp = Postprocess([{"kind": "decode", "name": "yolov8"}, {"kind": "cluster", "name": "nms"}])
    pp.export(tmp_path / "b")
    assert not (tmp_path / "b" / "user_steps.py").exists()
    assert Postprocess.load(tmp_path / "b").to_dict() == pp.to_dict()


def _refusal(tmp_path, fn) -> str:
    pp = Postprocess([{"kind": "decode", "name": fn}])
    with pytest.raises(BundleError) as info:
        pp.export(tmp_path / "x")
    assert not (tmp_path / "x" / "user_steps.py").exists()
    return str(info.value)


def test_what_cannot_be_captured_is_refused_by_name(tmp_path):
    limit = 0.3

    def closure(layers, ctx):
        return grid_decoder(layers, ctx, score_threshold=limit)

    assert "'test_what_cannot_be_captured_is_refused_by_name.<locals>.closure' is a closure " \
        "over local variable(s) limit" in _refusal(tmp_path, closure)  # fmt: skip
    assert "is a lambda" in _refusal(tmp_path, lambda layers, ctx: Detections.empty("network"))
    msg = _refusal(tmp_path, uses_array)
    assert "'uses_array' uses 'SCRATCH': a ndarray that has no source" in msg
