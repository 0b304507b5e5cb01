"""attach_recorder (dsprobe.deepstream) run against tests/pyds_double.py, a TEST DOUBLE (stand-in) of
pyds/Gst, because no machine here has DeepStream. The double follows docs/pyds-notes.md and
its hazards (shared layer infos, one pointer-array capsule, pitched surfaces, pool buffers overwritten
after the probe, unmap on Jetson). The recordings the probe makes are real HDF5 files written by the
real Recorder and read back with the real reader."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyds_double as pyds
import pytest

from dsprobe import Recorder, open_recording
from dsprobe.deepstream import attach_recorder
from dsprobe.deepstream.meta import DATA_TYPES, parent_indices, read_tensor_meta
from dsprobe.deepstream.surface import crop_copy, downscaled_copy, pixels_copy, subsample_step
from dsprobe.records import UNTRACKED_OBJECT_ID

MUX = (1280, 720)
CODES = {code: dt.type for code, dt in DATA_TYPES.items()}


@pytest.fixture(autouse=True)
def double():
    with pyds.installed():
        yield pyds


def random_layers(rng, gie):
    return {
        name: (rng.standard_normal(shape) * 10).astype(CODES[code])
        for name, (code, shape) in gie.layers.items()
    }


def pgie_frame(pipe, gie, rng, source_id, frame_num, batch_id, size=(1920, 1080)):
    fm = pipe.frame(source_id=source_id, frame_num=frame_num, batch_id=batch_id, size=size)
    arrays = random_layers(rng, gie)
    fm._user.append(pipe.tensor_meta(gie, arrays))
    return fm, arrays


# ----------------------------------------------------------------------------- PGIE


def test_pgie_every_dtype_multistream_copied_before_pool_reuse(tmp_path):
    rng = np.random.default_rng(0)
    pipe = pyds.Pipeline(MUX)
    gie = pyds.GieOutput(
        1,
        {
            "f32": (0, (8, 21)),
            "f16": (1, (3, 5)),
            "i8": (2, (7,)),
            "i32": (3, (2, 2)),
            "i64": (4, (3,)),
            "u8": (5, (4, 4)),
        },
        pyds.NvDsInferNetworkInfo(320, 320, 3),
    )
    rec = Recorder(tmp_path / "pgie.h5", images=True, image_max_size=320, image_format="png")
    handle = attach_recorder(pipe.pad, rec, muxer_size=MUX)
    sent = []
    for k in range(3):
        frames, arrays, imgs = [], [], {}
        for b in range(2):  # two streams in one batch
            fm, arr = pgie_frame(pipe, gie, rng, b, k, b)
            fm._objects.append(pipe.obj((10.5, 20.25, 100, 50), class_id=2, label="person"))
            frames.append(fm)
            arrays.append(arr)
            imgs[b] = rng.integers(0, 255, (MUX[1], MUX[0], 3), dtype=np.uint8)
        pipe.push(
            frames, imgs
        )  # tensors and surfaces are overwritten with 0xAB right after the probe
        sent.append((arrays, imgs))
    handle.detach()
    rec.close()
    assert handle.stats["frames_recorded"] == 6 and handle.stats["error_count"] == 0
    r = open_recording(tmp_path / "pgie.h5")
    assert len(r) == 6 and set(r.frames["source_id"]) == {0, 1}
    for k, (arrays, imgs) in enumerate(sent):
        for b in range(2):
            f = r.find(b, k)
            assert (
                f.network_size == (320, 320, 3)
                and f.frame_size == MUX
                and f.batch_id == b
                and f.unique_id == 1
            )
            assert f.pts_ns == k * 33_333_333
            for name, arr in arrays[b].items():
                assert f.tensors[name].dtype == arr.dtype and f.tensors[name].shape == arr.shape, (
                    name
                )
                np.testing.assert_array_equal(f.tensors[name], arr)
            # the strided downscale of the pitched RGBA surface: every 4th pixel, alpha dropped
            np.testing.assert_array_equal(f.image, imgs[b][::4, ::4])
            assert f.image_rect == (0.0, 0.0, 1280.0, 720.0)
            (det,) = f.detection_objects
            assert (
                det.rect == (10.5, 20.25, 100.0, 50.0)
                and det.label == "person"
                and det.class_id == 2
            )
            assert (
                det.layers == {}
                and det.parent_index == -1
                and det.parent_object_id == UNTRACKED_OBJECT_ID
            )
    probe = r.stats["probe"]  # stored through recorder.update_stats("probe", ...)
    assert probe["frames_recorded"] == 6 and probe["batches"] == 3 and probe["error_count"] == 0
    assert probe["probe_ms_mean"] > 0 and probe["probe_ms_max"] >= probe["probe_ms_p99"] > 0


def test_half_layer_is_float16_bits_not_converted(tmp_path):
    pipe = pyds.Pipeline(MUX)
    gie = pyds.GieOutput(1, {"h": (1, (6,))})
    vals = np.array(
        [0.1, -2.5, 65504.0, np.inf, 6e-8, np.nan], np.float16
    )  # max, inf, subnormal, NaN
    fm = pipe.frame(0, 0, 0, MUX)
    fm._user.append(pipe.tensor_meta(gie, {"h": vals}))
    tm = pyds.NvDsInferTensorMeta.cast(fm._user[0].user_meta_data)
    got = read_tensor_meta(pyds, tm)["h"]
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got.view(np.uint16), vals.view(np.uint16))


def test_reading_uses_the_pointer_array_not_layer_info_buffers():
    rng = np.random.default_rng(1)
    pipe = pyds.Pipeline(MUX)
    gie = pyds.GieOutput(1, {"out": (0, (4, 6))})
    a, b = rng.random((4, 6), np.float32), rng.random((4, 6), np.float32)
    um_a, um_b = pipe.tensor_meta(gie, {"out": a}), pipe.tensor_meta(gie, {"out": b})
    tm_a, tm_b = (
        pyds.NvDsInferTensorMeta.cast(um_a.user_meta_data),
        pyds.NvDsInferTensorMeta.cast(um_b.user_meta_data),
    )
    assert tm_a.output_layers_info(0).buffer is None  # only get_nvds_LayerInfo fills .buffer
    np.testing.assert_array_equal(read_tensor_meta(pyds, tm_a)["out"], a)
    np.testing.assert_array_equal(read_tensor_meta(pyds, tm_b)["out"], b)
    # nvinfer's layout: meta j of one batch points at slice j of one host buffer per layer
    assert tm_b._ptr_array[0] - tm_a._ptr_array[0] == a.nbytes


def test_old_pyds_without_infer_dims_or_network_info(tmp_path):
    rng = np.random.default_rng(7)
    pipe = pyds.Pipeline(MUX)
    gie = pyds.GieOutput(
        4, {"cls": (0, (10,)), "grid": (3, (2, 3, 4))}, network=None, infer_dims=False
    )
    assert not hasattr(gie.infos[0], "inferDims")
    rec = Recorder(tmp_path / "old.h5", images=False)
    attach_recorder(pipe.pad, rec, muxer_size=MUX)
    fm, arrays = pgie_frame(pipe, gie, rng, 0, 0, 0)
    pipe.push([fm])
    rec.close()
    f = open_recording(tmp_path / "old.h5")[0]
    assert f.network_size == (0, 0, 0) and f.unique_id == 4
    for name, arr in arrays.items():
        np.testing.assert_array_equal(f.tensors[name], arr)


def test_layer_selection_follows_the_recorder(tmp_path):
    rng = np.random.default_rng(8)
    pipe = pyds.Pipeline(MUX)
    gie = pyds.GieOutput(1, {"boxes": (0, (4, 10)), "scores": (0, (10,)), "aux": (0, (1000,))})
    rec = Recorder(tmp_path / "sel.h5", layers=["boxes", "scores"], images=False)
    handle = attach_recorder(pipe.pad, rec, muxer_size=MUX)
    assert handle.callback.layers == {"boxes", "scores"}  # the probe does not copy "aux" at all
    fm, arrays = pgie_frame(pipe, gie, rng, 0, 0, 0)
    pipe.push([fm])
    rec.close()
    f = open_recording(tmp_path / "sel.h5")[0]
    assert set(f.tensors) == {"boxes", "scores"}
    np.testing.assert_array_equal(f.tensors["boxes"], arrays["boxes"])


# ----------------------------------------------------------------------------- SGIE


def test_sgie_per_object_tensors_crops_and_parents(tmp_path):
    rng = np.random.default_rng(2)
    pipe = pyds.Pipeline(MUX)
    pgie = pyds.GieOutput(1, {"det": (0, (6, 5))}, pyds.NvDsInferNetworkInfo(640, 640, 3))
    sgie = pyds.GieOutput(
        2, {"emb": (1, (128,)), "attr": (3, (3,))}, pyds.NvDsInferNetworkInfo(112, 112, 3)
    )
    fm, pgie_arrays = pgie_frame(pipe, pgie, rng, 0, 5, 0)
    car = pipe.obj((100, 100, 200, 100), class_id=0, object_id=11, label="car")
    face = pipe.obj((130.5, 110.25, 40, 40), class_id=1, object_id=12, label="face")
    plate = pipe.obj(
        (1250, 700, 60, 40), class_id=2, object_id=13, label="plate"
    )  # crosses the frame edge
    face.parent = car
    plate.parent = car
    per_obj = {}
    for o in (face, plate):
        per_obj[o.object_id] = random_layers(rng, sgie)
        o._user.append(pipe.tensor_meta(sgie, per_obj[o.object_id]))
    fm._objects += [car, face, plate]
    img = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    rec = Recorder(tmp_path / "sgie.h5", image_format="png")
    attach_recorder(pipe.pad, rec, muxer_size=MUX, object_crops=True, image_max_size=1280)
    pipe.push([fm], {0: img})
    rec.close()
    r = open_recording(tmp_path / "sgie.h5")
    assert len(r) == 2  # one PGIE and one SGIE record for the frame
    p, s = r.find(0, 5, unique_id=1), r.find(0, 5, unique_id=2)
    np.testing.assert_array_equal(p.tensors["det"], pgie_arrays["det"])
    assert p.objects == [] and p.network_size == (640, 640, 3)
    assert s.tensors == {} and s.network_size == (112, 112, 3)
    assert [o.object_id for o in s.objects] == [12, 13]  # only the objects the SGIE inferred on
    for o in s.objects:
        assert (
            o.parent_index == 0 and o.parent_object_id == 11
        )  # the car, index in the frame's object list
        for name, arr in per_obj[o.object_id].items():
            assert o.layers[name].dtype == arr.dtype
            np.testing.assert_array_equal(o.layers[name], arr)
    face_rec, plate_rec = s.objects
    assert face_rec.rect == (130.5, 110.25, 40.0, 40.0)
    # crop = the whole pixels under the rect (floor/ceil), clipped to the frame; rect = what it covers
    assert face_rec.image.rect == (130.0, 110.0, 41.0, 41.0)
    assert face_rec.image.encoding == "png" and len(face_rec.image.data) > 0
    assert plate_rec.image.rect == (1250.0, 700.0, 30.0, 20.0)
    assert [d.label for d in s.detection_objects] == ["car", "face", "plate"]
    assert [d.parent_index for d in s.detection_objects] == [-1, 0, 0]
    assert r.layers["emb"].per_object and not r.layers["det"].per_object


def test_crop_pixels_match_the_frame(tmp_path):
    rng = np.random.default_rng(9)
    pipe = pyds.Pipeline(MUX)
    sgie = pyds.GieOutput(2, {"emb": (0, (4,))})
    fm = pipe.frame(0, 0, 0, MUX)
    o = pipe.obj((300.7, 200.2, 50.6, 30.1))
    o._user.append(pipe.tensor_meta(sgie, {"emb": np.ones(4, np.float32)}))
    fm._objects.append(o)
    img = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    rec = Recorder(tmp_path / "crop.h5", image_format="raw")
    attach_recorder(
        pipe.pad, rec, muxer_size=MUX, images=False, object_crops=True, image_max_size=0
    )
    pipe.push([fm], {0: img})
    rec.close()
    f = open_recording(tmp_path / "crop.h5")[0]
    assert f.image is None  # no full frame asked for
    (obj,) = f.objects
    np.testing.assert_array_equal(obj.image.data, img[200:231, 300:352])
    assert obj.image.rect == (300.0, 200.0, 52.0, 31.0)


# ----------------------------------------------------------------------------- GIE filter and rate limits


def test_unique_id_filter_and_every_n(tmp_path):
    rng = np.random.default_rng(3)
    pipe = pyds.Pipeline(MUX)
    g1, g2 = pyds.GieOutput(1, {"a": (0, (3,))}), pyds.GieOutput(3, {"b": (0, (2,))})
    rec = Recorder(tmp_path / "rate.h5", every_n=2)
    handle = attach_recorder(pipe.pad, rec, muxer_size=MUX, unique_ids=[3], images=False)
    for k in range(6):
        fm = pipe.frame(0, k, 0, MUX)
        fm._user += [
            pipe.tensor_meta(g1, {"a": rng.random(3)}),
            pipe.tensor_meta(g2, {"b": rng.random(2)}),
        ]
        pipe.push([fm])
    rec.close()
    r = open_recording(tmp_path / "rate.h5")
    assert list(r.frames["frame_num"]) == [0, 2, 4] and set(r.frames["unique_id"]) == {3}
    assert list(r.layers) == ["b"]
    assert handle.stats["frames_skipped"] == 3 and handle.stats["tensor_metas"] == 3
    assert rec.stats["dropped_rate_limited"] == 3


def test_skipped_frames_copy_nothing(tmp_path):
    """Frames the rate limit drops are never read: their tensor meta is corrupt (an unknown data type
    that would raise when read) and their surfaces are never mapped."""
    rng = np.random.default_rng(4)
    pipe = pyds.Pipeline(MUX)
    rec = Recorder(tmp_path / "skip.h5", max_fps=10)  # 30 fps streams -> every 3rd frame by PTS
    handle = attach_recorder(pipe.pad, rec, muxer_size=MUX, jetson=True)
    for k in range(9):
        frames, imgs = [], {}
        for b in range(2):
            gie = pyds.GieOutput(1, {"x": (0, (5,))})
            fm = pipe.frame(b, k, b, MUX, pts=k * 33_333_334)
            fm._user.append(pipe.tensor_meta(gie, {"x": rng.random(5)}))
            if k % 3:
                gie.infos[0].dataType = 9
            frames.append(fm)
            imgs[b] = rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8)
        pipe.push(frames, imgs)
    rec.close()
    assert handle.stats["error_count"] == 0 and handle.stats["frames_skipped"] == 12
    assert pyds.maps["map"] == pyds.maps["unmap"] == 6  # one per recorded frame
    r = open_recording(tmp_path / "skip.h5")
    assert sorted(r.frames["frame_num"]) == [0, 0, 3, 3, 6, 6] and r.frames["has_image"].all()


def test_multistream_batch_with_two_gies(tmp_path):
    rng = np.random.default_rng(10)
    pipe = pyds.Pipeline(MUX)
    a, b = pyds.GieOutput(1, {"x": (0, (2, 3))}), pyds.GieOutput(7, {"x": (2, (4,))})
    rec = Recorder(tmp_path / "two.h5", images=False)
    attach_recorder(pipe.pad, rec, muxer_size=MUX)
    sent = {}
    for k in range(2):
        frames = []
        for src in range(4):
            fm = pipe.frame(src, k, src, MUX)
            for gie in (a, b):
                arr = random_layers(rng, gie)
                fm._user.append(pipe.tensor_meta(gie, arr))
                sent[(src, k, gie.unique_id)] = arr["x"]
            frames.append(fm)
        pipe.push(frames)
    rec.close()
    r = open_recording(tmp_path / "two.h5")
    assert len(r) == 16 and r.unique_ids == [1, 7]
    for (src, k, uid), arr in sent.items():
        got = r.find(src, k, unique_id=uid).tensors["x"]
        assert got.dtype == arr.dtype
        np.testing.assert_array_equal(got, arr)


# ----------------------------------------------------------------------------- images and surfaces


def test_wrong_surface_format_warns_once_and_keeps_tensors(tmp_path, caplog):
    rng = np.random.default_rng(4)
    pipe = pyds.Pipeline(MUX)
    gie = pyds.GieOutput(1, {"x": (0, (2,))})
    pyds.surface_format = "NV12"
    rec = Recorder(tmp_path / "nv12.h5")
    with caplog.at_level(logging.WARNING, logger="dsprobe.deepstream"):
        handle = attach_recorder(pipe.pad, rec, muxer_size=MUX, object_crops=True)
        for k in range(3):
            fm = pipe.frame(0, k, 0, MUX)
            fm._user.append(pipe.tensor_meta(gie, {"x": rng.random(2)}))
            pipe.push([fm], {0: np.zeros((720, 1280, 3), np.uint8)})
    rec.close()
    msgs = [m for m in caplog.messages if "format=RGBA" in m]
    assert len(msgs) == 1 and "nvvideoconvert" in msgs[0] and "NV12" in msgs[0]
    r = open_recording(tmp_path / "nv12.h5")
    assert len(r) == 3 and not r.frames["has_image"].any()
    assert handle.stats["error_count"] == 0 and handle.stats["warnings"] == ["surface-format"]


def test_jetson_copies_before_unmap_and_unmaps_every_surface(tmp_path):
    rng = np.random.default_rng(5)
    pipe = pyds.Pipeline(MUX, jetson=True)  # surface-array memory: mapped by pyds, must be unmapped
    gie = pyds.GieOutput(1, {"x": (0, (2,))})
    sgie = pyds.GieOutput(2, {"y": (0, (2,))})
    rec = Recorder(tmp_path / "j.h5", image_format="raw", image_max_size=640)
    attach_recorder(
        pipe.pad, rec, jetson=True, object_crops=True
    )  # muxer size read from the surface
    imgs = []
    for k in range(2):
        fm = pipe.frame(0, k, 0, (1920, 1080))
        fm._user.append(pipe.tensor_meta(gie, {"x": np.ones(2)}))
        o = pipe.obj((64, 32, 128, 64))
        o._user.append(pipe.tensor_meta(sgie, {"y": np.ones(2)}))
        fm._objects.append(o)
        imgs.append(rng.integers(0, 255, (720, 1280, 3), dtype=np.uint8))
        pipe.push([fm], {0: imgs[-1]})
    rec.close()
    assert (
        pyds.maps["map"] == pyds.maps["unmap"] == 2
    )  # one map per frame, shared by both GIEs' records
    assert pyds.mapped_surfaces() == 0
    r = open_recording(tmp_path / "j.h5")
    for k in range(2):
        p, s = r.find(0, k, unique_id=1), r.find(0, k, unique_id=2)
        assert p.frame_size == (1280, 720)
        np.testing.assert_array_equal(p.image, imgs[k][::2, ::2])  # unmapping would have left 0xCD
        np.testing.assert_array_equal(s.objects[0].image.data, imgs[k][32:96, 64:192])


def test_muxer_size_unknown_uses_source_size_with_warning(tmp_path, caplog):
    pipe = pyds.Pipeline(MUX, graph=False)
    gie = pyds.GieOutput(1, {"x": (0, (2,))})
    pyds.surface_format = "NV12"
    rec = Recorder(tmp_path / "m.h5", images=False)
    with caplog.at_level(logging.WARNING, logger="dsprobe.deepstream"):
        attach_recorder(pipe.pad, rec)
        for k in range(2):
            fm = pipe.frame(0, k, 0, (1920, 1080))
            fm._user.append(pipe.tensor_meta(gie, {"x": np.ones(2)}))
            pipe.push([fm], {0: np.zeros((720, 1280, 3), np.uint8)})
    rec.close()
    assert sum("muxer_size=(width, height)" in m for m in caplog.messages) == 1
    assert pyds.maps["map"] == 0  # the refused surface is not asked for again
    assert open_recording(tmp_path / "m.h5")[0].frame_size == (1920, 1080)


def test_surface_helpers_on_a_pitched_view():
    rng = np.random.default_rng(6)
    h, w, pitch = 90, 160, 160 * 4 + 32
    store = rng.integers(0, 255, h * pitch, dtype=np.uint8)
    view = np.lib.stride_tricks.as_strided(store, shape=(h, w, 4), strides=(pitch, 4, 1))
    assert not view.flags.c_contiguous
    small = downscaled_copy(view, 64)
    assert subsample_step(h, w, 64) == 3 and small.shape == (30, 54, 4) and small.flags.c_contiguous
    np.testing.assert_array_equal(small, view[::3, ::3])
    assert not np.shares_memory(small, store)
    rgb = pixels_copy(np.ascontiguousarray(view[:, :, :3])[::2, ::2])  # an RGB surface
    np.testing.assert_array_equal(rgb, view[::2, ::2, :3])
    # surface at half the muxer size: a (20, 10, 40, 30) rect in 320x180 frame pixels is (10, 5, 20, 15) here
    pixels, rect = crop_copy(view, (20, 10, 40, 30), (320, 180), 0)
    np.testing.assert_array_equal(pixels, view[5:20, 10:30])
    assert rect == (20.0, 10.0, 40.0, 30.0)
    assert crop_copy(view, (400, 10, 40, 30), (320, 180), 0) is None  # outside the frame
    pixels, _ = crop_copy(view, (0, 0, 320, 180), (320, 180), 40)
    assert max(pixels.shape[:2]) <= 40


# ----------------------------------------------------------------------------- missing meta and errors


def test_missing_tensor_meta_warns_once_with_the_fix(tmp_path, caplog):
    pipe = pyds.Pipeline(MUX)
    rec = Recorder(tmp_path / "none.h5")
    with caplog.at_level(logging.WARNING, logger="dsprobe.deepstream"):
        handle = attach_recorder(pipe.pad, rec, muxer_size=MUX, images=False)
        for k in range(40):
            pipe.push([pipe.frame(0, k, 0, MUX)])
    rec.close()
    msgs = [m for m in caplog.messages if "output-tensor-meta=1" in m]
    assert len(msgs) == 1 and "obj_user_meta_list" in msgs[0]
    assert handle.stats["warnings"] == ["no-tensor-meta"]
    assert len(open_recording(tmp_path / "none.h5")) == 0


def test_tensor_meta_only_from_other_gies_names_them(tmp_path, caplog):
    pipe = pyds.Pipeline(MUX)
    gie = pyds.GieOutput(1, {"x": (0, (2,))})
    rec = Recorder(tmp_path / "other.h5", images=False)
    with caplog.at_level(logging.WARNING, logger="dsprobe.deepstream"):
        attach_recorder(
            pipe.pad, rec, muxer_size=MUX, unique_ids=[2]
        )  # e.g. the SGIE, probed before it ran
        for k in range(30):
            fm = pipe.frame(0, k, 0, MUX)
            fm._user.append(pipe.tensor_meta(gie, {"x": np.ones(2)}))
            pipe.push([fm])
    rec.close()
    (msg,) = [m for m in caplog.messages if "tensor meta" in m]
    assert "unique_ids=[2]" in msg and "gie-unique-id [1]" in msg


def test_probe_errors_are_counted_stored_and_never_raised(tmp_path, caplog):
    pipe = pyds.Pipeline(MUX)
    rec = Recorder(tmp_path / "err.h5")
    handle = attach_recorder(pipe.pad, rec, muxer_size=MUX, images=False)
    good_gie = pyds.GieOutput(3, {"y": (0, (2,))})

    def frame_with_bad_layer(k):
        """A layer with a data type no DeepStream defines, beside a good GIE 3 on the same frame."""
        fm = pipe.frame(0, k, 0, MUX)
        um = pipe.tensor_meta(pyds.GieOutput(1, {"x": (0, (2,))}), {"x": np.ones(2)})
        pyds.NvDsInferTensorMeta.cast(um.user_meta_data)._infos[0].dataType = 9
        fm._user += [um, pipe.tensor_meta(good_gie, {"y": np.full(2, k, np.float32)})]
        return fm

    # a user meta list node pointing nowhere (cast raises inside the walk)
    bad = pipe.frame(0, 2, 0, MUX)
    bad._user.append(
        pyds.NvDsUserMeta(
            pyds.NvDsMetaType.NVDSINFER_TENSOR_OUTPUT_META, pyds.Capsule(None, 0xDEAD0)
        )
    )
    with caplog.at_level(logging.ERROR, logger="dsprobe.deepstream"):
        results = pipe.pad.push(pyds.Buffer())  # no batch meta at all
        pipe.push([frame_with_bad_layer(0)])
        pipe.push([frame_with_bad_layer(1)])
        pipe.push([bad])
    handle.detach()
    rec.close()
    assert results == [pyds.Gst.PadProbeReturn.OK]
    errors = handle.stats["errors"]
    assert (
        errors == {"frame:MetaError": 2, "frame:ValueError": 1} and handle.stats["error_count"] == 3
    )
    assert sum("MetaError" in m for m in caplog.messages) == 1  # logged once per kind
    assert "layer 'x'" in next(m for m in caplog.messages if "MetaError" in m)
    r = open_recording(tmp_path / "err.h5")
    assert r.stats["probe"]["errors"] == errors
    # GIE 1's bad layer cost only GIE 1's records: GIE 3's of the same frames are there
    assert list(r.frames["unique_id"]) == [3, 3]
    np.testing.assert_array_equal(r.find(0, 1, unique_id=3).tensors["y"], [1, 1])
    assert pipe.pad.probes == {}  # detached


def test_attach_to_an_element_probes_its_src_pad(tmp_path):
    pgie = pyds.Element("pgie")
    rec = Recorder(tmp_path / "el.h5", images=False)
    handle = attach_recorder(pgie, rec, muxer_size=MUX)
    assert handle.pad is pgie.src and list(pgie.src.probes) == [handle.probe_id]
    fm = pyds.Pipeline.frame(0, 0, 0, MUX)
    pipe = pyds.Pipeline(MUX)
    pipe.pad = pgie.src
    fm._user.append(pipe.tensor_meta(pyds.GieOutput(1, {"x": (0, (2,))}), {"x": np.arange(2.0)}))
    pipe.push([fm])
    rec.close()
    np.testing.assert_array_equal(open_recording(tmp_path / "el.h5")[0].tensors["x"], [0.0, 1.0])
    with pytest.raises(ValueError, match="no static 'src' pad"):
        attach_recorder(
            type("Sink", (), {"get_static_pad": lambda s, n: None, "get_name": lambda s: "sink"})(),
            rec,
        )


def test_parent_indices_by_address():
    objs = [pyds.Pipeline.obj((0, 0, 1, 1), object_id=i) for i in range(3)]
    objs[2].parent = objs[0]
    stray = pyds.Pipeline.obj((0, 0, 1, 1))
    objs[1].parent = stray  # parent not on this frame
    assert parent_indices(pyds, objs) == [-1, -1, 0]


def test_example_app_cli():
    """examples/deepstream_record.py imports and parses its flags here (its pipeline needs DeepStream)."""
    script = Path(__file__).resolve().parents[1] / "examples" / "deepstream_record.py"
    out = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in (
        "--pgie",
        "--sgie",
        "--output",
        "--muxer",
        "--every-n",
        "--max-fps",
        "--image-size",
        "--crops",
        "--unique-ids",
        "--duration",
        "--display",
    ):
        assert flag in out, flag
