"""The CuPy backend: ``pp.to("cuda")`` gives the CPU path's detections bit for bit.

CPU-side tests (device choice, the fallback message, which chains run on the GPU, the lazy row
mappings) run everywhere. The equality tests need CuPy and a CUDA GPU: CI has neither and skips them
with that reason; they were run on the lent H100 machine (docs/gpu.md has the run).
"""

from __future__ import annotations

import ctypes
import sys
import types
import warnings
import zlib

import numpy as np
import pytest

from dsprobe.detections import Detections
from dsprobe.nvinfer.config import Preprocessing
from dsprobe.postprocess.gpu import GpuFallbackWarning, gpu_available, unsupported_reason
from dsprobe.postprocess.gpu.backend import check_device, cupy_or_reason
from dsprobe.postprocess.gpu.plan import plan_of
from dsprobe.postprocess.gpu.recluster import LazyRows
from dsprobe.postprocess.pipeline import Postprocess, Step
from dsprobe.postprocess.registry import StepContext

GPU = gpu_available()
needs_gpu = pytest.mark.skipif(
    not GPU, reason="needs CuPy and a CUDA GPU (pip install 'dsprobe[gpu]'); run on a GPU machine"
)


def nvinfer_chain(
    decoder: str = "yolov8", decode_params: dict | None = None, **over
) -> Postprocess:
    """decode -> threshold -> nms -> scale:nvinfer -> filter:objects, params overridable per step."""
    steps = [
        Step("decode", decoder, dict(decode_params or {})),
        Step(
            "filter",
            "threshold",
            over.get("threshold", {"pre_cluster_threshold": 0.25, "num_classes": 5}),
        ),
        Step("cluster", over.get("cluster", "nms"), over.get("cluster_params", {})),
        Step(
            "scale",
            "nvinfer",
            over.get("scale", {"maintain_aspect_ratio": True, "symmetric_padding": True}),
        ),
        Step("filter", "objects", over.get("objects", {})),
    ]
    return Postprocess(steps, num_classes=5)


# ---------------------------------------------------------------------------------------------- CPU side
def test_device_names():
    assert check_device("cpu") == "cpu"
    assert check_device("CUDA") == check_device("cuda:0") == check_device("gpu") == "cuda"
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda', got 'tpu'"):
        check_device("tpu")
    with pytest.raises(ValueError, match="got 'tpu'"):
        nvinfer_chain().to("tpu")


def test_to_cuda_without_cupy_warns_once_and_stays_on_cpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    assert cupy_or_reason()[0] is None
    pp = nvinfer_chain()
    with pytest.warns(GpuFallbackWarning) as caught:
        on = pp.to("cuda")
    assert len(caught) == 1
    msg = str(caught[0].message)
    assert "running the postprocess on the CPU instead of the GPU" in msg
    assert "CuPy is not installed" in msg and "dsprobe[gpu]" in msg
    assert on.device == "cpu" and on.to_dict() == pp.to_dict()
    layers = {"output0": np.random.default_rng(0).random((2, 9, 50), np.float32)}
    ctx = [StepContext((64, 64), (128, 96), num_classes=5)] * 2
    assert all(a.equals(b) for a, b in zip(on.run_batch(layers, ctx), pp.run_batch(layers, ctx)))


def test_to_cuda_without_a_device_names_the_reason(monkeypatch):
    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake = types.SimpleNamespace(
        cuda=types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device))
    )
    monkeypatch.setitem(sys.modules, "cupy", fake)
    with pytest.warns(GpuFallbackWarning, match="no usable CUDA device.*cudaErrorNoDevice"):
        assert nvinfer_chain().to("cuda").device == "cpu"


def test_to_cpu_is_silent_and_device_is_not_part_of_the_spec():
    pp = nvinfer_chain()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cpu = pp.to("cpu")
    assert cpu.device == "cpu" and cpu.to_dict() == pp.to_dict()
    assert "device" not in repr(cpu)


def test_plan_accepts_the_nvinfer_chains():
    p = plan_of(nvinfer_chain())
    assert (p.decoder, p.cluster, p.scale, p.filters) == ("yolov8", "nms", "nvinfer", {})
    assert (p.cluster_at, p.scale_at, p.filters_at) == (2, 3, 4)
    g = plan_of(
        nvinfer_chain(cluster="group_rectangles", cluster_params={"post_cluster_threshold": 0.1})
    )
    assert (g.cluster, g.cluster_params) == (
        "nms",
        {"iou_threshold": 0.5, "post_cluster_threshold": 0.1, "topk": 20},
    )
    assert plan_of(nvinfer_chain(cluster="none", cluster_params={"topk": 3})).cluster == "none"
    two = Postprocess([Step("decode", "xyxy_score_class"), Step("filter", "threshold")])
    assert plan_of(two).cluster is None and plan_of(two).scale is None
    for name in ("yolov5", "yolox", "detectnet_v2"):
        assert unsupported_reason(nvinfer_chain(name)) == ""


@pytest.mark.parametrize(
    "pp, why",
    [
        (nvinfer_chain("ssd"), "decoder 'ssd' has no GPU kernel"),
        (nvinfer_chain(decode_params={"multi_label": True}), "multi_label=true"),
        (nvinfer_chain(cluster="dbscan"), "cluster 'dbscan' has no GPU kernel"),
        (
            nvinfer_chain(cluster="group_rectangles", cluster_params={"opencv_build": True}),
            "opencv_build=true",
        ),
        (Postprocess([Step("decode", "yolov8"), Step("cluster", "nms")]), "step 1"),
    ],
)
def test_plan_names_what_has_no_gpu_kernel(pp, why):
    assert why in unsupported_reason(pp)


def test_unsupported_after_with_params_falls_back_at_run_time(monkeypatch):
    pp = nvinfer_chain()
    pp.device = "cuda"  # as to("cuda") leaves it on a GPU machine
    changed = pp.with_params("decode", multi_label=True)
    assert changed.device == "cuda"
    layers = {"output0": np.random.default_rng(1).random((1, 9, 40), np.float32)}
    ctx = [StepContext((64, 64), (64, 64), num_classes=5)]
    with pytest.warns(GpuFallbackWarning, match="multi_label=true"):
        out = changed.run_batch(layers, ctx)
    assert out[0].equals(changed.to("cpu").run(layers_of(layers, 0), ctx[0]))


def layers_of(layers: dict, i: int) -> dict:
    return {n: np.asarray(a[i]) for n, a in layers.items()}


def test_lazy_rows_builds_each_row_on_demand():
    made = []
    flat = np.array([3, 3, 5, 9, 9, 9])

    def make(row, a, b):
        made.append(row)
        return (a, b)

    m = LazyRows([3, 4, 5, 9], flat, make)
    assert len(m) == 4 and list(m) == [3, 4, 5, 9] and made == []
    assert m[4] == (2, 2) and m[9] == (3, 6) and made == [4, 9]
    assert dict(m.items()) == {3: (0, 2), 4: (2, 2), 5: (2, 3), 9: (3, 6)}


# ---------------------------------------------------------------------------------------------- random frames
def frame_sizes(rng: np.random.Generator, n: int) -> list[tuple[int, int]]:
    sizes = [(1920, 1080), (1280, 720), (640, 640), (1000, 1333), (333, 250)]
    return [sizes[i] for i in rng.integers(0, len(sizes), n)]


def contexts(rng, n, net, num_classes=5, geometry=None) -> list[StepContext]:
    return [
        StepContext(net, fs, (0.0, 0.0, float(fs[0]), float(fs[1])), num_classes, (), geometry)
        for fs in frame_sizes(rng, n)
    ]


def boxes_cxcywh(rng, n, size) -> np.ndarray:
    """Centres on a coarse grid and sizes from a few values (duplicates and exact ties in IoU),
    some zero / negative sizes (degenerate boxes) and a few far-away or non-finite corners."""
    cx = rng.integers(0, 16, n) * (size / 16) + rng.choice([0, 0.5, 0.25], n)
    cy = rng.integers(0, 16, n) * (size / 16) + rng.choice([0, 0.5, 0.25], n)
    w = rng.choice([0.0, -4.0, 8.0, 16.0, 24.0, 40.0, 64.0, 7.3], n)
    h = rng.choice([0.0, -2.0, 8.0, 16.0, 24.0, 40.0, 64.0, 5.1], n)
    out = np.stack([cx, cy, w, h]).astype(np.float32)
    odd = rng.random(n) < 0.01
    out[0, odd] = rng.choice(
        np.array([np.inf, -np.inf, np.nan, 3e38, -1e20], np.float32), odd.sum()
    )
    return out


def scores(rng, shape) -> np.ndarray:
    """Scores quantised to 1/16 (many ties), mostly low; a few exactly at the thresholds."""
    s = np.floor(rng.random(shape) ** 3 * 16) / 16
    return s.astype(np.float32)


def yolov8_batch(rng, b, nc=5, anchors=96, size=320, transposed=False) -> np.ndarray:
    x = np.concatenate(
        [
            np.stack([boxes_cxcywh(rng, anchors, size) for _ in range(b)]),
            scores(rng, (b, nc, anchors)),
        ],
        axis=1,
    )
    return np.ascontiguousarray(x.transpose(0, 2, 1)) if transposed else x


def yolov5_batch(rng, b, nc=5, anchors=96, size=320) -> np.ndarray:
    boxes = np.stack([boxes_cxcywh(rng, anchors, size) for _ in range(b)])  # (b, 4, A)
    obj = scores(rng, (b, 1, anchors)) ** 0.5
    return np.ascontiguousarray(
        np.concatenate([boxes, obj, scores(rng, (b, nc, anchors))], axis=1).transpose(0, 2, 1)
    )


def xyxy_batch(rng, b, n=64, size=320) -> np.ndarray:
    c = np.stack([boxes_cxcywh(rng, n, size) for _ in range(b)])
    x = np.concatenate(
        [
            c[:, :2] - c[:, 2:] / 2,
            c[:, :2] + c[:, 2:] / 2,
            scores(rng, (b, 1, n)),
            rng.integers(-1, 7, (b, 1, n)).astype(np.float32) + rng.choice([0, 0.7], (b, 1, n)),
        ],
        axis=1,
    ).astype(np.float32)
    return np.ascontiguousarray(x.transpose(0, 2, 1))  # (b, n, 6)


def detectnet_batch(rng, b, nc=3, gh=12, gw=16) -> dict:
    cov = scores(rng, (b, nc, gh, gw))
    bbox = rng.choice(np.array([-0.5, 0.0, 0.1, 0.25, 0.5, 1.0], np.float32), (b, 4 * nc, gh, gw))
    return {"output_cov/Sigmoid": cov, "output_bbox/BiasAdd": bbox.astype(np.float32)}


def random_setting(rng, nc=5) -> dict:
    def pc(lo, hi, integer=False):
        v = rng.integers(lo, hi, nc) if integer else np.round(rng.uniform(lo, hi, nc) * 16) / 16
        return v.tolist() if rng.random() < 0.5 else v[0].item()

    objects = {}
    if rng.random() < 0.5:
        objects = {
            "detected_min_w": pc(0, 30),
            "detected_max_h": pc(0, 300),
            "roi_top_offset": pc(0, 50),
        }
        objects["crop_objects_to_roi_boundary"] = bool(rng.random() < 0.5)
        if rng.random() < 0.5:
            objects["filter_out_class_ids"] = [int(rng.integers(0, nc))]
            objects["roi_bottom_offset"] = pc(0, 40, integer=True)
    return {
        "threshold": {"pre_cluster_threshold": pc(0.0, 0.5), "num_classes": nc},
        "cluster": "nms" if rng.random() < 0.8 else "none",
        "iou": pc(0.1, 0.9),
        "post": pc(0.0, 0.5),
        "topk": pc(-1, 5, integer=True),
        "scale": {
            "maintain_aspect_ratio": bool(rng.random() < 0.7),
            "symmetric_padding": bool(rng.random() < 0.5),
            "deepstream_version": float(rng.choice([6.2, 7.1, 9.1])),
        },
        "objects": objects,
    }


def chain(decoder, decode_params, s) -> Postprocess:
    cp = (
        {"iou_threshold": s["iou"], "post_cluster_threshold": s["post"], "topk": s["topk"]}
        if s["cluster"] == "nms"
        else {"topk": s["topk"]}
    )
    return nvinfer_chain(
        decoder,
        decode_params,
        threshold=s["threshold"],
        cluster=s["cluster"],
        cluster_params=cp,
        scale=s["scale"],
        objects=s["objects"],
    )


CASES = {
    "yolov8": (lambda rng, b: {"output0": yolov8_batch(rng, b)}, {"score_threshold": 0.0}),
    "yolov8_t": (
        lambda rng, b: {"output0": yolov8_batch(rng, b, transposed=True)},
        {"score_threshold": 0.0625},
    ),
    "yolov8_fp16": (
        lambda rng, b: {"output0": yolov8_batch(rng, b).astype(np.float16)},
        {"score_threshold": 0.0},
    ),
    "yolov5": (lambda rng, b: {"output": yolov5_batch(rng, b)}, {"score_threshold": 0.0}),
    "yolov5_obj": (
        lambda rng, b: {"output": yolov5_batch(rng, b)},
        {"score": "objectness", "box_format": "xyxy"},
    ),
    "xyxy_score_class": (lambda rng, b: {"output": xyxy_batch(rng, b)}, {}),
    "xyxy_dsyolo": (lambda rng, b: {"output": xyxy_batch(rng, b)}, {"parser": "deepstream_yolo"}),
    "detectnet_v2": (lambda rng, b: detectnet_batch(rng, b), {"num_classes": 5}),
    "detectnet_resnet": (
        lambda rng, b: detectnet_batch(rng, b),
        {"parser": "custom_resnet", "pre_cluster_threshold": [0.25, 0.5, 0.125]},
    ),
}


def same(a: Detections, b: Detections) -> str:
    """ "" when identical bit for bit (boxes, scores, class ids, order, space; any NaN equals any NaN:
    x86 and CUDA give NaNs different payloads), else what differs."""
    if a.space != b.space or len(a) != len(b):
        return f"space/len {a.space}/{len(a)} vs {b.space}/{len(b)}"
    for name in ("boxes", "scores", "class_ids"):
        x, y = getattr(a, name), getattr(b, name)
        if x.dtype.kind == "f":
            bad = (x.view(np.int32) != y.view(np.int32)) & ~(np.isnan(x) & np.isnan(y))
        else:
            bad = x != y
        if bad.any():
            at = np.unique(np.nonzero(bad)[0])[:3]
            return f"{name} differ in rows {at}: {x[at]} vs {y[at]}"
    return ""


@needs_gpu
@pytest.mark.parametrize("case", list(CASES))
def test_gpu_equals_cpu_on_random_frames(case):
    """10,000 random frames over the cases (ties, degenerate / non-finite boxes, per-class
    thresholds, top-k, object filters, mixed frame sizes, FP16), bit for bit, in order."""
    make, decode_params = CASES[case]
    decoder = {
        "yolov8_t": "yolov8",
        "yolov8_fp16": "yolov8",
        "yolov5_obj": "yolov5",
        "xyxy_dsyolo": "xyxy_score_class",
        "detectnet_resnet": "detectnet_v2",
    }.get(case, case)
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    frames = -(-10_000 // len(CASES))
    done, batch = 0, 64
    while done < frames:
        s = random_setting(rng)
        if decoder == "detectnet_v2":  # 3 classes in the layer
            s["threshold"]["num_classes"] = 3
        pp = chain(decoder, decode_params, s)
        gpu = pp.to("cuda")
        assert gpu.device == "cuda"
        layers = make(rng, batch)
        net = (256, 192) if decoder == "detectnet_v2" else (320, 320)
        ctxs = contexts(rng, batch, net, s["threshold"]["num_classes"])
        try:
            want = pp.run_batch(layers, ctxs)
        except Exception as exc:  # the GPU must fail the same way
            with pytest.raises(type(exc)) as got:
                gpu.run_batch(layers, ctxs)
            assert str(got.value) == str(exc)
            continue
        out = gpu.run_batch(layers, ctxs)
        for i, (a, b) in enumerate(zip(out, want)):
            diff = same(a, b)
            assert not diff, f"{case} frame {i} of a batch, setting {s}: {diff}"
        done += batch


@needs_gpu
def test_gpu_layers_from_device_pointers_the_way_the_probe_reads_them():
    """nvinfer's ``out_buf_ptrs_dev``: a C void*[] of device pointers, one per layer, each already
    offset to its frame in the batch. Wrapped without a copy, then decoded on the GPU."""
    import cupy

    from dsprobe.postprocess.gpu import device_layers, wrap_device_pointer

    rng = np.random.default_rng(5)
    batch = cupy.asarray(yolov8_batch(rng, 4))  # nvinfer's batch output buffer
    frame = 2
    per_frame = batch[0].nbytes
    ptrs = (ctypes.c_void_p * 1)(batch.data.ptr + frame * per_frame)
    layers = device_layers(ctypes.addressof(ptrs), [("output0", np.float32, batch.shape[1:])])
    view = layers["output0"]
    assert (
        view.shape == (1, *batch.shape[1:]) and view.data.ptr == batch.data.ptr + frame * per_frame
    )
    batch[frame, 4, 0] = 0.875  # the view sees writes to nvinfer's buffer: no copy was made
    assert float(view[0, 4, 0]) == 0.875
    pp = nvinfer_chain().to("cuda")
    ctx = contexts(rng, 1, (320, 320))
    got = pp.run_batch(layers, ctx)[0]
    want = pp.to("cpu").run({"output0": batch[frame].get()}, ctx[0])
    assert not same(got, want)
    half = wrap_device_pointer(batch.data.ptr, (8,), np.float16)
    assert half.dtype == np.float16 and half.data.ptr == batch.data.ptr
    with pytest.raises(ValueError, match="NULL"):
        wrap_device_pointer(0, (4,), np.float32)


@needs_gpu
def test_gpu_recording_replay_and_reclusterer_equal_cpu(tmp_path):
    from dsprobe import Recorder, open_recording
    from dsprobe.analysis.search import Reclusterer
    from dsprobe.recording.synthetic import yolov8_like_output
    from dsprobe.records import FrameRecord

    rng = np.random.default_rng(2)
    path = tmp_path / "gpu.h5"
    with Recorder(path, images=False, drop_when_full=False) as rec:
        for i in range(300):
            fs = (1920, 1080) if i % 3 else (1280, 720)
            out = yolov8_like_output(rng, num_classes=80, num_objects=8)
            rec.record(
                FrameRecord(
                    i % 2,
                    i // 2,
                    network_size=(640, 640, 3),
                    frame_size=fs,
                    layers={"output0": out},
                )
            )
    r = open_recording(path)
    geo = Preprocessing(
        network_width=640, network_height=640, maintain_aspect_ratio=True, symmetric_padding=True
    )
    pp = Postprocess(
        [
            Step("decode", "yolov8", {"score_threshold": 0.01}),
            Step("filter", "threshold", {"pre_cluster_threshold": 0.05, "num_classes": 80}),
            Step("cluster", "nms", {"iou_threshold": 0.45, "topk": 50}),
            Step("scale", "nvinfer", {}),
            Step("filter", "objects", {}),
        ],
        num_classes=80,
        geometry=geo,
    )
    cpu, gpu = pp.detections_by_row(r), pp.to("cuda").detections_by_row(r, batch=64)
    assert cpu.keys() == gpu.keys() and sum(map(len, cpu.values())) > 300
    assert all(not same(gpu[k], cpu[k]) for k in cpu)
    dec_cpu, dec_gpu = pp.decode_recording(r), pp.to("cuda").decode_recording(r)
    assert all(not same(dec_gpu.candidates[k], dec_cpu.candidates[k]) for k in dec_cpu.candidates)
    rc_cpu, rc_gpu = (
        Reclusterer(dec_cpu, floor=0.05),
        Reclusterer(dec_cpu, floor=0.05, device="cuda"),
    )
    settings = [
        {"pre_cluster_threshold": t, "iou_threshold": u, "topk": k}
        for t in (0.05, 0.3)
        for u in (0.3, 0.7)
        for k in (-1, 3)
    ]

    for s in settings:
        q = pp.set_params(s)
        a, b = rc_cpu.run(q), rc_gpu.run(q)
        assert a.keys() == b.keys()
        assert all(not same(b[k], a[k]) for k in a), s
        sa, sb = rc_cpu.select(q), rc_gpu.select(q)
        assert np.array_equal(sa.keep, sb.keep) and np.array_equal(sa.boxes, sb.boxes)
        assert rc_cpu.counts(q).equals(rc_gpu.counts(q))


@needs_gpu
def test_gpu_reclusterer_on_random_settings_equals_running_the_steps():
    from test_search import base_postprocess, decoded_from, random_candidates
    from test_search import random_setting as search_setting

    from dsprobe.analysis.search import Reclusterer

    rng = np.random.default_rng(17)
    pp = base_postprocess("nms", iou_threshold=0.5)
    dec = decoded_from(random_candidates(rng, 200), pp)
    rc = Reclusterer(dec, device="cuda")
    assert rc.device == "cuda"
    for _ in range(40):
        q = pp.set_params(search_setting(rng))
        fast, slow = rc.run(q), dec.run(q)
        assert fast.keys() == slow.keys()
        for r in slow:
            assert not same(fast[r], slow[r]), (q.to_dict(), r)


@needs_gpu
def test_gpu_read_tensor_meta_device_through_the_pyds_double():
    """dsprobe.deepstream.read_tensor_meta_device on a tensor meta whose ``out_buf_ptrs_dev`` is one
    capsule over a C void*[] of device pointers (as pyds binds it): CuPy views, decoded on the GPU."""
    import cupy
    import pyds_double as pyds

    from dsprobe.deepstream import read_tensor_meta_device
    from dsprobe.deepstream.meta import MetaError

    rng = np.random.default_rng(8)
    frame = yolov8_batch(rng, 1)[0]  # (9, 96)
    host = (ctypes.c_float * frame.size).from_buffer_copy(frame.tobytes())
    info = pyds.NvDsInferLayerInfo("output0", 0, frame.shape, 0)
    meta = pyds.NvDsInferTensorMeta(1, [info], [ctypes.addressof(host)], None)
    dev = cupy.asarray(frame)
    ptrs = (ctypes.c_void_p * 1)(dev.data.ptr)
    meta.out_buf_ptrs_dev = pyds.Capsule(ptrs, ctypes.addressof(ptrs))
    layers = read_tensor_meta_device(pyds, meta)
    assert layers["output0"].data.ptr == dev.data.ptr and layers["output0"].shape == (1, 9, 96)
    pp = nvinfer_chain().to("cuda")
    ctx = contexts(rng, 1, (320, 320))
    assert not same(pp.run_batch(layers, ctx)[0], pp.to("cpu").run({"output0": frame}, ctx[0]))
    meta.out_buf_ptrs_dev = pyds.Capsule(None, 0)  # nvinferserver: no device buffers
    with pytest.raises(MetaError, match="NULL"):
        read_tensor_meta_device(pyds, meta)


def test_read_tensor_meta_device_names_what_it_cannot_read():
    import pyds_double as pyds

    from dsprobe.deepstream import read_tensor_meta_device
    from dsprobe.deepstream.meta import MetaError

    host = (ctypes.c_float * 4)()
    meta = pyds.NvDsInferTensorMeta(
        3, [pyds.NvDsInferLayerInfo("out", 0, (4,), 0)], [ctypes.addressof(host)], None
    )
    meta.out_buf_ptrs_dev = pyds.Capsule(None, 0)  # nvinferserver attaches host buffers only
    with pytest.raises(MetaError, match="tensor meta of GIE 3: out_buf_ptrs_dev is NULL"):
        read_tensor_meta_device(pyds, meta)
    odd = pyds.NvDsInferTensorMeta(
        3, [pyds.NvDsInferLayerInfo("odd", 9, (4,), 0)], [ctypes.addressof(host)], None
    )
    with pytest.raises(MetaError, match="layer 'odd': unknown NvDsInferDataType 9"):
        read_tensor_meta_device(pyds, odd)


def test_cpu_run_batch_takes_arrays_with_a_get_method_like_cupy():
    """On the CPU (e.g. after a fallback) run_batch copies CuPy-like arrays to the host first."""

    class DeviceArray:  # what the CPU path needs of a CuPy array: .get() -> numpy
        def __init__(self, a):
            self.a = a

        def get(self):
            return self.a

        def __getitem__(self, i):
            raise TypeError("implicit conversion to a NumPy array is not allowed")

    x = np.random.default_rng(3).random((2, 9, 40), np.float32)
    ctx = [StepContext((64, 64), (64, 48), num_classes=5)] * 2
    pp = nvinfer_chain()
    got = pp.run_batch({"output0": DeviceArray(x)}, ctx)
    assert all(a.equals(b) for a, b in zip(got, pp.run_batch({"output0": x}, ctx)))


def test_tuner_device_argument_falls_back_with_one_warning(monkeypatch, tmp_path):
    """``Tuner(rec, device="cuda")`` without CuPy: one GpuFallbackWarning, then the CPU, same boxes."""
    pytest.importorskip("ipywidgets")
    from dsprobe import Recorder, open_recording
    from dsprobe.notebook import Tuner
    from dsprobe.recording.synthetic import synthetic_frame

    rng = np.random.default_rng(6)
    with Recorder(tmp_path / "t.h5", drop_when_full=False) as rec:
        for i in range(4):
            rec.record(synthetic_frame(rng, 0, i))
    r = open_recording(tmp_path / "t.h5")
    pp = Postprocess(
        [
            Step("decode", "yolov8", {"score_threshold": 0.05}),
            Step("filter", "threshold", {"pre_cluster_threshold": 0.25, "num_classes": 80}),
            Step("cluster", "nms", {"iou_threshold": 0.45}),
            Step("scale", "nvinfer", {}),
        ],
        num_classes=80,
    )
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.warns(GpuFallbackWarning) as caught:
        t = Tuner(r, pp, device="cuda", background=False)
    assert len(caught) == 1 and "CuPy is not installed" in str(caught[0].message)
    assert t.device == "cpu" and t.reclusterer.device == "cpu"
    assert t.detections.equals(pp(r[t.row]))


@needs_gpu
def test_gpu_search_table_equals_the_cpu_search():
    """``search(..., device="cuda")`` (GPU re-clustering and scaling feeding the flat scoring) gives
    the CPU search's table to the last bit, on 80 classes with post-cluster thresholds and top-k."""
    from test_search import NC, decoded_many, many_class_candidates, many_class_postprocess

    from dsprobe.analysis.evaluate import ground_truth_from_detections
    from dsprobe.analysis.search import search
    from dsprobe.postprocess.replay import detections_frame

    rng = np.random.default_rng(43)
    cands = many_class_candidates(rng, 40)
    pp = many_class_postprocess()
    dec = decoded_many(cands, pp)
    ref = detections_frame(dec.recording, dec.run(pp.set_params({"iou_threshold": 0.4})))
    frames = [(i % 2, i // 2) for i in range(len(cands))]
    gt = ground_truth_from_detections(
        ref[ref["score"] > 0.55], [f"c{c}" for c in range(NC)], frames
    )
    grid = {
        "pre_cluster_threshold": [0.05, 0.3, 0.55, 0.9],
        "iou_threshold": [0.3, 0.45, 1.0],
        "post_cluster_threshold": [0.0, 0.5],
        "topk": [-1, 3],
    }
    cpu = search(dec, gt, grid, frames=frames)
    gpu = search(dec, gt, grid, frames=frames, device="cuda")
    assert gpu.table.equals(cpu.table) and gpu.best_params == cpu.best_params
    assert cpu.table["map50"].nunique() > 5
