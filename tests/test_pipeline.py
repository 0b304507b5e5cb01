"""Postprocess: the spec (from an nvinfer config, JSON round trip, user steps, errors), running it
against the transcription of nvinfer's whole chain, SGIE frames and the recording fast paths."""

from __future__ import annotations

import json

import numpy as np
import nvinfer_reference as ref
import pytest

from dsprobe.detections import Detections
from dsprobe.nvinfer.config import load_nvinfer_config, parse_nvinfer_config
from dsprobe.postprocess import Postprocess, PostprocessError, Step
from dsprobe.postprocess.registry import StepContext
from dsprobe.records import FrameRecord, ObjectRecord

CTX = StepContext(network_size=(640, 640), frame_size=(1280, 720))


def rows_decoder(layers, ctx, *, score_threshold: float = 0.0):
    """A tiny local decoder: layer "o" (N, 6) = x1, y1, x2, y2, score, class (network pixels)."""
    a = np.asarray(layers["o"], np.float32).reshape(-1, 6)
    a = a[a[:, 4] >= score_threshold]
    return Detections(a[:, :4], a[:, 4], a[:, 5].astype(np.int32), "network")


def config(text: str):
    return parse_nvinfer_config("[property]\nnum-detected-classes=3\ninfer-dims=3;320;320\n" + text)


# ---------------------------------------------------------------------------------------------- from a config
def test_from_nvinfer_config_per_cluster_mode():
    steps = lambda pp: [(s.kind, s.name) for s in pp.steps]  # noqa: E731
    nms = Postprocess.from_nvinfer_config(
        config(
            "cluster-mode=2\nmaintain-aspect-ratio=1\n[class-attrs-all]\n"
            "nms-iou-threshold=0.45\ntopk=30\n[class-attrs-1]\n"
            "pre-cluster-threshold=0.6\n"
        ),
        decoder="yolov8",
        score_threshold=0.1,
    )
    assert steps(nms) == [
        ("decode", "yolov8"),
        ("filter", "threshold"),
        ("cluster", "nms"),
        ("scale", "nvinfer"),
        ("filter", "objects"),
    ]
    assert nms.steps[0].params == {"score_threshold": 0.1}  # **decoder_params
    assert nms.steps[1].params == {"pre_cluster_threshold": [0.2, 0.6, 0.2], "num_classes": 3}
    assert nms.steps[2].params == {"iou_threshold": 0.45, "post_cluster_threshold": 0.0, "topk": 30}
    assert nms.steps[3].params["maintain_aspect_ratio"] is True and nms.geometry.network_size == (
        320,
        320,
    )
    assert nms.steps[4].params == {}  # nvinfer's object checks with every key at its default
    mode0 = Postprocess.from_nvinfer_config(
        config("[class-attrs-all]\ngroup-threshold=2\neps=0.3\n"), opencv_build=True
    )
    assert mode0.step("cluster").name == "group_rectangles"
    assert mode0.step("cluster").params == {
        "group_threshold": 2,
        "eps": 0.3,
        "post_cluster_threshold": 0.0,
        "opencv_build": True,
    }
    assert Postprocess.from_nvinfer_config(config("cluster-mode=4\n")).step("cluster").params == {
        "topk": -1
    }
    hybrid = Postprocess.from_nvinfer_config(
        config("cluster-mode=3\n[class-attrs-all]\nminBoxes=3\n")
    )
    assert (
        hybrid.step("cluster").name == "dbscan"
        and hybrid.step("cluster").params["then_nms"] is True
    )
    filt = Postprocess.from_nvinfer_config(
        config(
            "filter-out-class-ids=1;2\ncrop-objects-to-roi-boundary=1\n"
            "[class-attrs-all]\nroi-top-offset=8\n[class-attrs-2]\n"
            "detected-min-w=30\n"
        ),
        deepstream_version=9.1,
    )
    assert filt.steps[-1].params == {
        "filter_out_class_ids": [1, 2],
        "detected_min_w": [0, 0, 30],
        "roi_top_offset": 8,
        "crop_objects_to_roi_boundary": True,
    }
    assert filt.step("scale").params["deepstream_version"] == 9.1


def test_spec_round_trip_is_versioned_readable_json(tmp_path):
    cfg = load_nvinfer_config("tests/data/configs/pgie_yolo.txt")
    pp = Postprocess.from_nvinfer_config(cfg, labels=[str(i) for i in range(80)])
    d = pp.to_dict()
    assert d["format"] == "dsprobe-postprocess" and d["version"] == 1
    assert (
        d["geometry"]["maintain_aspect_ratio"] is True
        and d["labels"][2] == "2"
        and d["num_classes"] == 80
    )
    assert d["steps"][1]["params"]["pre_cluster_threshold"][2] == pytest.approx(0.6)
    path = pp.save(tmp_path / "spec.json")
    text = path.read_text()
    assert '\n  "steps": [' in text  # indented, one key per line
    back = Postprocess.load(path)
    assert back.to_dict() == d and repr(back) == repr(pp)
    (tmp_path / "newer.json").write_text(json.dumps(dict(d, version=99)))
    with pytest.raises(PostprocessError, match=r"newer.json: postprocess spec version 99 is newer"):
        Postprocess.load(tmp_path / "newer.json")
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(PostprocessError, match=r"other.json: not a dsprobe postprocess spec"):
        Postprocess.load(tmp_path / "other.json")


def test_user_steps_by_object_and_by_module_string(tmp_path, monkeypatch):
    (tmp_path / "my_steps.py").write_text(
        "import numpy as np\n"
        "from dsprobe.detections import Detections\n"
        "def decode(layers, ctx, *, scale: float = 1.0):\n"
        "    a = np.asarray(layers['o'], np.float32)\n"
        "    return Detections(a[:, :4] * scale, a[:, 4], a[:, 5].astype(np.int32), 'network')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_steps

    layers = {"o": np.array([[10, 10, 20, 20, 0.9, 1]], np.float32)}
    by_object = Postprocess(
        [Step("decode", my_steps.decode, {"scale": 2.0}), Step("scale", "none")]
    )
    assert by_object.steps[0].name == "my_steps:decode"
    assert by_object.run(layers, CTX).boxes.tolist() == [[20, 20, 40, 40]]
    by_object.save(tmp_path / "user.json")
    with pytest.raises(
        PostprocessError, match=r"'my_steps:decode' refers to user code; pass allow_import=True"
    ):
        Postprocess.load(tmp_path / "user.json")
    loaded = Postprocess.load(tmp_path / "user.json", allow_import=True)
    assert loaded.run(layers, CTX).equals(by_object.run(layers, CTX))
    with pytest.raises(
        PostprocessError, match=r"param 'scale' = 'big' \(str\) does not fit; expected float"
    ):
        Postprocess([Step("decode", my_steps.decode, {"scale": "big"})])


def test_errors_name_the_step_the_param_and_what_was_expected():
    with pytest.raises(
        PostprocessError, match=r"step 1 \(cluster 'nmz'\): unknown cluster step 'nmz'; registered"
    ):
        Postprocess([{"kind": "decode", "name": "yolov8"}, {"kind": "cluster", "name": "nmz"}])
    with pytest.raises(
        PostprocessError,
        match=r"step 1 \(cluster 'nms'\): param 'iou_threshold' = 'high' \(str\) "
        r"does not fit; expected .*float",
    ):
        Postprocess(
            [
                {"kind": "decode", "name": "yolov8"},
                {"kind": "cluster", "name": "nms", "params": {"iou_threshold": "high"}},
            ]
        )
    with pytest.raises(
        PostprocessError, match=r"param 'maintain_aspect_ratio' = 'yes' .*expected bool \| None"
    ):
        Postprocess(
            [
                {"kind": "decode", "name": "yolov8"},
                {"kind": "scale", "name": "nvinfer", "params": {"maintain_aspect_ratio": "yes"}},
            ]
        )
    with pytest.raises(
        PostprocessError, match=r"unknown param 'iou'; expected one of \['iou_threshold', "
    ):
        Postprocess(
            [
                {"kind": "decode", "name": "yolov8"},
                {"kind": "cluster", "name": "nms", "params": {"iou": 1}},
            ]
        )
    with pytest.raises(PostprocessError, match="starts with exactly one 'decode' step"):
        Postprocess([{"kind": "cluster", "name": "nms"}])
    with pytest.raises(PostprocessError, match=r"step 0: missing 'name'"):
        Postprocess([{"kind": "decode"}])
    pp = Postprocess([{"kind": "decode", "name": "yolov8", "params": {"layer": "output0"}}])
    with pytest.raises(
        PostprocessError,
        match=r"step 0 \(decode 'yolov8'\): .*could not find layer 'output0'; "
        r"the recorded layers are 'x'",
    ):
        pp.run({"x": np.zeros((6, 3), np.float32)}, CTX)
    bad_shape = Postprocess([{"kind": "decode", "name": "yolov8"}])
    with pytest.raises(
        PostprocessError,
        match=r"step 0 \(decode 'yolov8'\): .*could not find .*2.*\(found 0\); the "
        r"recorded layers are 'output0' float32\[2, 6, 3\]",
    ):
        bad_shape.run({"output0": np.zeros((2, 6, 3), np.float32)}, CTX)


# ---------------------------------------------------------------------------------------------- vs nvinfer
@pytest.mark.parametrize("mode", [2, 0, 4])
def test_whole_chain_is_bit_identical_to_the_nvinfer_transcription(mode):
    rng = np.random.default_rng(mode)
    for case in range(150):
        nc = 3
        n = int(rng.integers(0, 40))
        xy = rng.uniform(-20, 300, (n, 2))
        a = np.concatenate(
            [
                xy,
                xy + rng.uniform(0, 80, (n, 2)),
                rng.choice([0.2, 0.4, 0.6, 0.8], (n, 1)),
                rng.integers(0, nc + 1, (n, 1)),
            ],
            1,
        ).astype(np.float32)  # class 3: unknown
        text = (
            f"cluster-mode={mode}\nmaintain-aspect-ratio={case % 2}\nsymmetric-padding={case // 2 % 2}\n"
            f"[class-attrs-all]\npre-cluster-threshold=0.4\nnms-iou-threshold=0.3\ntopk={case % 5}\n"
            f"post-cluster-threshold=0.4\nroi-bottom-offset={case % 3 * 40}\ndetected-min-w={case % 4 * 10}\n"
        )
        pp = Postprocess.from_nvinfer_config(
            config(text), decoder=rows_decoder, deepstream_version=9.1
        )
        crop = (
            None
            if case % 3
            else (
                float(np.float32(rng.uniform(0, 600))),
                float(np.float32(rng.uniform(0, 300))),
                float(np.float32(rng.uniform(50, 600))),
                float(np.float32(rng.uniform(50, 400))),
            )
        )
        ctx = StepContext((320, 320), (1280, 720), crop_rect=crop)
        got = pp.run({"o": a}, ctx)
        objs = ref.pre_clustering_threshold(
            ref.objects_from_boxes(a[:, :4], a[:, 4], a[:, 5].astype(int)), nc, [0.4] * nc
        )
        lists = ref.split_per_class(objs, nc)
        if mode == 2:
            clustered = ref.cluster_nms(lists, [0.3] * nc, [0.4] * nc, [case % 5] * nc)
        elif mode == 0:  # no OpenCV: NMS(0.5, top-20), post-cluster threshold kept
            clustered = ref.cluster_nms(lists, [0.5] * nc, [0.4] * nc, [20] * nc)
        else:  # mode 4 sorts classes that nvinfer leaves in parser order (topk < 0 is not drawn here)
            clustered = ref.fill_unclustered(lists, [case % 5] * nc)
        geometry = ref.converted_buffer_geometry(
            crop or (0, 0, 1280, 720), 320, 320, case % 2 == 1, case // 2 % 2 == 1
        )
        fp = [
            ref.FilterParams(roi_bottom_offset=case % 3 * 40, detection_min_width=case % 4 * 10)
        ] * nc
        want = ref.attach_metadata_detector(
            clustered, geometry, 1280, 720, fp, clamp_negative=True, parent_rect=crop
        )
        assert got.class_ids.tolist() == [o.class_id for o in want], case
        np.testing.assert_array_equal(
            got.boxes, np.array([ref.box_of(o) for o in want], np.float32).reshape(-1, 4)
        )
        np.testing.assert_array_equal(got.scores, np.array([o.conf for o in want], np.float32))


# ---------------------------------------------------------------------------------------------- frames, recordings
def sgie_frame(frame_num: int = 0) -> FrameRecord:
    obj = ObjectRecord(
        rect=(100.5, 50.5, 64, 32),
        layers={"o": np.array([[0, 0, 32, 16, 0.9, 1], [0, 0, 4, 4, 0.2, 1]], np.float32)},
    )
    obj2 = ObjectRecord(
        rect=(300.0, 200.0, 64, 64),
        layers={"o": np.array([[8, 8, 16, 16, 0.8, 0], [0, 0, 4, 4, 0.1, 0]], np.float32)},
    )
    return FrameRecord(
        0,
        frame_num,
        unique_id=2,
        network_size=(64, 32, 3),
        frame_size=(1280, 720),
        objects=[ObjectRecord(rect=(0, 0, 10, 10)), obj, obj2],
    )


SGIE_SPEC = [
    {"kind": "decode", "name": "xyxy_score_class", "params": {"score_threshold": 0.5}},
    {"kind": "scale", "name": "nvinfer"},
]


def test_sgie_frames_run_per_object_with_the_parent_index():
    d = Postprocess(SGIE_SPEC)(sgie_frame())
    # object 1: 64x32 crop into 64x32, ratio 1, plus the parent's unrounded left/top
    # object 2: 64x64 crop stretched into 64x32 (maintain-aspect-ratio=0): y ratio 0.5
    assert d.boxes.tolist() == [[100.5, 50.5, 132.5, 66.5], [308, 216, 316, 232]]
    assert d.object_ids.tolist() == [1, 2]  # the parents' positions in frame.objects
    assert (
        Postprocess(SGIE_SPEC)(FrameRecord(0, 0, unique_id=2, frame_size=(1280, 720))).space
        == "frame"
    )


def test_run_recording_fast_path_equals_per_frame_pgie_and_sgie(tmp_path):
    from dsprobe import Recorder, open_recording

    rng = np.random.default_rng(3)
    with Recorder(tmp_path / "r.h5", images=False) as rec:
        for k in range(20):
            a = np.zeros((8, 50), np.float32)
            a[:2] = rng.uniform(0, 320, (2, 50))
            a[2:4] = rng.uniform(5, 40, (2, 50))
            a[4:] = rng.random((4, 50))
            rec.record(
                FrameRecord(
                    k % 2,
                    k // 2,
                    unique_id=1,
                    network_size=(320, 320, 3),
                    frame_size=(1280, 720),
                    layers={"output0": a},
                )
            )
            rec.record(sgie_frame(k))
    r = open_recording(tmp_path / "r.h5")
    cfg = parse_nvinfer_config(
        "[property]\nnum-detected-classes=4\ncluster-mode=2\nmaintain-aspect-ratio=1\n"
        "symmetric-padding=1\ninfer-dims=3;320;320\n[class-attrs-all]\n"
        "pre-cluster-threshold=0.5\n"
    )
    pp = Postprocess.from_nvinfer_config(cfg)
    pgie_rows = np.flatnonzero(r.frames["unique_id"].to_numpy() == 1)
    df = pp.run_recording(r, unique_id=1, batch=7)
    assert set(df["row"]) <= set(pgie_rows) and len(df) > 20
    per_row = pp.detections_by_row(r, unique_id=1, batch=7)
    for i in pgie_rows:
        want = pp(r[int(i)])
        assert per_row[int(i)].equals(want)
        np.testing.assert_array_equal(
            df[df["row"] == i][["x1", "y1", "x2", "y2"]].to_numpy(), want.boxes
        )
    sg = Postprocess(SGIE_SPEC)
    sgie_rows = np.flatnonzero(r.frames["unique_id"].to_numpy() == 2)
    by_row = sg.detections_by_row(r, unique_id=2, batch=2)  # 16 objects per read
    assert sorted(by_row) == sorted(sgie_rows.tolist())
    for i in sgie_rows:
        assert by_row[int(i)].equals(sg(r[int(i)])) and len(by_row[int(i)]) == 2
    sdf = sg.run_recording(r, unique_id=2)
    assert sdf["object_id"].tolist() == [1, 2] * len(sgie_rows)
    with pytest.raises(
        PostprocessError, match="per-object \\(SGIE\\) tensors; it caches PGIE frames only"
    ):
        sg.decode_recording(r, unique_id=2)
    dec = pp.decode_recording(r, unique_id=1)
    for thr in (0.5, 0.9):
        tuned = pp.with_params("filter", pre_cluster_threshold=thr).with_params(
            "cluster", iou_threshold=0.3
        )
        again = dec.run(tuned)
        assert all(again[int(i)].equals(tuned(r[int(i)])) for i in pgie_rows)
    with pytest.raises(PostprocessError, match="come from another decode step"):
        dec.run(pp.with_params("decode", score_threshold=0.3))
