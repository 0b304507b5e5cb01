"""Which recording the notebooks open (:func:`notebook_paths`): the one named by ``DSPROBE_*``
environment variables, else the demo's recording with ground truth when ``make demo`` has made it,
else the small bundled sample (``recordings/sample.h5``: 2 streams x 24 frames)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "recordings" / "sample.h5"
DEMO = ROOT / "out" / "demo" / "recording.h5"
DEMO_GT = ROOT / "out" / "demo" / "videos" / "gt.json"


@dataclass(frozen=True)
class NotebookPaths:
    """``recording``; its COCO ``ground_truth`` (may not exist); ``spec``: the file name the save
    buttons suggest and notebooks 3-4 read if it exists (nothing writes it unless you click save)."""

    recording: Path
    ground_truth: Path
    spec: Path
    source: str  # "environment", "demo" or "sample"


def notebook_paths() -> NotebookPaths:
    """``DSPROBE_RECORDING`` / ``DSPROBE_GROUND_TRUTH`` / ``DSPROBE_SPEC`` when set; otherwise the demo
    recording (``out/demo/recording.h5`` with ``out/demo/videos/gt.json``) when both exist, else the
    bundled sample (``<stem>_gt.json`` beside it). The spec defaults to ``out/tuned_postprocess.json``."""
    env = os.environ
    spec = Path(env.get("DSPROBE_SPEC", ROOT / "out" / "tuned_postprocess.json"))
    if "DSPROBE_RECORDING" in env:
        rec, source = Path(env["DSPROBE_RECORDING"]), "environment"
        gt = rec.with_name(f"{rec.stem}_gt.json")
    elif DEMO.exists() and DEMO_GT.exists():
        rec, gt, source = DEMO, DEMO_GT, "demo"
    else:
        rec, source = SAMPLE, "sample"
        gt = rec.with_name(f"{rec.stem}_gt.json")
    return NotebookPaths(rec, Path(env.get("DSPROBE_GROUND_TRUTH", gt)), spec, source)


DEMO_SECONDARY = ROOT / "out" / "demo" / "secondary.h5"
SECONDARY_SAMPLE = ROOT / "out" / "secondary_sample.h5"


def secondary_notebook_paths() -> NotebookPaths:
    """Notebook 06's SGIE recording: ``DSPROBE_SECONDARY_RECORDING`` (ground truth
    ``DSPROBE_GROUND_TRUTH`` or ``<stem>_gt.json``) when set; else the demo's (``out/demo/secondary.h5``
    with ``out/demo/videos/gt.json``) when ``make demo`` has made it; else ``out/secondary_sample.h5``
    (``source == "sample"``: make it with ``dsprobe.sample.ensure_secondary_recording``)."""
    env = os.environ
    spec = Path(env.get("DSPROBE_SPEC", ROOT / "out" / "tuned_postprocess.json"))
    if "DSPROBE_SECONDARY_RECORDING" in env:
        rec, source = Path(env["DSPROBE_SECONDARY_RECORDING"]), "environment"
        gt = rec.with_name(f"{rec.stem}_gt.json")
    elif DEMO_SECONDARY.exists() and DEMO_GT.exists():
        rec, gt, source = DEMO_SECONDARY, DEMO_GT, "demo"
    else:
        rec, source = SECONDARY_SAMPLE, "sample"
        gt = rec.with_name(f"{rec.stem}_gt.json")
    return NotebookPaths(rec, Path(env.get("DSPROBE_GROUND_TRUTH", gt)), spec, source)
