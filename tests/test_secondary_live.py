"""The live SGIE path through tests/pyds_double.py, a TEST DOUBLE of pyds (no DeepStream here): the
secondary sample's recorded tensors go onto the detector's objects as SGIE tensor meta; the tuned
classifier postprocess attaches NvDsClassifierMeta + NvDsLabelInfo to each object and the embedding
postprocess its vector as user meta, both equal to the replay of the same recording."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pyds_double as pyds
import pytest

from dsprobe import classifier_postprocess, embedding_postprocess, open_recording
from dsprobe.deepstream import attach_postprocess, read_vector_user_meta
from dsprobe.deepstream.meta import classifications
from dsprobe.sample import SECONDARY_CONFIG_PATH, SECONDARY_LABELS

MUX = (1280, 720)
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True)
def double():
    with pyds.installed():
        yield pyds


@pytest.fixture(scope="module")
def sgie_recording(tmp_path_factory):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("av")
    from dsprobe.sample import ensure_secondary_recording

    return ensure_secondary_recording(tmp_path_factory.mktemp("live") / "s.h5", seconds=0.4)


def vectors_on(om):
    kind = pyds.nvds_get_user_meta_type("DSPROBE.VECTOR.USER_META")
    return [
        read_vector_user_meta(pyds, um) for um in om._user if int(um.base_meta.meta_type) == kind
    ]


def test_live_sgie_classifier_and_embedding_meta_equal_replay(sgie_recording):
    cls = classifier_postprocess(SECONDARY_CONFIG_PATH, ["color"], classifier_threshold=0.6)
    emb = embedding_postprocess(SECONDARY_CONFIG_PATH, "embedding")
    pipe = pyds.Pipeline(MUX)
    sgie = pyds.GieOutput(
        2, {"color": (0, (8,)), "embedding": (0, (128,))}, pyds.NvDsInferNetworkInfo(64, 64, 3)
    )
    c_probe = attach_postprocess(pipe.pad, cls, unique_id=2, output="classifier", muxer_size=MUX)
    e_probe = attach_postprocess(pipe.pad, emb, unique_id=2, output="embedding", muxer_size=MUX)
    example = load_example()
    seen, described = [], []  # downstream of both: what a tracker / app probe would read
    pipe.pad.add_probe(
        16,
        lambda pad, info, ud: (
            seen.extend((classifications(pyds, om), vectors_on(om)) for om in fm._objects),
            described.extend(example.describe(pyds, om) for om in fm._objects),
        ),
        None,
    )
    with open_recording(sgie_recording) as rec:
        rows = np.flatnonzero(rec.frames["unique_id"].to_numpy() == 2)
        replay_c = cls.detections_by_row(rec, rows)
        replay_e = emb.detections_by_row(rec, rows)
        n_objects = 0
        for r in rows:
            f = rec[int(r)]
            fm = pipe.frame(f.source_id, f.frame_num, 0, MUX)
            for o in f.objects:  # the PGIE's object with the SGIE's tensor meta on it
                om = pipe.obj(o.rect, o.class_id, o.confidence, component=1, label=o.label)
                om._user.append(pipe.tensor_meta(sgie, o.layers))
                fm._objects.append(om)
            start = len(seen)
            pipe.push([fm])
            got = seen[start:]
            c, e = replay_c[int(r)], replay_e[int(r)]
            assert len(got) == len(f.objects) == len(e)
            for k, (labels, vecs) in enumerate(got):
                n_objects += 1
                (vec,) = vecs  # one vector per object, on the object the SGIE ran on
                np.testing.assert_array_equal(vec, e.vectors[k])
                hit = np.flatnonzero(c.object_ids == k)
                if not len(hit):  # below classifier-threshold: no classifier meta, as nvinfer
                    assert labels == []
                    continue
                (lab,) = labels
                j = int(hit[0])
                assert (lab.unique_component_id, lab.attribute) == (2, 0)
                assert lab.class_id == c.class_ids[j]
                assert lab.label == SECONDARY_LABELS[lab.class_id]
                assert lab.confidence == pytest.approx(float(c.scores[j]), abs=1e-7)
    assert n_objects > 20 and len(described) == n_objects
    assert any(": " + name in d for d in described for name in SECONDARY_LABELS)
    assert all("embedding 128-d [" in d for d in described)
    assert c_probe.stats["error_count"] == e_probe.stats["error_count"] == 0
    assert c_probe.callback.classifier_metas_added > 0.9 * n_objects
    assert e_probe.callback.vectors_added == n_objects
    # no NvDsObjectMeta was added: the results live on the objects the SGIE ran on
    assert c_probe.callback.objects_added == e_probe.callback.objects_added == 0


def test_embedding_output_on_frame_level_tensors_is_an_error_not_a_crash():
    pipe = pyds.Pipeline(MUX)
    gie = pyds.GieOutput(1, {"embedding": (0, (4,))})
    emb = embedding_postprocess(SECONDARY_CONFIG_PATH, "embedding")
    probe = attach_postprocess(pipe.pad, emb, unique_id=1, output="embedding", muxer_size=MUX)
    fm = pipe.frame(0, 0, 0, MUX)
    fm._user.append(pipe.tensor_meta(gie, {"embedding": np.float32([1, 0, 0, 0])}))
    pipe.push([fm])
    assert probe.stats["errors"] == {"frame:ValueError": 1}


def load_example():
    sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(
        "deepstream_secondary", EXAMPLES / "deepstream_secondary.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_example_app_flags():
    args = load_example().parse_args(
        [
            "--pgie",
            "p.txt",
            "--spec",
            "s.json",
            "--sgie",
            "s2.txt",
            "--classifier-threshold",
            "0.6",
            "file:///v.mp4",
        ]
    )
    assert (args.classifier_threshold, args.color_layer, args.embedding_layer) == (
        0.6,
        "color",
        "embedding",
    )
    assert args.muxer == (1280, 720) and args.uris == ["file:///v.mp4"]
