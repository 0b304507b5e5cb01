"""Proof that offline == live: for every frame of the sample recording, the detections the live paths
produce are bit-identical (as NvDsObjectMeta rects, scores, classes) to the notebook's replay with the
same exported spec. The DeepStream path runs through tests/pyds_double.py, a TEST DOUBLE of pyds."""

from __future__ import annotations

import numpy as np
import pyds_double as pyds

from dsprobe import Postprocess, open_recording
from dsprobe.deepstream import bindings
from dsprobe.deepstream.live import PostprocessProbe
from dsprobe.reference.recorder import record_onnx
from dsprobe.sample import CONFIG_PATH


def tuned_spec(rec, tmp_path):
    pp = Postprocess.from_nvinfer_config(rec.config())
    pp = pp.with_params("filter", pre_cluster_threshold=0.1).with_params(
        "cluster", iou_threshold=0.5, topk=50
    )
    return Postprocess.load(pp.save(tmp_path / "tuned.json"))  # what the notebook exports


def test_deepstream_adapter_equals_replay_on_every_frame(sample_recording, tmp_path):
    rec = open_recording(sample_recording)
    spec = tuned_spec(rec, tmp_path)
    pyds.reset()
    bindings.use_bindings(pyds, pyds.Gst)
    try:
        pipe = pyds.Pipeline((1280, 720))
        gie = pyds.GieOutput(1, {"output0": (0, (8, 2100))}, pyds.NvDsInferNetworkInfo(320, 320, 3))
        probe = PostprocessProbe(str(tmp_path / "tuned.json"), muxer_size=(1280, 720))
        pipe.pad.add_probe(pyds.Gst.PadProbeType.BUFFER, probe, None)
        equal = 0
        for i in range(len(rec)):
            f = rec[i]
            fm = pipe.frame(f.source_id, f.frame_num, 0, (960, 540))
            fm._user.append(pipe.tensor_meta(gie, {"output0": f.tensors["output0"]}))
            pipe.push([fm])
            o = fm._objects
            replay = spec(f)
            rects = np.array(
                [
                    [
                        m.rect_params.left,
                        m.rect_params.top,
                        m.rect_params.width,
                        m.rect_params.height,
                    ]
                    for m in o
                ],
                np.float32,
            ).reshape(-1, 4)
            scores = np.array([m.confidence for m in o], np.float32)
            classes = np.array([m.class_id for m in o], np.int32)
            if (
                np.array_equal(rects, replay.to_rects())
                and np.array_equal(scores, replay.scores)
                and np.array_equal(classes, replay.class_ids)
            ):
                equal += 1
        assert equal == len(rec) == 60
        assert not probe.stats.errors and probe.objects_added > 100
    finally:
        bindings.use_bindings(None, None)


def test_reference_recorder_live_equals_replay_on_every_frame(
    sample_recording, sample_videos, tmp_path
):
    rec = open_recording(sample_recording)
    spec = tuned_spec(rec, tmp_path)
    out = tmp_path / "live.h5"
    record_onnx(
        sample_videos.paths,
        CONFIG_PATH,
        None,
        out,
        batch=2,
        postprocess=spec,
        images=False,
        progress=False,
    )
    live = open_recording(out)
    assert len(live) == len(rec) == 60
    same = sum(
        live[i].detections.same_objects(spec(rec.find(live[i].source_id, live[i].frame_num)))
        for i in range(len(live))
    )
    assert same == 60
