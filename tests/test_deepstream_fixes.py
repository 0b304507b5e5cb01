"""Each finding of the pyds audit (docs/deepstream-audit.md) that made the DeepStream adapter fail or
lie on a real device, reproduced with tests/pyds_double.py (a TEST DOUBLE of pyds that fails where
pyds does: segfaults and aborts are BaseExceptions no probe can catch)."""

from __future__ import annotations

import logging
import platform

import numpy as np
import pyds_double as pyds
import pytest

from dsprobe import Postprocess, Recorder, open_recording
from dsprobe.deepstream import attach_postprocess, attach_recorder

MUX = (1280, 720)


@pytest.fixture(autouse=True)
def double():
    with pyds.installed():
        yield pyds


def frame_with(pipe, gie, arrays, source_id=0, frame_num=0, batch_id=0, size=MUX):
    fm = pipe.frame(source_id, frame_num, batch_id, size)
    fm._user.append(pipe.tensor_meta(gie, arrays))
    return fm


def boxes_output(n_boxes, class_id, net=320, nc=2, n=50):
    """A YOLOv8-style (4 + nc, n) output with ``n_boxes`` confident boxes of ``class_id``."""
    a = np.zeros((4 + nc, n), np.float32)
    a[0] = np.linspace(60, 260, n)
    a[1] = 160
    a[2:4] = 40
    a[4 + class_id, :n_boxes] = 0.9
    return a


def detector(labels=("motorbike", "car")):
    return Postprocess(
        [
            {"kind": "decode", "name": "yolov8", "params": {}},
            {"kind": "cluster", "name": "nms", "params": {"iou_threshold": 0.5}},
            {"kind": "scale", "name": "nvinfer", "params": {}},
        ],
        labels=list(labels),
    )


GIE = pyds.GieOutput(1, {"output0": (0, (6, 50))}, pyds.NvDsInferNetworkInfo(320, 320, 3))


# ----------------------------------------------------------------------------- frame pixels
def test_device_memory_surfaces_are_never_read(tmp_path, caplog):
    """dGPU, nvbuf-memory-type=2 (CUDA device): pyds hands numpy a device pointer; reading it would
    be a segfault. The probe sees the converter's memory type and records tensors without images."""
    pipe = pyds.Pipeline(MUX, memory_type=2)
    rec = Recorder(tmp_path / "dev.h5")
    with caplog.at_level(logging.WARNING, logger="dsprobe.deepstream"):
        handle = attach_recorder(pipe.pad, rec, muxer_size=MUX, jetson=False, object_crops=True)
        pipe.push(
            [frame_with(pipe, GIE, {"output0": boxes_output(1, 0)})],
            {0: np.zeros((720, 1280, 3), np.uint8)},
        )
    rec.close()
    assert handle.stats["warnings"] == ["surface-memory"]
    assert any("nvbuf-memory-type=3" in m for m in caplog.messages)
    r = open_recording(tmp_path / "dev.h5")
    assert len(r) == 1 and not r.frames["has_image"].any()


def test_cpu_surfaces_true_trusts_the_user(tmp_path):
    pipe = pyds.Pipeline(MUX, graph=False)
    rec = Recorder(tmp_path / "trust.h5", image_format="raw", image_max_size=1280)
    img = np.random.default_rng(1).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    attach_recorder(pipe.pad, rec, muxer_size=MUX, jetson=False, cpu_surfaces=True)
    pipe.push([frame_with(pipe, GIE, {"output0": boxes_output(1, 0)})], {0: img})
    rec.close()
    np.testing.assert_array_equal(open_recording(tmp_path / "trust.h5")[0].image, img)


def test_after_a_tiler_no_surface_is_indexed_by_batch_id(tmp_path):
    """nvmultistreamtiler leaves one surface for N frame metas; pyds indexes surfaceList[batch_id]
    without a bounds check, so batch_id 1 would read past it."""
    pipe = pyds.Pipeline(MUX, tiler=True)
    rec = Recorder(tmp_path / "tiler.h5")
    handle = attach_recorder(pipe.pad, rec, muxer_size=MUX, jetson=False)
    frames = [frame_with(pipe, GIE, {"output0": boxes_output(1, 0)}, b, 0, b) for b in range(2)]
    pipe.push(frames, {0: np.zeros((720, 1280, 3), np.uint8)})  # one (tiled) surface
    rec.close()
    assert "surface-count" in handle.stats["warnings"] and handle.stats["frames_recorded"] == 2


def test_batch_id_past_the_frames_of_the_batch_is_not_mapped(tmp_path):
    pipe = pyds.Pipeline(MUX, graph=False)
    rec = Recorder(tmp_path / "b.h5")
    handle = attach_recorder(pipe.pad, rec, muxer_size=MUX, cpu_surfaces=True, jetson=False)
    pipe.push([frame_with(pipe, GIE, {"output0": boxes_output(1, 0)}, batch_id=3)])
    rec.close()
    assert "surface-count" in handle.stats["warnings"] and handle.stats["frames_recorded"] == 1


def test_surfaces_are_unmapped_even_when_jetson_is_not_detected(tmp_path):
    """A Jetson without /etc/nv_tegra_release: pyds still mapped the surface, so it must be unmapped
    (unmap_nvds_buf_surface is a no-op where nothing is mapped)."""
    pipe = pyds.Pipeline(MUX, jetson=True)
    pipe.bin.children[-2].set_property("nvbuf-memory-type", 3)
    rec = Recorder(tmp_path / "j.h5", image_format="raw")
    attach_recorder(pipe.pad, rec, muxer_size=MUX, jetson=False)
    img = np.full((720, 1280, 3), 77, np.uint8)
    pipe.push([frame_with(pipe, GIE, {"output0": boxes_output(1, 0)})], {0: img})
    rec.close()
    assert pyds.mapped_surfaces() == 0
    assert (open_recording(tmp_path / "j.h5")[0].image == 77).all()


def test_jetson_detected_without_nv_tegra_release(tmp_path, monkeypatch):
    from dsprobe.deepstream.surface import is_jetson

    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    (tmp_path / "sys/module/tegra_fuse").mkdir(parents=True)
    assert is_jetson(str(tmp_path))
    sbsa = tmp_path / "sbsa"
    (sbsa / "proc/device-tree").mkdir(parents=True)
    (sbsa / "proc/device-tree/compatible").write_bytes(b"ampere,altra\0")
    assert not is_jetson(str(sbsa))  # an aarch64 server (SBSA) is not a Jetson
    (sbsa / "proc/device-tree/compatible").write_bytes(b"nvidia,p3737\0nvidia,tegra234\0")
    assert is_jetson(str(sbsa))


# ----------------------------------------------------------------------------- frame sizes
def test_new_nvstreammux_keeps_each_streams_own_size(tmp_path):
    """The new nvstreammux has no width/height and does not scale: with mixed-resolution sources
    each frame keeps its source size (the first surface's size is not cached for all streams)."""
    pipe = pyds.Pipeline(MUX, new_mux=True)
    rec = Recorder(tmp_path / "mix.h5", images=False)
    attach_recorder(pipe.pad, rec, jetson=False)
    sizes = {0: (1920, 1080), 1: (640, 480)}
    frames = [
        frame_with(pipe, GIE, {"output0": boxes_output(1, 0)}, s, 0, s, size)
        for s, size in sizes.items()
    ]
    pipe.push(frames, {s: np.zeros((h, w, 3), np.uint8) for s, (w, h) in sizes.items()})
    rec.close()
    r = open_recording(tmp_path / "mix.h5")
    assert {int(f.source_id): f.frame_size for f in (r[0], r[1])} == sizes


def test_classic_nvstreammux_size_is_read_from_the_pipeline(tmp_path):
    pipe = pyds.Pipeline((960, 544))
    rec = Recorder(tmp_path / "mux.h5", images=False)
    attach_recorder(pipe.pad, rec)
    pipe.push([frame_with(pipe, GIE, {"output0": boxes_output(1, 0)}, size=(1920, 1080))])
    rec.close()
    assert open_recording(tmp_path / "mux.h5")[0].frame_size == (960, 544)


# ----------------------------------------------------------------------------- tensors
def test_disable_output_host_copy_gie_is_refused(tmp_path, caplog):
    """disable-output-host-copy=1: the host buffers exist but hold stale data; never recorded."""
    cfg = tmp_path / "pgie.txt"
    cfg.write_text(
        "[property]\ngie-unique-id=1\noutput-tensor-meta=1\ndisable-output-host-copy=1\n"
    )
    pipe = pyds.Pipeline(MUX)
    stale = pyds.GieOutput(1, {"output0": (0, (6, 50))}, host_copy=False)
    rec = Recorder(tmp_path / "stale.h5", images=False, nvinfer_config=str(cfg))
    with caplog.at_level(logging.WARNING, logger="dsprobe.deepstream"):
        handle = attach_recorder(pipe.pad, rec, muxer_size=MUX)
        pipe.push([frame_with(pipe, stale, {"output0": boxes_output(3, 0)})])
    rec.close()
    assert len(open_recording(tmp_path / "stale.h5")) == 0
    assert any("disable-output-host-copy=0" in m for m in caplog.messages)
    assert "config:1:disable-output-host-copy" in handle.stats["warnings"]


def test_host_copy_refusal_from_the_pipelines_nvinfer_config(tmp_path):
    cfg = tmp_path / "pgie.txt"
    cfg.write_text("[property]\ngie-unique-id=4\ndisable-output-host-copy=1\n")
    pipe = pyds.Pipeline(MUX, gie_properties={"config-file-path": str(cfg), "unique-id": 4})
    rec = Recorder(tmp_path / "el.h5", images=False)
    attach_recorder(pipe.pad, rec)
    gie = pyds.GieOutput(4, {"x": (0, (2,))}, host_copy=False)
    pipe.push([frame_with(pipe, gie, {"x": np.ones(2, np.float32)})])
    rec.close()
    assert len(open_recording(tmp_path / "el.h5")) == 0


def test_dtype_code_with_another_element_size_is_not_over_read(tmp_path):
    """Code 4 read as int64 (8 bytes); on a device where 4 is a 1-byte type the pointer spacing of
    two metas of one batch shows it, and the layer is left out instead of read 8x too far."""
    pipe = pyds.Pipeline(MUX)
    gie = pyds.GieOutput(1, {"mask": (4, (16,)), "ok": (0, (2,))}, element_sizes={4: 1})
    rec = Recorder(tmp_path / "dt.h5", images=False)
    handle = attach_recorder(pipe.pad, rec, muxer_size=MUX)
    frames = [
        frame_with(pipe, gie, {"mask": np.ones(16, np.int8), "ok": np.ones(2)}, b, 0, b)
        for b in range(2)
    ]
    pipe.push(frames)
    rec.close()
    r = open_recording(tmp_path / "dt.h5")
    assert set(r[0].tensors) == {"ok"} and len(r) == 2
    assert any(w.startswith("dtype-size:1:mask") for w in handle.stats["warnings"])


def test_dtype_code_confirmed_by_spacing_is_read(tmp_path):
    pipe = pyds.Pipeline(MUX)
    gie = pyds.GieOutput(1, {"ids": (4, (3,))})
    rec = Recorder(tmp_path / "ok.h5", images=False)
    handle = attach_recorder(pipe.pad, rec, muxer_size=MUX)
    sent = [np.arange(3, dtype=np.int64) + 10 * b for b in range(2)]
    pipe.push([frame_with(pipe, gie, {"ids": sent[b]}, b, 0, b) for b in range(2)])
    rec.close()
    r = open_recording(tmp_path / "ok.h5")
    for b in range(2):
        np.testing.assert_array_equal(r.find(b, 0).tensors["ids"], sent[b])
    assert not any(w.startswith("dtype") for w in handle.stats["warnings"])


def test_input_tensor_meta_pipelines_get_the_right_warning(tmp_path, caplog):
    """nvdspreprocess + input-tensor-meta: tensor meta on ROI meta and in batch_user_meta_list,
    none per frame; the warning names the real cause, not output-tensor-meta."""
    pipe = pyds.Pipeline(MUX)
    rec = Recorder(tmp_path / "roi.h5", images=False)
    with caplog.at_level(logging.WARNING, logger="dsprobe.deepstream"):
        handle = attach_recorder(pipe.pad, rec, muxer_size=MUX)
        for k in range(31):
            um = pipe.tensor_meta(GIE, {"output0": boxes_output(1, 0)})
            pipe.push([pipe.frame(0, k, 0, MUX)], batch_user=[um])
    rec.close()
    assert "input-tensor-meta" in handle.stats["warnings"]
    assert not any("set output-tensor-meta=1" in m for m in caplog.messages)


def test_async_classifier_sgie_config_is_named(tmp_path, caplog):
    """classifier-async-mode=1 (NVIDIA's sample SGIE configs): nvinfer attaches no tensor meta."""
    cfg = tmp_path / "sgie.txt"
    cfg.write_text(
        "[property]\ngie-unique-id=2\nprocess-mode=2\nnetwork-type=1\noutput-tensor-meta=1\n"
        "classifier-async-mode=1\n"
    )
    pipe = pyds.Pipeline(MUX)
    rec = Recorder(tmp_path / "a.h5", images=False, nvinfer_config={2: str(cfg)})
    with caplog.at_level(logging.WARNING, logger="dsprobe.deepstream"):
        handle = attach_recorder(pipe.pad, rec, muxer_size=MUX)
    rec.close()
    assert "config:2:classifier-async-mode" in handle.stats["warnings"]
    assert any("classifier-async-mode=0" in m for m in caplog.messages)


# ----------------------------------------------------------------------------- live objects
def run_live(pipe, pp, outputs, **options):
    probe = attach_postprocess(pipe.pad, pp, muxer_size=MUX, unique_id=1, **options)
    frames = []
    for k, out in enumerate(outputs):
        fm = frame_with(pipe, GIE, {"output0": out}, frame_num=k)
        pipe.push([fm])
        frames.append(fm)
    return probe, frames


def test_bInferDone_set_on_every_processed_frame_even_without_detections():
    pipe = pyds.Pipeline(MUX)
    probe, frames = run_live(pipe, detector(), [boxes_output(2, 0), boxes_output(0, 0)])
    assert probe.stats["error_count"] == 0 and len(frames[1]._objects) == 0
    assert [bool(fm.bInferDone) for fm in frames] == [True, True]


def test_labels_are_nul_terminated_over_reused_pool_objects():
    pipe = pyds.Pipeline(MUX)
    probe, frames = run_live(pipe, detector(), [boxes_output(1, 0), boxes_output(1, 1)])
    assert probe.stats["error_count"] == 0
    assert frames[0]._objects[0] is frames[1]._objects[0]  # the pool handed the object out again
    assert frames[1]._objects[0].obj_label == "car"  # not "carorbike"


def test_long_labels_are_cut_on_a_character_boundary():
    pipe = pyds.Pipeline(MUX)
    label = "é" * 100  # 200 UTF-8 bytes
    probe, frames = run_live(pipe, detector((label, "x")), [boxes_output(1, 0)])
    assert probe.stats["error_count"] == 0
    assert frames[0]._objects[0].obj_label == "é" * 63


def test_osd_text_has_font_offsets_and_background():
    pipe = pyds.Pipeline(MUX)
    probe, frames = run_live(pipe, detector(), [boxes_output(1, 0)])
    om = frames[0]._objects[0]
    tp = om.text_params
    assert pyds.get_string(tp.display_text).startswith("motorbike 0.9")
    assert (tp.x_offset, tp.y_offset) == (int(om.rect_params.left), int(om.rect_params.top) - 10)
    assert pyds.get_string(tp.font_params.font_name) == "Serif" and tp.font_params.font_size > 0
    assert tp.font_params.font_color.alpha == 1.0 and tp.set_bg_clr == 1


def test_negative_keypoints_are_clamped_not_a_type_error():
    pipe = pyds.Pipeline(MUX)
    pp = Postprocess(
        [
            {"kind": "decode", "name": "yolov8_pose", "params": {}},
            {"kind": "scale", "name": "nvinfer", "params": {}},
        ]
    )
    out = np.zeros((56, 20), np.float32)
    out[:4, 0] = (160, 160, 100, 100)
    out[4, 0] = 0.9
    kp = out[5:].reshape(17, 3, 20)
    kp[:, 0, 0], kp[:, 1, 0], kp[:, 2, 0] = -30, 400, 1.0  # left of and below the network input
    gie = pyds.GieOutput(1, {"output0": (0, (56, 20))}, pyds.NvDsInferNetworkInfo(320, 320, 3))
    probe = attach_postprocess(pipe.pad, pp, muxer_size=MUX, unique_id=1, keypoints=True)
    fm = frame_with(pipe, gie, {"output0": out})
    pipe.push([fm])
    assert probe.stats["error_count"] == 0
    circles = [c for dm in fm._display for c in dm.circle_params[: dm.num_circles]]
    assert len(circles) == 17 and all(c.xc == 0 and c.yc == MUX[1] - 1 for c in circles)


def test_without_unique_id_only_the_first_gie_is_postprocessed():
    pipe = pyds.Pipeline(MUX)
    other = pyds.GieOutput(3, {"emb": (0, (8,))})
    probe = attach_postprocess(pipe.pad, detector(), muxer_size=MUX)
    fm = frame_with(pipe, GIE, {"output0": boxes_output(1, 0)})
    fm._user.append(pipe.tensor_meta(other, {"emb": np.ones(8, np.float32)}))
    pipe.push([fm])
    assert probe.stats["error_count"] == 0 and len(fm._objects) == 1
    assert "unique-id-default" in probe.stats["warnings"]


# ----------------------------------------------------------------------------- user-meta callbacks
def vector_pipeline():
    pipe = pyds.Pipeline(MUX)
    sgie = pyds.GieOutput(2, {"emb": (0, (4,))}, pyds.NvDsInferNetworkInfo(64, 64, 3))
    pp = Postprocess(
        [
            {"kind": "decode", "name": "embedding", "params": {}},
            {"kind": "scale", "name": "nvinfer", "params": {}},
        ]
    )
    probe = attach_postprocess(pipe.pad, pp, muxer_size=MUX, unique_id=2, vectors=True)

    def frame():
        fm = pipe.frame(0, 0, 0, MUX)
        o = pipe.obj((10, 10, 64, 64))
        o._user.append(pipe.tensor_meta(sgie, {"emb": np.ones(4, np.float32)}))
        fm._objects.append(o)
        return fm

    return pipe, probe, frame


def test_vector_callbacks_leave_foreign_user_meta_alone():
    """pyds has ONE release slot for the process: dsprobe's callback is also called for another
    library's user meta; it must neither free it nor raise (an exception would abort the app)."""
    pipe, probe, frame = vector_pipeline()
    pipe.push([frame()])  # dsprobe's callbacks now own the slot
    foreign_addr = pyds.alloc_buffer(16)
    fm = frame()
    bm_user = pyds.nvds_acquire_user_meta_from_pool(None)
    bm_user.base_meta.meta_type = pyds.NvDsMetaType(pyds.nvds_get_user_meta_type("OTHER.LIB.META"))
    bm_user.user_meta_data = pyds.Capsule(None, foreign_addr)
    bm_user._release = True  # its library registered a release func earlier; the slot is dsprobe's
    nothing = pyds.nvds_acquire_user_meta_from_pool(None)
    nothing.user_meta_data = None
    nothing._release = True
    pipe.push([fm])  # release: no Abort
    assert foreign_addr in pyds._gbuffers  # not freed by dsprobe
    assert probe.stats["error_count"] == 0


def test_vector_copy_callback_copies_and_never_raises():
    pipe, probe, frame = vector_pipeline()
    seen = []
    pipe.pad.add_probe(
        16,
        lambda pad, info, ud: seen.extend(
            pyds.copy_user_meta(um)
            for fm in pyds.gst_buffer_get_nvds_batch_meta(hash(info.get_buffer()))._frames
            for om in fm._objects[1:]
            for um in om._user
        ),
        None,
    )
    pipe.push([frame()])
    assert len(seen) == 1 and seen[0] is not None
    broken = pyds.nvds_acquire_user_meta_from_pool(None)
    broken.base_meta.meta_type = pyds.NvDsMetaType(
        pyds.nvds_get_user_meta_type("DSPROBE.VECTOR.USER_META")
    )
    broken.user_meta_data = 12345  # not a capsule: the callback must not raise into C
    broken._copy = True
    assert pyds.copy_user_meta(broken) is None
    assert probe.stats["errors"] == {"vector-copy-callback": 1}
