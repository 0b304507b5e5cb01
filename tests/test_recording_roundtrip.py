"""Recorder -> HDF5 -> Recording round trips on real files: dtypes, streams, GIEs, objects, images."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from dsprobe import Detections, FrameRecord, ImageRecord, ObjectRecord, Recorder, open_recording
from dsprobe.recording.synthetic import synthetic_image, yolov8_like_output

CONFIGS = Path(__file__).parent / "data" / "configs"
DTYPES = ["float32", "float16", "int8", "int32", "int64", "uint8"]


def layer_values(dtype: str, shape: tuple, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.normal(size=shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)


def test_every_dtype_and_shape_round_trips(tmp_path):
    path = tmp_path / "dtypes.h5"
    shapes = {d: (3 + i, 2) if i % 2 else (5 + i,) for i, d in enumerate(DTYPES)}
    with Recorder(path, images=False) as rec:
        for n in range(7):
            layers = {
                f"out_{d}": layer_values(d, shapes[d], n * 10 + i) for i, d in enumerate(DTYPES)
            }
            assert rec.record(
                FrameRecord(
                    0,
                    n,
                    pts_ns=n * 1000,
                    network_size=(64, 48, 3),
                    frame_size=(320, 240),
                    layers=layers,
                )
            )
    with open_recording(path) as r:
        assert len(r) == 7
        for i, d in enumerate(DTYPES):
            info = r.layers[f"out_{d}"]
            assert info.dtype == np.dtype(d) and info.shape == shapes[d] and info.unique_id == 1
            stacked = r.read_layer(f"out_{d}")
            assert stacked.dtype == np.dtype(d) and stacked.shape == (7, *shapes[d])
            for n in range(7):
                expect = layer_values(d, shapes[d], n * 10 + i)
                np.testing.assert_array_equal(r[n].tensors[f"out_{d}"], expect)
                np.testing.assert_array_equal(stacked[n], expect)
        v = r[3]
        assert (v.frame_num, v.pts_ns, v.network_size, v.frame_size) == (
            3,
            3000,
            (64, 48, 3),
            (320, 240),
        )
        assert r.stats["written"] == 7 and r.stats["dropped_queue_full"] == 0


def test_frame_context_fields_and_slicing(tmp_path):
    path = tmp_path / "ctx.h5"
    big = 0xFFFFFFFFFFFFFFFF  # GST_CLOCK_TIME_NONE does not fit int64: stored as -1
    with Recorder(path, images=False) as rec:
        for n in range(5):
            rec.record(
                FrameRecord(
                    source_id=7,
                    frame_num=100 + n,
                    pts_ns=big if n == 4 else 10**12 + n,
                    unique_id=3,
                    ntp_timestamp=1_700_000_000_000_000_000 + n,
                    batch_id=n % 2,
                    pad_index=2,
                    network_size=(640, 640, 3),
                    frame_size=(1280, 720),
                    layers={"x": np.full(4, n, np.float32)},
                )
            )
    with open_recording(path) as r:
        df = r.frames
        assert list(df["frame_num"]) == [100, 101, 102, 103, 104]
        assert list(df["pts_ns"]) == [10**12, 10**12 + 1, 10**12 + 2, 10**12 + 3, -1]
        assert set(df["pad_index"]) == {2} and list(df["batch_id"]) == [0, 1, 0, 1, 0]
        assert df["ntp_timestamp"].iloc[2] == 1_700_000_000_000_000_002
        assert not df["has_image"].any() and set(df["unique_id"]) == {3}
        views = r[1:4]
        assert [v.frame_num for v in views] == [101, 102, 103]
        assert [int(v.tensors["x"][0]) for v in r] == [0, 1, 2, 3, 4]
        assert [v.frame_num for v in r[[4, 0]]] == [104, 100]
        assert r[-1].frame_num == 104
        with pytest.raises(IndexError):
            r[5]
        assert r.find(7, 102).tensors["x"][0] == 2


def test_multi_stream_multi_gie_with_repeated_layer_names(tmp_path):
    """Two streams, two GIEs that both have a layer called 'output' (namespaced per GIE)."""
    path = tmp_path / "multi.h5"
    cfg1 = (CONFIGS / "pgie_yolo.txt").read_text()
    cfg2 = (CONFIGS / "detectnet.txt").read_text()
    uid2 = 2
    with Recorder(
        path, nvinfer_config={1: CONFIGS / "pgie_yolo.txt", uid2: cfg2}, images=False
    ) as rec:
        for n in range(6):
            for src in (0, 1):
                rec.record(
                    FrameRecord(
                        src,
                        n,
                        pts_ns=n * 33_000_000,
                        unique_id=1,
                        layers={"output": np.full((2, 3), 10 * src + n, np.float32)},
                    )
                )
                rec.record(
                    FrameRecord(
                        src,
                        n,
                        pts_ns=n * 33_000_000,
                        unique_id=uid2,
                        layers={
                            "output": np.full(5, 100 + n, np.int32),
                            "/bbox/out.0": np.full(1, src, np.float16),
                        },
                    )
                )
    with open_recording(path) as r:
        assert len(r) == 24
        assert set(r.layers) == {"1/output", "2/output", "/bbox/out.0"}
        assert r.layers["1/output"].dtype == np.float32 and r.layers["2/output"].shape == (5,)
        assert r.layers["/bbox/out.0"].unique_id == 2
        with pytest.raises(KeyError, match="pass unique_id="):
            r.read_layer("output")
        a = r.read_layer("output", unique_id=1)
        assert a.shape == (12, 2, 3)
        rows = r.frames.index[(r.frames["unique_id"] == 1) & (r.frames["source_id"] == 1)]
        np.testing.assert_array_equal(r.read_layer("1/output", rows)[:, 0, 0], 10 + np.arange(6))
        v = r.find(1, 4, unique_id=2)
        assert set(v.tensors) == {"output", "/bbox/out.0"} and v.tensors["output"][0] == 104
        s = r.streams
        assert len(s) == 4 and set(s["frames"]) == {6}
        assert r.config_text(1) == cfg1 and r.config_text(2) == cfg2
        assert r.config(1).preprocessing.network_width == 640
        with pytest.raises(ValueError, match="pass unique_id="):
            r.config()


def test_objects_with_sgie_layers_crops_and_detections(tmp_path):
    path = tmp_path / "sgie.h5"
    rng = np.random.default_rng(1)
    crops = {}
    with Recorder(path, image_format="png") as rec:
        for n in range(4):
            objs = []
            for k in range(n):  # a variable number of objects per frame, frame 0 has none
                crop = rng.integers(0, 255, (20 + k, 30, 3), dtype=np.uint8)
                crops[(n, k)] = crop
                objs.append(
                    ObjectRecord(
                        (10.0 * k, 5.0, 40.5, 30.25),
                        class_id=k,
                        confidence=0.5 + k / 10,
                        object_id=1000 + k,
                        unique_component_id=1,
                        label="véhicule",
                        parent_index=k - 1,
                        parent_object_id=999,
                        layers={
                            "embedding": np.full(16, n + k / 10, np.float32),
                            "logits": np.arange(4, dtype=np.float16) + k,
                        },
                        image=ImageRecord(crop, (10.0 * k, 5.0, 40.5, 30.25)),
                    )
                )
            dets = [
                ObjectRecord(
                    (1.0, 2.0, 3.0, 4.0), class_id=2, confidence=0.75, object_id=5, label="car"
                )
            ] * (n % 2)
            rec.record(
                FrameRecord(
                    0, n, unique_id=2, objects=objs, detections=dets, frame_size=(1920, 1080)
                )
            )
    with open_recording(path) as r:
        assert list(r.frames["num_objects"]) == [0, 1, 2, 3]
        assert list(r.frames["num_detections"]) == [0, 1, 0, 1]
        assert r.layers["embedding"].per_object and r.layers["embedding"].shape == (16,)
        v = r[3]
        assert v.tensors == {}
        assert len(v.objects) == 3
        o = v.objects[2]
        assert o.rect == (20.0, 5.0, 40.5, 30.25) and o.class_id == 2 and o.object_id == 1002
        assert o.label == "véhicule" and o.parent_index == 1 and o.parent_object_id == 999
        assert o.confidence == pytest.approx(0.7)
        np.testing.assert_array_equal(o.layers["embedding"], np.full(16, 3.2, np.float32))
        assert o.layers["logits"].dtype == np.float16
        assert o.image.encoding == "png"
        from dsprobe.recording.images import decode

        np.testing.assert_array_equal(decode(o.image.data, "png"), crops[(3, 2)])  # PNG is lossless
        d = r[1].detections
        assert isinstance(d, Detections) and d.space == "frame"
        np.testing.assert_allclose(d.boxes, [[1, 2, 4, 6]])
        assert d.object_ids.tolist() == [5]
        table = r.object_table("objects")
        assert len(table) == 6 and list(table["row"]) == [1, 2, 2, 3, 3, 3]
        emb = r.read_layer("embedding")
        assert emb.shape == (6, 16)
        np.testing.assert_allclose(emb[:, 0], [1.0, 2.0, 2.1, 3.0, 3.1, 3.2], rtol=1e-6)
        rec2 = r[2].to_record()
        assert len(rec2.objects) == 2 and rec2.objects[1].layers["logits"][0] == 1


def test_images_jpeg_downscaled_and_raw(tmp_path):
    rng = np.random.default_rng(2)
    img = synthetic_image(rng, 640, 360)
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    for fmt in ("jpeg", "raw"):
        path = tmp_path / f"{fmt}.h5"
        with Recorder(path, image_format=fmt, image_max_size=320) as rec:
            rec.record(
                FrameRecord(0, 0, frame_size=(1280, 720), image=ImageRecord(img, (0, 0, 1280, 720)))
            )
            rec.record(
                FrameRecord(
                    0, 1, frame_size=(1280, 720), image=ImageRecord(rgba, (0, 0, 1280, 720))
                )
            )
            rec.record(FrameRecord(0, 2, frame_size=(1280, 720)))
        with open_recording(path) as r:
            assert list(r.frames["has_image"]) == [True, True, False]
            for i in (0, 1):
                im = r[i].image
                assert im.shape == (180, 320, 3) and im.dtype == np.uint8
                assert r[i].image_rect == (0, 0, 1280, 720)
                assert r[i].image_record.encoding == fmt
                # the downscaled picture looks like the original (area averaged), JPEG within a few levels
                small = img.reshape(180, 2, 320, 2, 3).mean(axis=(1, 3))
                assert np.abs(im.astype(float) - small).mean() < (4 if fmt == "jpeg" else 1)
            assert r[2].image is None and r[2].image_rect is None


@pytest.mark.parametrize("block_frames", [1, 5])
def test_raw_images_across_chunk_boundaries(tmp_path, block_frames):
    """Image bytes land in 1 MiB chunks written whole or in parts over several blocks and flushes."""
    rng = np.random.default_rng(5)
    sizes = [(300, 400), (700, 900), (20, 30), (1000, 600), (333, 777), (5, 5), (800, 800)] * 2
    pics = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    path = tmp_path / "big.h5"
    with Recorder(
        path,
        image_format="raw",
        image_max_size=4096,
        block_frames=block_frames,
        flush_interval_s=0.001,
    ) as rec:
        for n, pic in enumerate(pics):
            rec.record(
                FrameRecord(0, n, image=ImageRecord(pic, (0, 0, pic.shape[1], pic.shape[0])))
            )
    with open_recording(path) as r:
        assert len(r) == len(pics)
        for v, pic in zip(r, pics):
            np.testing.assert_array_equal(v.image, pic)


def test_pre_encoded_image_is_stored_as_is_and_images_off(tmp_path):
    from dsprobe.recording.images import encode

    img = synthetic_image(np.random.default_rng(3), 64, 48)
    jpeg = encode(img, "jpeg")
    with Recorder(tmp_path / "a.h5") as rec:
        rec.record(FrameRecord(0, 0, image=ImageRecord(jpeg, (0, 0, 64, 48), "jpeg")))
    with Recorder(tmp_path / "b.h5", images=False) as rec:
        rec.record(FrameRecord(0, 0, image=ImageRecord(img, (0, 0, 64, 48))))
    with open_recording(tmp_path / "a.h5") as r:
        assert r[0].image_record.data == jpeg and r[0].image.shape == (48, 64, 3)
    with open_recording(tmp_path / "b.h5") as r:
        assert r[0].image is None and not r.frames["has_image"].any()


def test_odd_layer_names_round_trip(tmp_path):
    names = [
        "",
        ".",
        "..",
        "/model.22/Concat_5_output_0",
        "a%2Fb",
        "%",
        "output:0",
        "ünï cødé",
        "x" * 300,
    ]
    path = tmp_path / "names.h5"
    with Recorder(path, images=False) as rec:
        rec.record(
            FrameRecord(0, 0, layers={n: np.full(2, i, np.int32) for i, n in enumerate(names)})
        )
    with open_recording(path) as r:
        assert set(r.layers) == set(names)
        assert {n: int(t[0]) for n, t in r[0].tensors.items()} == {
            n: i for i, n in enumerate(names)
        }


def test_layer_selection_applies_to_frames_and_objects(tmp_path):
    path = tmp_path / "sel.h5"
    with Recorder(path, layers=["keep", "emb"], images=False) as rec:
        rec.record(
            FrameRecord(
                0,
                0,
                layers={"keep": np.ones(2), "drop": np.ones(3)},
                objects=[
                    ObjectRecord((0, 0, 1, 1), layers={"emb": np.ones(4), "other": np.ones(1)})
                ],
            )
        )
    with open_recording(path) as r:
        assert set(r.layers) == {"keep", "emb"}
        assert set(r[0].objects[0].layers) == {"emb"}


@pytest.mark.parametrize("compression", [None, "lzf", "gzip", "blosc-lz4"])
def test_compression_choices_read_back(tmp_path, compression):
    if compression == "blosc-lz4":
        pytest.importorskip("hdf5plugin", reason="blosc needs hdf5plugin")
    out = yolov8_like_output(np.random.default_rng(4))
    path = tmp_path / "c.h5"
    with Recorder(path, compression=compression, images=False) as rec:
        rec.record(FrameRecord(0, 0, layers={"output0": out}))
    with open_recording(path) as r:
        np.testing.assert_array_equal(r[0].tensors["output0"], out)
    with h5py.File(path) as f:
        ds = f["layers/1/output0"]
        assert (
            ds.compression
            == {None: None, "lzf": "lzf", "gzip": "gzip", "blosc-lz4": "unknown"}[compression]
        )
        if compression in ("lzf", "gzip"):
            assert ds.shuffle


def test_unknown_compression_is_refused_up_front(tmp_path):
    with pytest.raises(ValueError, match="compression must be one of"):
        Recorder(tmp_path / "x.h5", compression="snappy")


def test_plain_h5py_can_read_the_documented_layout(tmp_path):
    """docs/recording-format.md: someone without dsprobe reads a layer and the frame index."""
    path = tmp_path / "plain.h5"
    with Recorder(path, notes="hello", image_format="raw") as rec:
        for n in range(3):
            rec.record(
                FrameRecord(
                    4,
                    n,
                    unique_id=1,
                    layers={"/model.22/Concat_5": np.full((2, 2), n, np.float32)},
                    image=ImageRecord(np.full((4, 6, 3), n, np.uint8), (0, 0, 12, 8)),
                )
            )
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "dsprobe-recording" and f.attrs["schema_version"] == 1
        assert f.attrs["notes"] == "hello"
        names = {ds.attrs["layer_name"]: ds for ds in f["layers/1"].values()}
        data = names["/model.22/Concat_5"]
        rows = f["frames/layer_row"][:]
        assert f["frames/source_id"][:].tolist() == [4, 4, 4]
        assert data[rows[2]][0, 0] == 2
        img_row = f["frames/image_row"][1]
        shape = f["images/shape"][img_row]
        off, nbytes = f["images/offset"][img_row], f["images/nbytes"][img_row]
        pixels = f["images/data"][off : off + nbytes].reshape(shape)
        assert pixels.shape == (4, 6, 3) and pixels[0, 0, 0] == 1
        assert json.loads(f.attrs["stats"])["written"] == 3


def test_empty_recording_is_valid(tmp_path):
    path = tmp_path / "empty.h5"
    Recorder(path).close()
    with open_recording(path) as r:
        assert len(r) == 0 and r.layers == {} and list(r) == [] and r.closed_cleanly
        assert len(r.streams) == 0
