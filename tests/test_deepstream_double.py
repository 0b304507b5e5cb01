"""The pyds TEST DOUBLE (tests/pyds_double.py) itself behaves as the real bindings do, row by row of
the table in docs/deepstream-audit.md ("The test double"), including where pyds is unforgiving."""

from __future__ import annotations

import ctypes

import numpy as np
import pyds_double as pyds
import pytest


@pytest.fixture(autouse=True)
def double():
    with pyds.installed():
        yield pyds


def test_char_array_copied_without_nul_and_without_bounds_check():
    om = pyds.nvds_acquire_obj_meta_from_pool(None)
    om.obj_label = "motorbike"
    om.obj_label = "car"
    assert om.obj_label == "carorbike"  # STRING_CHAR_ARRAY: str.copy(field, len), no NUL
    om.obj_label = "car\0"
    assert om.obj_label == "car"
    om.obj_label = "x" * 128  # fills char[128] exactly: still "fits" (no terminator at all)
    with pytest.raises(pyds.Segfault):
        om.obj_label = "x" * 129


def test_display_text_getter_returns_an_address():
    tp = pyds.nvds_acquire_obj_meta_from_pool(None).text_params
    tp.display_text = "car 0.91"
    assert isinstance(tp.display_text, int) and pyds.get_string(tp.display_text) == "car 0.91"
    old = tp.display_text
    tp.display_text = "bus"  # STRING_FREE_EXISTING frees the old copy
    with pytest.raises(pyds.Segfault):
        pyds.get_string(old)


def test_pool_metas_are_reused_with_stale_fields():
    om = pyds.nvds_acquire_obj_meta_from_pool(None)
    om.text_params.font_params.font_size = 20
    om.rect_params.border_width = 5
    pyds.release_batch()
    again = pyds.nvds_acquire_obj_meta_from_pool(None)
    assert again is om and again.text_params.font_params.font_size == 20
    assert again.rect_params.border_width == 5
    fresh = pyds.nvds_acquire_obj_meta_from_pool(None)  # a never-used element is zeroed
    assert fresh is not om and fresh.text_params.font_params.font_size == 0


def test_one_process_wide_callback_slot_and_exceptions_abort():
    calls = []
    um_a, um_b = (pyds.nvds_acquire_user_meta_from_pool(None) for _ in range(2))
    pyds.user_releasefunc(um_a, lambda data, ud: calls.append("a"))
    pyds.user_releasefunc(um_b, lambda data, ud: calls.append("b"))
    pyds.release_batch()
    assert calls == ["b", "b"]  # the last registration wins, for every meta
    um = pyds.nvds_acquire_user_meta_from_pool(None)
    pyds.user_releasefunc(um, lambda data, ud: 1 / 0)
    with pytest.raises(pyds.Abort):  # not an Exception: nothing in a probe can catch it
        pyds.release_batch()
    assert not issubclass(pyds.Abort, Exception)


def test_meta_type_constants_are_the_c_values():
    assert int(pyds.NvDsMetaType.NVDS_USER_META) == 7
    assert int(pyds.NvDsMetaType.NVDSINFER_TENSOR_OUTPUT_META) == 12
    assert int(pyds.NvDsMetaType.NVDS_START_USER_META) == 8193
    a = pyds.nvds_get_user_meta_type("A.B.C")
    assert a > 8193 and a == pyds.nvds_get_user_meta_type("A.B.C")
    assert int(pyds.NvDsMetaType(a)) == a  # pybind11 enums take any int


def test_tensor_meta_pointer_array_layout_and_layer_info_copies():
    pipe = pyds.Pipeline()
    gie = pyds.GieOutput(1, {"a": (0, (2, 3)), "b": (3, (4,))})
    tms = [
        pyds.NvDsInferTensorMeta.cast(
            pipe.tensor_meta(
                gie, {"a": np.full((2, 3), j, np.float32), "b": np.arange(4)}
            ).user_meta_data
        )
        for j in range(2)
    ]
    ptrs = (ctypes.c_void_p * 2).from_address(pyds.get_ptr(tms[1].out_buf_ptrs_host))
    assert ptrs[0] - tms[0]._ptr_array[0] == 24 and ptrs[1] - tms[0]._ptr_array[1] == 16
    assert (
        np.frombuffer((ctypes.c_float * 6).from_address(ptrs[0]), np.float32).tolist() == [1.0] * 6
    )
    info = tms[0].output_layers_info(0)
    assert info is not tms[0].output_layers_info(0)  # returned by value
    assert info.inferDims.d.dtype == np.uint32 and info.inferDims.d.shape == (8,)
    assert info.dataType == pyds.NvDsInferDataType.FLOAT and info.buffer is None
    assert not hasattr(pyds.NvDsInferDataType, "INT64")
    assert pyds.GieOutput(1, {"i": (4, (1,))}).infos[0].dataType == 4  # a plain int


def test_host_copy_disabled_leaves_host_buffers_stale():
    pipe = pyds.Pipeline()
    gie = pyds.GieOutput(1, {"a": (0, (3,))}, host_copy=False)
    tm = pyds.NvDsInferTensorMeta.cast(pipe.tensor_meta(gie, {"a": np.ones(3)}).user_meta_data)
    assert tm._ptr_array[0]  # a valid, non-NULL pointer...
    assert np.frombuffer(
        (ctypes.c_float * 3).from_address(tm._ptr_array[0]), np.float32
    ).tolist() == [0, 0, 0]


def test_old_pyds_versions():
    gie = pyds.GieOutput(1, {"a": (0, (3,))}, network=None, infer_dims=False)
    tm = pyds.NvDsInferTensorMeta.cast(
        pyds.Pipeline().tensor_meta(gie, {"a": np.ones(3)}).user_meta_data
    )
    assert not hasattr(tm, "network_info") and not hasattr(tm.output_layers_info(0), "inferDims")


def test_cast_is_stricter_than_pyds():
    """pyds reinterprets any pointer; the double raises on a wrong cast so such a bug shows in tests."""
    om = pyds.nvds_acquire_obj_meta_from_pool(None)
    with pytest.raises(TypeError):
        pyds.NvDsFrameMeta.cast(pyds._capsule_for(om))
    assert pyds.NvDsObjectMeta.cast(pyds.get_ptr(om)) is om  # the int-address overload


def test_surfaces_device_memory_bounds_and_formats():
    buf = pyds.Buffer()
    pipe = pyds.Pipeline(memory_type=2)
    pipe.surface(buf, 0, np.zeros((4, 6, 3), np.uint8))
    view = pyds.get_nvds_buf_surface(hash(buf), 0)  # handed out without complaint...
    assert view.shape == (4, 6, 4)
    with pytest.raises(pyds.Segfault):  # ...but touching it dies
        view[0, 0]
    with pytest.raises(pyds.Segfault):  # no bounds check on batch_id
        pyds.get_nvds_buf_surface(hash(buf), 1)
    pyds.surface_format = "NV12"
    with pytest.raises(RuntimeError, match="RGBA/RGB"):
        pyds.get_nvds_buf_surface(hash(buf), 0)


def test_unified_surface_is_a_pitched_view_and_unmap_is_a_no_op():
    buf, pipe = pyds.Buffer(), pyds.Pipeline(memory_type=3)
    pipe.surface(buf, 0, np.full((4, 6, 3), 9, np.uint8))
    view = pyds.get_nvds_buf_surface(hash(buf), 0)
    assert not view.flags.c_contiguous and view.strides[1:] == (4, 1)
    pyds.unmap_nvds_buf_surface(hash(buf), 0)
    assert (view[..., :3] == 9).all()


def test_jetson_surfaces_are_mapped_until_unmapped():
    buf, pipe = pyds.Buffer(), pyds.Pipeline(jetson=True)
    pipe.surface(buf, 0, np.full((4, 6, 3), 9, np.uint8))
    view = pyds.get_nvds_buf_surface(hash(buf), 0)
    assert (view[..., :3] == 9).all() and pyds.mapped_surfaces() == 1
    pyds.unmap_nvds_buf_surface(hash(buf), 0)
    assert pyds.mapped_surfaces() == 0 and (view[..., :3] == 0xCD).all()


def test_frame_meta_defaults_and_unsigned_fields():
    fm = pyds.Pipeline.frame(0, 0, 0, (640, 480))
    assert fm.bInferDone == 0
    cp = pyds.nvds_acquire_display_meta_from_pool(None).circle_params[0]
    for bad in (-1, 2.5):
        with pytest.raises(TypeError):
            cp.xc = bad


def test_gst_elements_have_parents_factories_and_strict_properties():
    pipe = pyds.Pipeline((640, 480), new_mux=True)
    mux = pipe.bin.children[0]
    assert mux.get_parent() is pipe.bin and mux.get_factory().get_name() == "nvstreammux"
    with pytest.raises(TypeError):
        mux.get_property("width")  # the new nvstreammux has none
    it = pipe.bin.iterate_recurse()
    names = []
    while True:
        ok, el = it.next()
        if ok != pyds.Gst.IteratorResult.OK:
            break
        names.append(el.get_name())
    assert names == ["mux", "pgie", "conv", "rgba"]
    assert (
        pipe.pad.get_parent_element()
        .get_static_pad("sink")
        .get_peer()
        .get_parent_element()
        .get_name()
        == "conv"
    )
    assert int(pyds.Gst.PadProbeType.BUFFER) == 16 and int(pyds.Gst.PadProbeReturn.OK) == 1


def test_every_test_the_audit_table_cites_exists():
    """docs/deepstream-audit.md names a test for each row; each must exist in the file it names."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "deepstream-audit.md").read_text()
    files = {
        "fixes": "test_deepstream_fixes.py",
        "probe": "test_deepstream_probe.py",
        "live": "test_deepstream_live.py",
        "doctor": "test_deepstream_doctor.py",
        "double": "test_deepstream_double.py",
        "examples": "test_deepstream_examples.py",
    }
    defined = {
        k: set(re.findall(r"^def (test_\w+)", (root / "tests" / f).read_text(), re.M))
        for k, f in files.items()
    }
    everything = set().union(*defined.values())
    cited = set(re.findall(r"`(test_\w+)`", text))
    assert len(cited) > 40 and cited <= everything, sorted(cited - everything)
    for kind, names in re.findall(
        r"\b(fixes|probe|live|doctor|double) ((?:`test_\w+`(?:, )?)+)", text
    ):
        for name in re.findall(r"`(test_\w+)`", names):
            assert name in defined[kind], (kind, name)
