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
    assert pyds.get_string(om.text_params.display_text).startswith(om.obj_label)
    assert all(fm.bInferDone for fm in frames)


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
    seen = []  # a downstream probe reads the vector while the batch is alive
    pipe.pad.add_probe(
        16,
        lambda pad, info, ud: seen.extend(
            read_vector_user_meta(pyds, um) for om in fm._objects[1:] for um in om._user
        ),
        None,
    )
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
    (vec,) = seen
    np.testing.assert_allclose(vec, v / np.linalg.norm(v), rtol=1e-6)
    assert pyds._gbuffers == {}  # the release callback freed the vector with the batch


def _downstream(pipe, fn):
    """A probe after the ones attached so far: ``fn(fm)`` runs on every frame while the batch lives."""
    out = []

    def probe(pad, info, ud):
        bm = pyds.gst_buffer_get_nvds_batch_meta(hash(info.get_buffer()))
        for fm in bm._frames:
            out.append(fn(fm))

    pipe.pad.add_probe(16, probe, None)
    return out


def classifier_spec():
    return Postprocess(
        [{"kind": "decode", "name": "classifier", "params": {"classifier_threshold": 0.5}}],
        labels=["red;green;blue", "sedan;truck"],
    )


def test_live_classifier_attaches_classifier_meta_to_the_object():
    """A classifier SGIE's tuned postprocess: one NvDsClassifierMeta per object with one
    NvDsLabelInfo per attribute, labels NUL-terminated even over a reused pool element."""
    from dsprobe.deepstream.meta import classifications

    pipe = pyds.Pipeline(MUX)
    sgie = pyds.GieOutput(
        2, {"color": (0, (3,)), "type": (0, (2,))}, pyds.NvDsInferNetworkInfo(224, 224, 3)
    )
    probe = attach_postprocess(pipe.pad, classifier_spec(), unique_id=2, output="classifier")
    seen = _downstream(pipe, lambda fm: [classifications(pyds, om) for om in fm._objects])
    for color, kind in (([0.1, 0.8, 0.1], [0.3, 0.7]), ([0.9, 0.05, 0.05], [0.6, 0.4])):
        fm = pipe.frame(0, 0, 0, MUX)
        car = pipe.obj((100, 100, 200, 100), label="car")
        car._user.append(
            pipe.tensor_meta(sgie, {"color": np.float32(color), "type": np.float32(kind)})
        )
        fm._objects.append(car)
        pipe.push([fm])
    assert probe.stats["error_count"] == 0 and probe.callback.classifier_metas_added == 2
    first, second = seen[0][0], seen[1][0]
    assert [(c.attribute, c.class_id, c.label, c.unique_component_id) for c in first] == [
        (0, 1, "green", 2),
        (1, 1, "truck", 2),
    ]
    # the second batch reuses the pooled label infos: "red" over "green", "sedan" over "truck"
    assert [(c.class_id, c.label) for c in second] == [(0, "red"), (0, "sedan")]
    assert second[0].confidence == pytest.approx(0.9)
    assert probe.stats["frames"] == 2 and all(len(f) == 1 for f in seen)


def test_classifier_output_on_frame_level_tensors_is_an_error_not_a_crash():
    pipe = pyds.Pipeline(MUX)
    gie = pyds.GieOutput(1, {"color": (0, (3,)), "type": (0, (2,))})
    probe = attach_postprocess(pipe.pad, classifier_spec(), unique_id=1, output="classifier")
    fm = pipe.frame(0, 0, 0, MUX)
    fm._user.append(
        pipe.tensor_meta(gie, {"color": np.float32([0, 1, 0]), "type": np.float32([1, 0])})
    )
    pipe.push([fm])
    assert probe.stats["errors"] == {"frame:ValueError": 1}


def test_recorder_keeps_nvinfers_and_the_live_classifications(tmp_path):
    """nvinfer's own classifier meta (an SGIE, gie 3) and dsprobe's live classifier (gie 2) both end
    up in the recording, per object, so replay can be compared with either."""
    pipe = pyds.Pipeline(MUX)
    sgie = pyds.GieOutput(2, {"color": (0, (3,)), "type": (0, (2,))})
    attach_postprocess(pipe.pad, classifier_spec(), unique_id=2, output="classifier")
    rec = Recorder(tmp_path / "cls.h5", images=False)
    attach_recorder(pipe.pad, rec, muxer_size=MUX)
    fm = pipe.frame(0, 0, 0, MUX)
    car, bike = (
        pipe.obj((100, 100, 200, 100), label="car"),
        pipe.obj((400, 100, 50, 50), label="bike"),
    )
    for o in (car, bike):
        o._user.append(
            pipe.tensor_meta(
                sgie, {"color": np.float32([0, 0.2, 0.8]), "type": np.float32([0.9, 0.1])}
            )
        )
    cm = pyds.nvds_acquire_classifier_meta_from_pool(None)  # what nvinfer attached for gie 3
    cm.unique_component_id = 3
    li = pyds.nvds_acquire_label_info_meta_from_pool(None)
    li.label_id, li.result_class_id, li.result_prob, li.result_label = 0, 4, 0.75, "blue\0"
    pyds.nvds_add_label_info_meta_to_classifier(cm, li)
    pyds.nvds_add_classifier_meta_to_object(bike, cm)
    fm._objects += [car, bike]
    pipe.push([fm])
    rec.close()
    f = open_recording(tmp_path / "cls.h5")[0]
    assert f.unique_id == 2
    got = {
        o.label: [(c.unique_component_id, c.class_id, c.label) for c in o.classifications]
        for o in f.objects
    }
    assert got == {
        "car": [(2, 2, "blue"), (2, 0, "sedan")],
        "bike": [(3, 4, "blue"), (2, 2, "blue"), (2, 0, "sedan")],
    }
    assert [len(d.classifications) for d in f.detection_objects] == [2, 3]
    assert f.detection_objects[1].classifications[0].confidence == pytest.approx(0.75)
