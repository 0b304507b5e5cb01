"""Every notebook in notebooks/ executed top to bottom (nbclient, a real kernel) on a short sample
recording; any cell error fails the test. Paths come in through DSPROBE_* environment variables."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("ipywidgets")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def workspace(sample_videos, tmp_path_factory):
    """A temp copy of a sample recording that carries the pipeline's own detections, its ground truth,
    and where the notebooks keep the tuned spec."""
    from dsprobe import Postprocess
    from dsprobe.nvinfer.config import load_nvinfer_config
    from dsprobe.reference.recorder import record_onnx
    from dsprobe.sample import CONFIG_PATH

    d = tmp_path_factory.mktemp("notebooks")
    rec = d / "live.h5"
    record_onnx(
        sample_videos.paths,
        CONFIG_PATH,
        None,
        rec,
        batch=2,
        progress=False,
        postprocess=Postprocess.from_nvinfer_config(load_nvinfer_config(CONFIG_PATH)),
    )
    gt = shutil.copy(sample_videos.gt_json, d / "live_gt.json")
    # a hand-tuned spec (per-class thresholds, IoU 0.45): Run All of any notebook must leave it as it is
    spec = d / "tuned.json"
    pp = Postprocess.from_nvinfer_config(load_nvinfer_config(CONFIG_PATH))
    pp.with_params(1, pre_cluster_threshold=[0.25, 0.25, 0.4, 0.7]).save(spec)
    return {"recording": rec, "gt": Path(gt), "spec": spec, "spec_text": spec.read_text()}


def git_status() -> str:
    root = NOTEBOOKS.parent
    if not (root / ".git").exists():
        return ""
    return subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def run_notebook(name: str, monkeypatch, env: dict[str, str]) -> dict:
    """Run All, then check it wrote nothing: the spec the notebooks share and ``git status``."""
    for k, v in env.items():
        monkeypatch.setenv(k, str(v))
    spec = Path(env["DSPROBE_SPEC"])
    spec_before = spec.read_text() if spec.exists() else None
    status_before = git_status()
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    client.execute()  # raises CellExecutionError naming the cell on any error
    assert (spec.read_text() if spec.exists() else None) == spec_before, f"{name} wrote {spec}"
    assert git_status() == status_before, f"{name} changed the working tree"
    return nb


def outputs(nb: dict) -> tuple[str, list[str]]:
    """All stream text, and the MIME types of every rich output, in order."""
    text, kinds = [], []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o["output_type"] == "stream":
                text.append(o["text"])
            elif o["output_type"] in ("execute_result", "display_data"):
                kinds += list(o["data"])
                text.append(o["data"].get("text/plain", ""))
    return "\n".join(text), kinds


def env_for(ws: dict) -> dict:
    return {
        "DSPROBE_RECORDING": ws["recording"],
        "DSPROBE_GROUND_TRUTH": ws["gt"],
        "DSPROBE_SPEC": ws["spec"],
    }


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == [
        "01_explore_recording.ipynb",
        "02_tune_postprocess.ipynb",
        "03_evaluate_and_search.ipynb",
        "04_export.ipynb",
        "05_custom_decoder.ipynb",
        "06_secondary.ipynb",
    ]
    for p in NOTEBOOKS.glob("*.ipynb"):  # committed without outputs, path cell first
        nb = nbformat.read(p, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs for c in code), p.name
        assert "notebook_paths()" in code[0].source, p.name


def test_01_explore(workspace, monkeypatch):
    text, kinds = outputs(
        run_notebook("01_explore_recording.ipynb", monkeypatch, env_for(workspace))
    )
    from dsprobe import open_recording

    with open_recording(workspace["recording"]) as rec:
        layer = next(iter(rec.layers))
    assert str(workspace["recording"]) in text and layer in text
    assert (
        kinds.count("image/png") == 3
    )  # candidate scores, recorded scores, frame gaps: each shown once
    assert WIDGET_VIEW in kinds  # the frame browser


def test_02_tune(workspace, monkeypatch):
    text, kinds = outputs(
        run_notebook("02_tune_postprocess.ipynb", monkeypatch, env_for(workspace))
    )
    assert WIDGET_VIEW in kinds and "decode:yolov8" in text
    assert "'map50':" in text and "'f1':" in text  # the whole recording scored (tuner.score)


def test_03_evaluate_and_search(workspace, monkeypatch):
    text, kinds = outputs(
        run_notebook("03_evaluate_and_search.ipynb", monkeypatch, env_for(workspace))
    )
    assert "mAP@0.5 " in text and "f1_fp_budget(fp_per_frame=0.1)" in text  # objectives table
    assert "[class-attrs-" in text  # per-class thresholds exported
    assert kinds.count("image/png") == 3  # operating curves, error types, confusion matrix
    assert kinds.count(WIDGET_VIEW) >= 4  # gallery, tuner, objectives panel, save button


def test_03_with_a_reference_recording_instead_of_ground_truth(workspace, monkeypatch, tmp_path):
    env = {
        **env_for(workspace),
        "DSPROBE_GROUND_TRUTH": tmp_path / "none.json",
        "DSPROBE_SPEC": tmp_path / "s.json",
        "DSPROBE_REFERENCE": workspace["recording"],
        "DSPROBE_MAX_FRAMES": "20",
    }
    text, _ = outputs(run_notebook("03_evaluate_and_search.ipynb", monkeypatch, env))
    assert f"reference detections from {workspace['recording']}" in text and "(20 frames," in text


def test_04_export(workspace, monkeypatch):
    text, _ = outputs(run_notebook("04_export.ipynb", monkeypatch, env_for(workspace)))
    assert "[class-attrs-all]" in text and "pre-cluster-threshold=" in text
    assert "the saved spec reproduces all" in text


def test_05_custom_decoder(workspace, monkeypatch, tmp_path):
    """The user's CenterNet-style decoder: tuned, searched, exported, run live == replay."""
    env = {**env_for(workspace), "DSPROBE_WORKDIR": tmp_path}
    text, kinds = outputs(run_notebook("05_custom_decoder.ipynb", monkeypatch, env))
    assert "decode:__main__:centernet_decoder" in text and WIDGET_VIEW in kinds
    assert "best: {'wh_scale':" in text and "def local_max(" in text  # searched, exported
    assert "Nothing was executed" in text  # no consent, no import
    assert "live == replay on 60 of 60 frames" in text
    assert (tmp_path / "tuned" / "user_steps.py").exists()


@pytest.fixture(scope="module")
def secondary_workspace(sample_videos, tmp_path_factory):
    """PGIE + the secondary sample (crops stored) on the 2 s sample videos, and their ground truth."""
    from dsprobe.reference.recorder import record_onnx
    from dsprobe.sample import CONFIG_PATH, SECONDARY_CONFIG_PATH

    d = tmp_path_factory.mktemp("secondary")
    rec = d / "sgie.h5"
    record_onnx(
        sample_videos.paths,
        CONFIG_PATH,
        None,
        rec,
        batch=2,
        images=False,
        object_images=True,
        secondary=[SECONDARY_CONFIG_PATH],
        progress=False,
    )
    return {"recording": rec, "gt": Path(shutil.copy(sample_videos.gt_json, d / "sgie_gt.json"))}


def test_06_secondary(secondary_workspace, monkeypatch):
    ws = secondary_workspace
    env = {
        "DSPROBE_SECONDARY_RECORDING": ws["recording"],
        "DSPROBE_GROUND_TRUTH": ws["gt"],
        "DSPROBE_SPEC": ws["recording"].with_name("tuned.json"),  # 06 must not write it
    }
    nb = run_notebook("06_secondary.ipynb", monkeypatch, env)
    text, kinds = outputs(nb)
    assert "best classifier-threshold" in text and "'nan_rows': 0" in text
    assert "'top1':" in text and "cosine:embedding" in text
    assert "SGIE 2 objects paired by rect" in text  # dsprobe compare, engine stand-in vs ONNX
    # galleries x2, sweep, norms, histograms, drifted crops; threshold view and projection explorer
    assert kinds.count("image/png") >= 6 and kinds.count(WIDGET_VIEW) >= 2
    assert (ws["recording"].parent / "sgie_bilinear.h5").exists()
