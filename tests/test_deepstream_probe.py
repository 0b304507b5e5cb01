"""The DeepStream probes, run against tests/pyds_double.py — a TEST DOUBLE (stand-in) of pyds/Gst,
because no machine here has DeepStream. Recordings the probe makes are read back with the real reader."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import pyds_double as pyds
from dsprobe import Postprocess, Recorder, open_recording
from dsprobe.deepstream import attach_postprocess, attach_recorder, bindings, read_vector_user_meta
from dsprobe.deepstream.meta import read_tensor_meta
from dsprobe.types import UNTRACKED_OBJECT_ID

MUX = (1280, 720)


@pytest.fixture(autouse=True)
def double():
    pyds.reset()
    bindings.use_bindings(pyds, pyds.Gst)
    yield pyds
    bindings.use_bindings(None, None)


def yolo_like(rng, nc=4, n=2100):
    a = np.zeros((4 + nc, n), np.float32)
    a[:4] = rng.uniform(10, 300, (4, n))
    a[4:] = rng.uniform(0, 0.05, (nc, n))
    a[4, :3] = 0.95
    return a


def pgie_batch(pipe, gie, rng, n_frames=2, frame_num=0, images=True):
    frames, arrays, imgs = [], [], {}
    for b in range(n_frames):
        fm = pipe.frame(source_id=b, frame_num=frame_num, batch_id=b, size=(1920, 1080))
        arr = {name: (rng.standard_normal(shape) * 10).astype({0: np.float32, 1: np.float16, 2: np.int8, 3: np.int32,
                                                               4: np.int64, 5: np.uint8}[code])
               for name, (code, shape) in gie.layers.items()}
        fm._user.append(pipe.tensor_meta(gie, arr))
        fm._objects.append(pipe.obj((10.5, 20.25, 100, 50), class_id=2, label="person"))
        frames.append(fm)
        arrays.append(arr)
        if images:
            imgs[b] = rng.integers(0, 255, (MUX[1], MUX[0], 3), dtype=np.uint8)
    return frames, arrays, imgs


def test_pgie_every_dtype_multistream_copied_before_pool_reuse(tmp_path):
    rng = np.random.default_rng(0)
    pipe = pyds.Pipeline(MUX)
    gie = pyds.GieOutput(1, {"f32": (0, (8, 21)), "f16": (1, (3, 5)), "i8": (2, (7,)), "i32": (3, (2, 2)),
                             "i64": (4, (3,)), "u8": (5, (4, 4))}, pyds.NvDsInferNetworkInfo(320, 320, 3))
    rec = Recorder(tmp_path / "pgie.h5", images=True, image_max_size=320, image_format="png")
    handle = attach_recorder(pipe.pad, rec, muxer_size=MUX)
    sent = []
    for k in range(3):
        frames, arrays, imgs = pgie_batch(pipe, gie, rng, frame_num=k)
        pipe.push(frames, imgs)  # buffers are overwritten with 0xAB right after the probe
        sent.append((arrays, imgs))
    rec.close()
    assert handle.stats["frames_recorded"] == 6 and handle.stats["error_count"] == 0
    r = open_recording(tmp_path / "pgie.h5")
    assert len(r) == 6 and set(r.frames["source_id"]) == {0, 1}
    for k, (arrays, imgs) in enumerate(sent):
        for b in range(2):
            f = r.find(b, k)
            assert f.network_size == (320, 320, 3) and f.frame_size == MUX and f.batch_id == b
            for name, arr in arrays[b].items():
                assert f.tensors[name].dtype == arr.dtype, name
                np.testing.assert_array_equal(f.tensors[name], arr)
            # the strided downscale of the pitched RGBA surface: every 4th pixel, alpha dropped
            np.testing.assert_array_equal(f.image, imgs[b][::4, ::4])
            (det,) = f.detection_objects
            assert det.rect == (10.5, 20.25, 100.0, 50.0) and det.label == "person" and det.class_id == 2


def test_reading_does_not_touch_shared_layer_info(tmp_path):
    rng = np.random.default_rng(1)
    pipe = pyds.Pipeline(MUX)
    gie = pyds.GieOutput(1, {"out": (0, (4, 6))})
    a, b = rng.random((4, 6), np.float32), rng.random((4, 6), np.float32)
    um_a, um_b = pipe.tensor_meta(gie, {"out": a}), pipe.tensor_meta(gie, {"out": b})
    tm_a, tm_b = pyds.NvDsInferTensorMeta.cast(um_a.user_meta_data), pyds.NvDsInferTensorMeta.cast(um_b.user_meta_data)
    pyds.get_nvds_LayerInfo(tm_b, 0)  # another frame's call points the SHARED info at b's buffer
    assert tm_a.output_layers_info(0) is tm_b.output_layers_info(0)
    np.testing.assert_array_equal(read_tensor_meta(pyds, tm_a)["out"], a)
    np.testing.assert_array_equal(read_tensor_meta(pyds, tm_b)["out"], b)


def test_sgie_per_object_tensors_and_crops(tmp_path):
    rng = np.random.default_rng(2)
    pipe = pyds.Pipeline(MUX)
    sgie = pyds.GieOutput(2, {"emb": (1, (128,))}, pyds.NvDsInferNetworkInfo(112, 112, 3))
    fm = pipe.frame(0, 5, 0, (1920, 1080))
    car = pipe.obj((100, 100, 200, 100), class_id=0, object_id=11, label="car")
    face = pipe.obj((130.5, 110.25, 40, 40), class_id=1, object_id=12, label="face")
    face.parent = car
    vec = rng.standard_normal(128).astype(np.float16)
    face._user.append(pipe.tensor_meta(sgie, {"emb": vec}))
    fm._objects += [car, face]
    rec = Recorder(tmp_path / "sgie.h5", image_format="png")
    attach_recorder(pipe.pad, rec, muxer_size=MUX, object_crops=True, image_max_size=1280)
    pipe.push([fm], {0: rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)})
    rec.close()
    r = open_recording(tmp_path / "sgie.h5")
    f = r[0]
    assert f.unique_id == 2 and f.tensors == {} and f.network_size == (112, 112, 3)
    (obj,) = f.objects
    assert obj.rect == (130.5, 110.25, 40.0, 40.0) and obj.object_id == 12 and obj.parent_object_id == 11
    assert obj.parent_index == 0
    np.testing.assert_array_equal(obj.layers["emb"], vec)
    assert obj.image is not None and obj.image.encoding == "png"
    assert [d.label for d in f.detection_objects] == ["car", "face"]
    assert r.layers["emb"].per_object


def test_unique_id_filter_and_rate_limit(tmp_path):
    rng = np.random.default_rng(3)
    pipe = pyds.Pipeline(MUX)
    g1, g2 = pyds.GieOutput(1, {"a": (0, (3,))}), pyds.GieOutput(3, {"b": (0, (2,))})
    rec = Recorder(tmp_path / "rate.h5", every_n=2)
    handle = attach_recorder(pipe.pad, rec, muxer_size=MUX, unique_ids=[3], images=False)
    for k in range(6):
        fm = pipe.frame(0, k, 0, MUX)
        fm._user += [pipe.tensor_meta(g1, {"a": rng.random(3)}), pipe.tensor_meta(g2, {"b": rng.random(2)})]
        pipe.push([fm])
    rec.close()
    r = open_recording(tmp_path / "rate.h5")
    assert list(r.frames["frame_num"]) == [0, 2, 4] and set(r.frames["unique_id"]) == {3}
    assert list(r.layers) == ["b"]
    assert handle.stats["frames_skipped"] == 3


def test_wrong_surface_format_warns_once_and_keeps_tensors(tmp_path, caplog):
    rng = np.random.default_rng(4)
    pipe = pyds.Pipeline(MUX)
    gie = pyds.GieOutput(1, {"x": (0, (2,))})
    pyds.surface_format = "NV12"
    rec = Recorder(tmp_path / "nv12.h5")
    with caplog.at_level(logging.WARNING, logger="dsprobe.deepstream"):
        handle = attach_recorder(pipe.pad, rec, muxer_size=MUX)
        for k in range(3):
            fm = pipe.frame(0, k, 0, MUX)
            fm._user.append(pipe.tensor_meta(gie, {"x": rng.random(2)}))
            pipe.push([fm], {0: np.zeros((720, 1280, 3), np.uint8)})
    rec.close()
    msgs = [m for m in caplog.messages if "format=RGBA" in m]
    assert len(msgs) == 1 and "nvvideoconvert" in msgs[0]
    r = open_recording(tmp_path / "nv12.h5")
    assert len(r) == 3 and not r.frames["has_image"].any()
    assert handle.stats["error_count"] == 0


def test_jetson_unmaps_every_surface(tmp_path):
    pipe = pyds.Pipeline(MUX)
    gie = pyds.GieOutput(1, {"x": (0, (2,))})
    rec = Recorder(tmp_path / "j.h5")
    attach_recorder(pipe.pad, rec, jetson=True)  # muxer size read from the surface
    for k in range(2):
        fm = pipe.frame(0, k, 0, (1920, 1080))
        fm._user.append(pipe.tensor_meta(gie, {"x": np.ones(2)}))
        pipe.push([fm], {0: np.zeros((720, 1280, 3), np.uint8)})
    rec.close()
    assert pyds.maps["map"] == pyds.maps["unmap"] > 0
    assert open_recording(tmp_path / "j.h5")[0].frame_size == (1280, 720)


def test_missing_tensor_meta_warns_with_the_fix(tmp_path, caplog):
    pipe = pyds.Pipeline(MUX)
    rec = Recorder(tmp_path / "none.h5")
    with caplog.at_level(logging.WARNING, logger="dsprobe.deepstream"):
        attach_recorder(pipe.pad, rec, muxer_size=MUX, images=False)
        for k in range(31):
            pipe.push([pipe.frame(0, k, 0, MUX)])
    rec.close()
    assert sum("output-tensor-meta=1" in m for m in caplog.messages) == 1
    assert len(open_recording(tmp_path / "none.h5")) == 0


def test_probe_exception_is_counted_not_raised(tmp_path):
    pipe = pyds.Pipeline(MUX)
    gie = pyds.GieOutput(1, {"x": (0, (2,))})
    rec = Recorder(tmp_path / "err.h5")
    handle = attach_recorder(pipe.pad, rec, muxer_size=MUX, images=False)
    fm = pipe.frame(0, 0, 0, MUX)
    um = pipe.tensor_meta(gie, {"x": np.ones(2)})
    pyds.NvDsInferTensorMeta.cast(um.user_meta_data)._infos[0].dataType = 9  # unknown data type
    fm._user.append(um)
    results = pipe.pad.push(pyds.Buffer())  # no batch meta at all
    pipe.push([fm])
    good = pipe.frame(0, 1, 0, MUX)
    good._user.append(pipe.tensor_meta(pyds.GieOutput(1, {"x": (0, (2,))}), {"x": np.ones(2)}))
    pipe.push([good])
    rec.close()
    assert results == [pyds.Gst.PadProbeReturn.OK]
    assert handle.stats["error_count"] == 1 and "MetaError" in str(handle.stats["errors"])
    assert len(open_recording(tmp_path / "err.h5")) == 1


def test_live_postprocess_adds_object_meta_identical_to_replay(tmp_path):
    rng = np.random.default_rng(5)
    pipe = pyds.Pipeline(MUX)
    gie = pyds.GieOutput(1, {"output0": (0, (8, 2100))}, pyds.NvDsInferNetworkInfo(320, 320, 3))
    from dsprobe.nvinfer_config import load_nvinfer_config
    from dsprobe.sample import CONFIG_PATH
    pp = Postprocess.from_nvinfer_config(load_nvinfer_config(CONFIG_PATH))
    spec = pp.save(tmp_path / "spec.json")
    rec = Recorder(tmp_path / "live.h5", images=False)
    live = attach_postprocess(pipe.pad, str(spec), muxer_size=MUX, component_id=1)
    attach_recorder(pipe.pad, rec, muxer_size=MUX, images=False)   # records tensors + the objects just added
    frames = []
    for k in range(4):
        fm = pipe.frame(0, k, 0, MUX)
        fm._user.append(pipe.tensor_meta(gie, {"output0": yolo_like(rng)}))
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
        np.testing.assert_array_equal(f.detection_objects and np.array([o.rect for o in f.detection_objects],
                                                                       np.float32), replay.to_rects())
        assert got.same_objects(replay)
    om = frames[0]._objects[0]
    assert om.object_id == UNTRACKED_OBJECT_ID and om.unique_component_id == 1
    assert om.obj_label in pp.labels and om.parent is None
    assert om.text_params.display_text.startswith(om.obj_label)


def test_live_sgie_detections_get_parent_and_vectors(tmp_path):
    pipe = pyds.Pipeline(MUX)
    gie = pyds.GieOutput(2, {"emb": (0, (16,))}, pyds.NvDsInferNetworkInfo(64, 64, 3))
    pp = Postprocess([{"kind": "decode", "name": "embedding", "params": {}},
                      {"kind": "scale", "name": "nvinfer", "params": {}}])
    probe = attach_postprocess(pipe.pad, pp, muxer_size=MUX, vectors=True, component_id=5)
    fm = pipe.frame(0, 0, 0, MUX)
    parent = pipe.obj((100.5, 50.5, 64, 64))
    v = np.arange(16, dtype=np.float32)
    parent._user.append(pipe.tensor_meta(gie, {"emb": v}))
    fm._objects.append(parent)
    pipe.push([fm])
    assert probe.stats["error_count"] == 0
    added = fm._objects[1]
    assert added.parent is parent and added.unique_component_id == 5
    # box = whole crop mapped back: even-rounded crop, unrounded parent offset added
    assert (added.rect_params.left, added.rect_params.top) == (100.5, 50.5)
    (um,) = added._user
    np.testing.assert_allclose(read_vector_user_meta(pyds, um), v / np.linalg.norm(v), rtol=1e-6)
