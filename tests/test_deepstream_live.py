"""attach_postprocess (dsprobe.deepstream.live) run against tests/pyds_double.py, a TEST DOUBLE
(stand-in) of pyds/Gst, because no machine here has DeepStream: the objects it adds to the frames
equal the notebook's replay of the same tensors with the same spec."""

from __future__ import annotations

import numpy as np
import pyds_double as pyds
import pytest

from dsprobe import Postprocess, Recorder, open_recording
from dsprobe.deepstream import attach_postprocess, attach_recorder, read_vector_user_meta
from dsprobe.records import UNTRACKED_OBJECT_ID

MUX = (1280, 720)


@pytest.fixture(autouse=True)
def double():
    with pyds.installed():
        yield pyds


def yolo_like(rng, nc=4, n=2100, net=320):
    """A YOLOv8-style (4 + nc, n) output: cx, cy, w, h in network pixels (boxes well inside the
    network input, so nvinfer's edge checks keep them), class scores; three confident candidates."""
    a = np.zeros((4 + nc, n), np.float32)
    a[:2] = rng.uniform(0.25 * net, 0.75 * net, (2, n))
    a[2:4] = rng.uniform(8, 0.2 * net, (2, n))
    a[4:] = rng.uniform(0, 0.05, (nc, n))
    a[4, :3] = 0.95
    return a


def test_live_postprocess_adds_object_meta_identical_to_replay(tmp_path):
    from dsprobe.nvinfer.config import load_nvinfer_config
    from dsprobe.sample import CONFIG_PATH

    cfg = load_nvinfer_config(CONFIG_PATH)
    nc, (nw, nh) = cfg.num_detected_classes, cfg.preprocessing.network_size
    rng = np.random.default_rng(5)
    pipe = pyds.Pipeline(MUX)
    gie = pyds.GieOutput(1, {"output0": (0, (4 + nc, 2100))}, pyds.NvDsInferNetworkInfo(nw, nh, 3))
    pp = Postprocess.from_nvinfer_config(cfg)
    spec = pp.save(tmp_path / "spec.json")
    rec = Recorder(tmp_path / "live.h5", images=False)
    live = attach_postprocess(pipe.pad, str(spec), muxer_size=MUX, component_id=1)
    attach_recorder(
        pipe.pad, rec, muxer_size=MUX, images=False
    )  # records tensors + the objects just added
    frames = []
    for k in range(4):
        fm = pipe.frame(0, k, 0, MUX)
        fm._user.append(pipe.tensor_meta(gie, {"output0": yolo_like(rng, nc, net=min(nw, nh))}))
        pipe.push([fm])
        frames.append(fm)
    rec.close()
    assert live.stats["error_count"] == 0
    r = open_recording(tmp_path / "live.h5")
    for i in range(len(r)):
        f = r[i]
        replay = pp(f)
        got = f.detections
        assert len(got) == len(replay) > 0
        np.testing.assert_array_equal(
            f.detection_objects and np.array([o.rect for o in f.detection_objects], np.float32),
            replay.to_rects(),
        )
        assert got.same_objects(replay)
    om = frames[0]._objects[0]
    assert om.object_id == UNTRACKED_OBJECT_ID and om.unique_component_id == 1
    assert om.obj_label in pp.labels and om.parent is None
    assert om.text_params.display_text.startswith(om.obj_label)


def test_live_sgie_detections_get_parent_and_vectors(tmp_path):
    pipe = pyds.Pipeline(MUX)
    gie = pyds.GieOutput(2, {"emb": (0, (16,))}, pyds.NvDsInferNetworkInfo(64, 64, 3))
    pp = Postprocess(
        [
            {"kind": "decode", "name": "embedding", "params": {}},
            {"kind": "scale", "name": "nvinfer", "params": {}},
        ]
    )
    probe = attach_postprocess(pipe.pad, pp, muxer_size=MUX, vectors=True, component_id=5)
    fm = pipe.frame(0, 0, 0, MUX)
    parent = pipe.obj((100.5, 50.5, 64, 64))
    v = np.arange(16, dtype=np.float32)
    parent._user.append(pipe.tensor_meta(gie, {"emb": v}))
    fm._objects.append(parent)
    buf = pipe.push([fm])
    assert probe.stats["error_count"] == 0
    bm = pyds.gst_buffer_get_nvds_batch_meta(hash(buf))
    assert bm.lock_count == 1 and bm.locked == 0  # meta lock held while adding, then released
    added = fm._objects[1]
    assert added.parent is parent and added.unique_component_id == 5
    # box = whole crop mapped back: even-rounded crop, unrounded parent offset added
    assert (added.rect_params.left, added.rect_params.top) == (100.5, 50.5)
    (um,) = added._user
    np.testing.assert_allclose(read_vector_user_meta(pyds, um), v / np.linalg.norm(v), rtol=1e-6)
