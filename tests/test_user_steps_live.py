"""A user's decoder end to end on the live path: exported as a bundle, attached with consent through
attach_postprocess (against tests/pyds_double.py, a TEST DOUBLE of pyds/Gst: no DeepStream here), the
objects it adds equal the replay of the same bundle; failing user code is counted, never raised."""

from __future__ import annotations

import json

import numpy as np
import pyds_double as pyds
import pytest

from dsprobe import Detections, Postprocess, Recorder, open_recording
from dsprobe.deepstream import attach_postprocess, attach_recorder
from dsprobe.postprocess.bundle import BundleError

MUX = (1280, 720)
NET = 320


def peak_decoder(layers, ctx, *, score_threshold: float = 0.5, shrink: float = 1.0) -> Detections:
    """(4 + C, N) rows cx, cy, w, h, class scores: a box for each anchor whose best score clears it."""
    a = np.asarray(layers["output0"], np.float32).reshape(-1, layers["output0"].shape[-1])
    cls = a[4:].argmax(0)
    score = a[4:].max(0)
    keep = np.flatnonzero(score >= score_threshold)
    cx, cy, w, h = a[:4, keep] * [[1], [1], [shrink], [shrink]]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).astype(np.float32)
    return Detections(boxes, score[keep], cls[keep].astype(np.int32), "network")


def broken_decoder(layers, ctx, *, mode: str = "raise") -> Detections:
    if mode == "raise":
        raise ZeroDivisionError("no anchors to divide")
    if mode == "nan":
        return Detections(np.full((1, 4), np.nan, np.float32), [0.9], [0], "network")
    return "not detections"  # type: ignore[return-value]


@pytest.fixture(autouse=True)
def double():
    with pyds.installed():
        yield pyds


def output(rng, nc=3, n=400):
    a = np.zeros((4 + nc, n), np.float32)
    a[:2] = rng.uniform(0.3 * NET, 0.7 * NET, (2, n))
    a[2:4] = rng.uniform(10, 40, (2, n))
    a[4:] = rng.uniform(0, 0.3, (nc, n))
    a[4, :3] = 0.95
    a[5, 3:5] = 0.8
    return a


def user_postprocess() -> Postprocess:
    from dsprobe.nvinfer.config import parse_nvinfer_config

    cfg = parse_nvinfer_config(
        f"[property]\nnum-detected-classes=3\ninfer-dims=3;{NET};{NET}\ncluster-mode=2\n"
        "maintain-aspect-ratio=1\n[class-attrs-all]\nnms-iou-threshold=0.5\n"
    )
    return Postprocess.from_nvinfer_config(cfg, decoder=peak_decoder, score_threshold=0.6)


def run_live(pp_or_path, tmp_path, frames=3, **kw):
    rng = np.random.default_rng(2)
    pipe = pyds.Pipeline(MUX)
    gie = pyds.GieOutput(1, {"output0": (0, (7, 400))}, pyds.NvDsInferNetworkInfo(NET, NET, 3))
    rec = Recorder(tmp_path / "live.h5", images=False)
    live = attach_postprocess(pipe.pad, pp_or_path, muxer_size=MUX, component_id=1, **kw)
    attach_recorder(pipe.pad, rec, muxer_size=MUX, images=False)
    for k in range(frames):
        fm = pipe.frame(0, k, 0, MUX)
        fm._user.append(pipe.tensor_meta(gie, {"output0": output(rng)}))
        pipe.push([fm])
    rec.close()
    return live, open_recording(tmp_path / "live.h5")


def test_exported_user_decoder_runs_live_with_consent_and_equals_replay(tmp_path):
    pp = user_postprocess().set_params({"shrink": 0.8})
    pp.export(tmp_path / "tuned")
    with pytest.raises(BundleError, match="trust=True"):
        attach_postprocess(pyds.Pipeline(MUX).pad, str(tmp_path / "tuned"))
    live, rec = run_live(str(tmp_path / "tuned"), tmp_path, trust=True)
    assert live.stats["error_count"] == 0
    bundle = Postprocess.load(tmp_path / "tuned", trust=True)
    for i in range(len(rec)):
        f = rec[i]
        replay = bundle(f)
        assert f.detections.same_objects(replay) and f.detections.same_objects(pp(f))
        assert len(replay) >= 2  # the class-0 and class-1 peaks survive NMS at least once each
    # compare and evaluate take the user's postprocess as any other
    from dsprobe import evaluate, ground_truth_from_detections
    from dsprobe.analysis.compare import compare

    rep = compare(rec, rec, postprocess=bundle)
    n = len(bundle.run_recording(rec))
    assert (rep.detections.matched, rep.detections.missing, rep.detections.extra) == (n, 0, 0)
    gt = ground_truth_from_detections(pp.run_recording(rec), labels=["a", "b", "c"])
    assert evaluate(bundle.run_recording(rec), gt).map50 == 1.0


@pytest.mark.parametrize(
    "mode, message",
    [
        ("raise", "ZeroDivisionError: no anchors to divide"),
        ("nan", "1 of 1 boxes with NaN/inf"),
        ("type", "returned str, expected Detections"),
    ],
)
def test_failing_user_code_is_counted_live_and_named_in_one_line(tmp_path, mode, message):
    pp = Postprocess(
        [{"kind": "decode", "name": broken_decoder, "params": {"mode": mode}}], num_classes=3
    )
    live, rec = run_live(pp, tmp_path, frames=2)
    assert live.stats["error_count"] == 2 and len(rec) == 2  # counted; the pipeline went on
    with pytest.raises(Exception) as info:
        pp(rec[0])
    text = str(info.value)
    assert "\n" not in text and "step 0 (decode 'test_user_steps_live:broken_decoder')" in text
    assert message in text


def drop_small(dets, ctx, *, min_side: float = 4.0) -> Detections:
    """A user filter: boxes at least ``min_side`` network px wide and high."""
    wh = dets.boxes[:, 2:] - dets.boxes[:, :2]
    return dets[(wh >= min_side).all(axis=1)]


def best_per_class(dets, ctx, *, keep: int = 2) -> Detections:
    """A user cluster step: the ``keep`` best boxes of each class."""
    order = np.lexsort((-dets.scores, dets.class_ids))
    d = dets[order]
    rank = np.arange(len(d)) - np.searchsorted(d.class_ids, d.class_ids)
    return d[rank < keep]


def stretch_to_frame(dets, ctx, *, margin: float = 0.0) -> Detections:
    """A user scale step: network px to frame px by stretching (no letterbox), plus a margin."""
    sx = ctx.frame_size[0] / ctx.network_size[0]
    sy = ctx.frame_size[1] / ctx.network_size[1]
    b = dets.boxes * np.float32([sx, sy, sx, sy]) + np.float32([-margin, -margin, margin, margin])
    return Detections(b.astype(np.float32), dets.scores, dets.class_ids, "frame")


def test_a_user_function_in_every_step_kind_exports_reloads_and_runs_live(tmp_path):
    pp = Postprocess(
        [
            {"kind": "decode", "name": peak_decoder, "params": {"score_threshold": 0.5}},
            {"kind": "filter", "name": drop_small, "params": {"min_side": 12.0}},
            {"kind": "cluster", "name": best_per_class, "params": {"keep": 1}},
            {"kind": "scale", "name": stretch_to_frame, "params": {"margin": 2.0}},
        ],
        labels=["a", "b", "c"],
        num_classes=3,
    )
    assert {s.step_kind for s in pp.param_specs().values()} >= {
        "decode",
        "filter",
        "cluster",
        "scale",
    }
    spec = pp.export(tmp_path / "all")
    names = set(json.loads(spec.read_text())["bundle"]["functions"].values())
    assert names == {"peak_decoder", "drop_small", "best_per_class", "stretch_to_frame"}
    reloaded = Postprocess.load(tmp_path / "all", trust=True)
    assert reloaded.set_params({"keep": 2}).get_param("keep") == 2  # by name, from the bundle
    live, rec = run_live(str(tmp_path / "all"), tmp_path, trust=True, unique_id=1)
    assert live.stats["error_count"] == 0
    for i in range(len(rec)):
        assert rec[i].detections.same_objects(pp(rec[i]))
        assert len(pp(rec[i])) == 2  # one box for each class with a peak
