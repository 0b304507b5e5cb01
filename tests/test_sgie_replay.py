"""SGIE replay batched over objects: decoders with an object-batched variant run once per block of
objects, and every result equals the per-object path (``pp(rec[row])``, one ``pp.run`` per object)
bit for bit: classifier and embedding heads, scale options, fused object filters, ``stop``, mixed GIEs,
row subsets, objects without tensors, frames without objects, several segments, user decoders with and
without a batched variant, and errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from dsprobe import FrameRecord, ObjectRecord, Recorder, open_recording
from dsprobe.detections import Detections
from dsprobe.nvinfer.geometry import nvinfer_transform
from dsprobe.postprocess import Postprocess, PostprocessError, StepContext
from dsprobe.postprocess.decoders.heads import (
    decode_classifier,
    decode_classifier_objects,
    decode_embedding,
    decode_embedding_objects,
    row_norms,
)
from dsprobe.postprocess.registry import ObjectBatch, batch_over_objects, batch_variant
from dsprobe.postprocess.scale import crop_mappings, crop_transform

NET = (64, 48)


def _rect(rng: np.random.Generator) -> tuple[float, float, float, float]:
    kind = rng.integers(5)
    if kind == 0:  # crossing the left / top edge
        return (float(rng.uniform(-30, 5)), float(rng.uniform(-30, 5)), 41.7, 33.3)
    if kind == 1:  # the smallest crop nvinfer takes (2x2 after even rounding), odd origin
        return (float(rng.integers(0, 900)) + 1.0, 13.0, 2.0, 3.9)
    if kind == 2:  # integer rect
        return tuple(float(v) for v in rng.integers(0, 600, 4) + [0, 0, 4, 4])
    return (
        float(rng.uniform(0, 1200)),
        float(rng.uniform(0, 700)),
        float(rng.uniform(2.5, 400)),
        float(rng.uniform(2.5, 300)),
    )


def _objects(rng, n, layers):
    out = []
    for _ in range(n):
        has = rng.random() > 0.15  # some objects have no SGIE tensors (not inferred on)
        out.append(
            ObjectRecord(
                rect=_rect(rng),
                class_id=int(rng.integers(4)),
                confidence=0.9,
                layers={k: f(rng) for k, f in layers.items()} if has else {},
            )
        )
    return out


def _probs(rng):
    p = rng.random(8).astype(np.float32)
    kind = rng.integers(6)
    if kind == 0:
        p[:] = 0  # nothing attached
    elif kind == 1:
        p[[2, 5]] = p.max() + 0.25  # a tie: the first index wins
    elif kind == 2:
        p[3] = np.nan
    elif kind == 3:
        p = (p * 40).astype(np.float32)  # logits: softmax overflows on some
        p[1] = 800.0
    return p / (1 if kind == 3 else max(float(p.sum()), 1e-6))


def _embedding(rng):
    e = rng.normal(size=128).astype(np.float32) * np.float32(rng.uniform(0.01, 50))
    kind = rng.integers(12)
    if kind == 0:
        e[:] = 0  # a zero vector stays zero
    elif kind == 1:
        e[7] = np.nan
    elif kind == 2:
        e[3] = np.inf
    return e


@pytest.fixture(scope="module")
def sgie_rec(tmp_path_factory):
    """PGIE frames (uid 1), two SGIEs: uid 2 (color (8,) + embedding (128,), 64x48 network) and
    uid 3 (logits (1, 5) float16, network size 0 = from the spec's geometry), in several segments."""
    rng = np.random.default_rng(20)
    path = tmp_path_factory.mktemp("sgie") / "sgie.h5"
    with Recorder(
        path,
        images=False,
        drop_when_full=False,
        segment_max_bytes=1,  # a new segment after every block write: several, whatever the timing
        block_frames=30,
        flush_interval_s=30,
    ) as rec:
        for k in range(60):
            rec.record(
                FrameRecord(
                    0,
                    k,
                    unique_id=1,
                    network_size=(320, 320, 3),
                    frame_size=(1280, 720),
                    layers={"output0": rng.random((6, 10)).astype(np.float32)},
                )
            )
            n = int(rng.integers(0, 12)) if k % 7 else 0  # some frames without objects
            rec.record(
                FrameRecord(
                    k % 2,
                    k,
                    unique_id=2,
                    network_size=(*NET, 3),
                    frame_size=(1280, 720) if k % 5 else (1920, 1080),
                    objects=_objects(rng, n, {"color": _probs, "embedding": _embedding}),
                )
            )
            rec.record(
                FrameRecord(
                    0,
                    k,
                    unique_id=3,
                    network_size=(0, 0, 0),
                    frame_size=(1280, 720),
                    objects=_objects(
                        rng,
                        int(rng.integers(0, 4)),
                        {"logits": lambda r: r.normal(size=(1, 5)).astype(np.float16)},
                    ),
                )
            )
    r = open_recording(path)
    assert 1 < len(r.paths) <= 180, "the fixture should span several segments"
    yield r
    r.close()


def _geometry(mar: bool, sym: bool):
    from dsprobe.nvinfer.config import parse_nvinfer_config

    cfg = parse_nvinfer_config(
        f"[property]\ninfer-dims=3;40;56\nmaintain-aspect-ratio={int(mar)}\n"
        f"symmetric-padding={int(sym)}\n"
    )
    return cfg.preprocessing


def _pp(decode: dict, *, mar=False, sym=False, filters=None, scale="nvinfer", version=7.1):
    steps = [{"kind": "decode", **decode}]
    if scale == "nvinfer":
        steps.append(
            {"kind": "scale", "name": "nvinfer", "params": {"deepstream_version": version}}
        )
    elif scale:
        steps.append({"kind": "scale", "name": scale})
    if filters is not None:
        steps.append({"kind": "filter", "name": "objects", "params": filters})
    return Postprocess(steps, geometry=_geometry(mar, sym))


def _sgie_rows(rec, uid=None):
    f = rec.frames
    m = f["unique_id"].to_numpy() != 1
    if uid is not None:
        m &= f["unique_id"].to_numpy() == uid
    return np.flatnonzero(m)


def same(a: Detections, b: Detections) -> bool:
    """Bit for bit (NaN payloads and signed zeros included): space, and every array's dtype, shape
    and bytes."""
    if a.space != b.space:
        return False
    for name in ("boxes", "scores", "class_ids", "keypoints", "vectors", "masks", "object_ids"):
        x, y = getattr(a, name), getattr(b, name)
        if (x is None) != (y is None):
            return False
        if x is not None and (
            x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes()
        ):
            return False
    return True


def _assert_same_as_per_object(pp, rec, rows, **kw):
    got = pp.detections_by_row(rec, rows, **kw)
    assert sorted(got) == sorted({int(r) for r in rows})
    n = 0
    for r in got:
        want = pp(rec[r]) if kw.get("stop") is None else _per_object(pp, rec[r], kw["stop"])
        assert same(got[r], want), (r, got[r], want)
        n += len(want)
    return n


def _per_object(pp, frame, stop):
    """``pp(frame)`` stopped after step ``stop`` (what the per-object path gives)."""
    from dsprobe.postprocess.replay import tag_parent

    parts = [
        tag_parent(pp.run(o.layers, pp.context(frame, tuple(o.rect)), stop=stop), k)
        for k, o in enumerate(frame.objects)
        if o.layers
    ]
    space = "frame" if stop >= len(pp.steps) else "network"  # detections_by_row's empty frame
    return Detections.concatenate(parts) if parts else Detections.empty(space)


CLASSIFIERS = [
    {"name": "classifier", "params": {"layer_names": ["color"], "classifier_threshold": 0.0}},
    {"name": "classifier", "params": {"layer_names": ["color"], "classifier_threshold": 0.3}},
    {"name": "classifier", "params": {"layer_names": ["color", "embedding"], "softmax": True}},
]
EMBEDDINGS = [
    {"name": "embedding", "params": {"layer": "embedding"}},
    {"name": "embedding", "params": {"layer": "embedding", "l2_normalize": False}},
]


@pytest.mark.parametrize("decode", CLASSIFIERS + EMBEDDINGS)
@pytest.mark.parametrize("mar,sym", [(False, False), (True, False), (True, True)])
def test_batched_sgie_replay_equals_per_object(sgie_rec, decode, mar, sym):
    pp = _pp(decode, mar=mar, sym=sym, version=9.1 if mar else 7.1)
    assert pp.batches_objects
    n = _assert_same_as_per_object(pp, sgie_rec, _sgie_rows(sgie_rec, 2))
    assert n > 30


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"detected_min_w": 20, "detected_max_h": 200, "filter_out_class_ids": [1]},
        {"roi_top_offset": 100, "roi_bottom_offset": 50, "crop_objects_to_roi_boundary": True},
        {"roi_top_offset": 100, "roi_bottom_offset": 50},
    ],
)
def test_fused_object_filters_equal_per_object(sgie_rec, filters):
    pp = _pp(CLASSIFIERS[0], filters=filters)
    _assert_same_as_per_object(pp, sgie_rec, _sgie_rows(sgie_rec, 2))


@pytest.mark.parametrize("stop", [1, 2])
def test_stop_and_scale_none_equal_per_object(sgie_rec, stop):
    for pp in (_pp(EMBEDDINGS[0]), _pp(CLASSIFIERS[1], scale="none")):
        _assert_same_as_per_object(pp, sgie_rec, _sgie_rows(sgie_rec, 2), stop=stop)


def test_mixed_gies_row_subsets_and_duplicates(sgie_rec):
    pp = _pp({"name": "classifier", "params": {}})  # every layer an attribute: fits uid 2 and 3
    rows = _sgie_rows(sgie_rec)
    rng = np.random.default_rng(1)
    _assert_same_as_per_object(pp, sgie_rec, rows)  # uid 3 frames: network size from the spec
    subset = rng.choice(rows, 25, replace=False)
    _assert_same_as_per_object(pp, sgie_rec, [*subset, subset[0]])  # unordered, a duplicate
    got = pp.detections_by_row(sgie_rec, [subset[3]])
    assert list(got) == [int(subset[3])]
    by_uid = pp.detections_by_row(sgie_rec, unique_id=3)
    assert set(by_uid) <= set(_sgie_rows(sgie_rec, 3).tolist()) and by_uid
    empty = pp.detections_by_row(sgie_rec, [])
    assert empty == {}


def test_frames_without_objects_or_tensors_give_empty_frame_detections(sgie_rec):
    f = sgie_rec.frames
    t = sgie_rec.object_table("objects")
    rows = _sgie_rows(sgie_rec, 2)
    no_objects = [int(r) for r in rows if f["object_count"].iloc[r] == 0]
    with_tensors = set(t.loc[t["layer_row"] >= 0, "row"].tolist())
    no_tensors = [int(r) for r in rows if f["object_count"].iloc[r] > 0 and r not in with_tensors]
    assert no_objects
    pp = _pp(EMBEDDINGS[0])
    got = pp.detections_by_row(sgie_rec, no_objects + no_tensors)
    for r in no_objects + no_tensors:
        assert len(got[r]) == 0 and got[r].space == "frame" and same(got[r], pp(sgie_rec[r]))
    # objects without tensors keep their place: the parent index counts every object of the frame
    mixed = [
        int(r)
        for r, g in t.groupby("row")
        if r in set(rows.tolist()) and (g["layer_row"] < 0).any() and (g["layer_row"] >= 0).any()
    ]
    assert mixed
    d = pp.detections_by_row(sgie_rec, mixed)
    for r in mixed:
        assert same(d[r], pp(sgie_rec[r]))
        layered = np.flatnonzero(t[t["row"] == r]["layer_row"].to_numpy() >= 0)
        assert d[r].object_ids.tolist() == layered.tolist()


def test_small_blocks_split_frames_across_blocks(sgie_rec, monkeypatch):
    import dsprobe.postprocess.replay as replay

    monkeypatch.setattr(replay, "OBJECT_BLOCK_BYTES", 1)  # blocks of `chunk` = 8 * batch objects
    for batch in (1, 3):
        # the classifier copies out of the reused read buffers; the unnormalised embedding's vectors
        # view them (the next block must then be read into a new buffer)
        for decode in (CLASSIFIERS[1], EMBEDDINGS[1]):
            _assert_same_as_per_object(_pp(decode), sgie_rec, _sgie_rows(sgie_rec, 2), batch=batch)


# ------------------------------------------------------------------ user decoders


def user_embedding(layers, ctx, *, layer: str = "embedding", scale: float = 1.0) -> Detections:
    """A user's decoder without a batched variant: the per-object path."""
    d = decode_embedding(layers, ctx, layer=layer)
    return Detections(
        d.boxes, d.scores * np.float32(scale), d.class_ids, "network", vectors=d.vectors
    )


def user_points_objects(layers, objects, *, score: float = 0.5):
    """Batched: two rows per object (in reverse order to check the owner sort), keypoints."""
    n = len(objects)
    e = np.asarray(layers["embedding"], np.float32).reshape(n, -1)
    owner = np.repeat(np.arange(n), 2)[::-1].copy()
    rows = [_points(e[k], objects.context.network_size, score) for k in range(n)]
    d = Detections.concatenate([rows[k] for k in range(n)])
    order = np.arange(2 * n).reshape(n, 2)[::-1].reshape(-1)  # owner reversed, rows kept per object
    return d[order], owner


@batch_over_objects(user_points_objects)
def user_points(layers, ctx, *, score: float = 0.5) -> Detections:
    e = np.asarray(layers["embedding"], np.float32).reshape(-1)
    return _points(e, ctx.network_size, score)


def _points(e, net, score):
    w, h = net
    b = np.abs(np.nan_to_num(e[:8], posinf=1, neginf=1)).reshape(2, 4) % np.float32(min(w, h) / 2)
    boxes = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:] + 1], axis=1).astype(np.float32)
    kp = np.concatenate([boxes[:, None, :2], np.full((2, 1, 1), 0.9, np.float32)], axis=2)
    return Detections(boxes, [score, score / 2], [0, 1], "network", keypoints=kp)


def broken_objects(layers, objects, *, score: float = 0.5):
    raise RuntimeError("this batch variant is broken")


def bad_owner_objects(layers, objects, *, score: float = 0.5):
    d, owner = user_points_objects(layers, objects, score=score)
    return d, owner + len(objects)


def test_user_decoder_without_a_batched_variant_runs_per_object(sgie_rec):
    pp = Postprocess(
        [
            {"kind": "decode", "name": user_embedding, "params": {"scale": 0.5}},
            {"kind": "scale", "name": "nvinfer"},
        ],
        geometry=_geometry(True, True),
    )
    assert not pp.batches_objects and batch_variant(user_embedding) is None
    _assert_same_as_per_object(pp, sgie_rec, _sgie_rows(sgie_rec, 2))


def test_user_decoder_with_a_batched_variant_and_keypoints(sgie_rec):
    pp = Postprocess(
        [
            {"kind": "decode", "name": user_points, "params": {"score": 0.7}},
            {"kind": "filter", "name": "threshold", "params": {"pre_cluster_threshold": 0.5}},
            {"kind": "scale", "name": "nvinfer"},
        ],
        geometry=_geometry(True, True),
    )
    assert pp.batches_objects and batch_variant(user_points) is user_points_objects
    calls = []
    orig = Postprocess.run_objects

    def spy(self, layers, objects, **kw):
        calls.append(len(objects))
        return orig(self, layers, objects, **kw)

    Postprocess.run_objects = spy
    try:
        n = _assert_same_as_per_object(pp, sgie_rec, _sgie_rows(sgie_rec, 2))
    finally:
        Postprocess.run_objects = orig
    assert n > 100 and calls and max(calls) > 50  # whole blocks, not single objects
    # the threshold step has no batched variant: it and the scale ran per object after the decode
    no_filter = Postprocess(
        [
            {"kind": "decode", "name": user_points, "params": {"score": 0.7}},
            {"kind": "scale", "name": "nvinfer"},
        ],
        geometry=pp.geometry,
    )
    _assert_same_as_per_object(no_filter, sgie_rec, _sgie_rows(sgie_rec, 2))


@pytest.mark.parametrize("variant", [broken_objects, bad_owner_objects])
def test_a_failing_batched_variant_falls_back_per_object_with_a_warning(sgie_rec, variant):
    def decoder(layers, ctx, *, score: float = 0.5) -> Detections:
        return user_points(layers, ctx, score=score)

    decoder.__qualname__ = decoder.__name__ = f"decoder_{variant.__name__}"
    batch_over_objects(variant)(decoder)
    pp = Postprocess([{"kind": "decode", "name": decoder}, {"kind": "scale", "name": "nvinfer"}])
    with pytest.warns(RuntimeWarning, match="object-batched path failed"):
        _assert_same_as_per_object(pp, sgie_rec, _sgie_rows(sgie_rec, 2)[:10])


def test_errors_are_the_per_object_errors(sgie_rec, tmp_path):
    pp = _pp({"name": "embedding", "params": {"layer": "nope"}})
    rows = _sgie_rows(sgie_rec, 2)
    with pytest.raises(PostprocessError) as batched, warnings.catch_warnings():
        warnings.simplefilter("error")
        pp.detections_by_row(sgie_rec, rows)
    r = next(int(r) for r in rows if sgie_rec.frames["object_count"].iloc[r])
    with pytest.raises(PostprocessError) as single:
        pp(sgie_rec[r])
    assert str(batched.value) == str(single.value) and "step 0 (decode 'embedding')" in str(
        single.value
    )
    # a rect nvinfer cannot crop (under 2x2 after even rounding): the scale step's error
    with Recorder(tmp_path / "tiny.h5", images=False, drop_when_full=False) as rec:
        rec.record(
            FrameRecord(
                0,
                0,
                unique_id=2,
                network_size=(*NET, 3),
                frame_size=(1280, 720),
                objects=[
                    ObjectRecord(
                        rect=(10, 10, 30, 30), layers={"embedding": np.ones(4, np.float32)}
                    ),
                    ObjectRecord(
                        rect=(10, 10, 1.5, 30), layers={"embedding": np.ones(4, np.float32)}
                    ),
                ],
            )
        )
    with open_recording(tmp_path / "tiny.h5") as tiny:
        pp = _pp(EMBEDDINGS[0])
        with pytest.raises(PostprocessError) as batched:
            pp.detections_by_row(tiny)
        with pytest.raises(PostprocessError) as single:
            pp(tiny[0])
        assert str(batched.value) == str(single.value) and "2x2" in str(single.value)


# ------------------------------------------------------------------ the pieces, on random arrays


def _batch(n, net=NET, rng=None):
    rng = rng or np.random.default_rng(0)
    rects = np.array([_rect(rng) for _ in range(n)], np.float32).astype(np.float64)
    ctx = StepContext(network_size=net, frame_size=(1280, 720))
    return ObjectBatch(ctx, rects)


@pytest.mark.parametrize("softmax", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_batched_classifier_decoder_equals_each_object(softmax, dtype):
    rng = np.random.default_rng(5)
    n = 400
    layers = {
        "a": np.stack([_probs(rng) for _ in range(n)]).astype(dtype),
        "b": rng.normal(size=(n, 1, 3)).astype(dtype) * 30,
        "empty": np.zeros((n, 0), dtype),
    }
    objects = _batch(n)
    for thr in (-1.0, 0.0, 0.4, 0.9):  # below 0: nvinfer's '> 0' still holds
        params = {
            "classifier_threshold": thr,
            "softmax": softmax,
            "layer_names": ["a", "empty", "b"],
        }
        got, owner = decode_classifier_objects(layers, objects, **params)
        for k in range(n):
            want = decode_classifier(
                {m: a[k] for m, a in layers.items()}, objects.object_context(k), **params
            )
            assert same(got[owner == k], want), k
    assert set(np.unique(owner)) != set(range(n))  # some objects got no attribute


def test_batched_embedding_decoder_equals_each_object():
    rng = np.random.default_rng(6)
    for d in (1, 3, 128, 257):
        n = 200
        e = np.tile(np.stack([_embedding(rng) for _ in range(n)]), (1, 3))[:, :d].copy()
        e[::17] = 0
        objects = _batch(n)
        for l2 in (True, False):
            for layers in ({"e": e}, {"e": e.astype(np.float16)}, {"e": e.reshape(n, 1, d)}):
                got, owner = decode_embedding_objects(layers, objects, l2_normalize=l2)
                assert owner.tolist() == list(range(n))
                for k in range(n):
                    want = decode_embedding(
                        {"e": layers["e"][k]}, objects.object_context(k), l2_normalize=l2
                    )
                    assert same(got[k], want), (d, k)
    # the norm of each row is the dot product np.linalg.norm computes for one vector, in float64
    # (a row-wise reduction differs in the last bits of about a fifth of the rows)
    x = np.random.default_rng(8).normal(size=(3001, 128))[1:]
    want = np.array([np.linalg.norm(r) for r in x])
    assert row_norms(x).tobytes() == want.tobytes()
    one = np.float32([3, 4])
    got, _ = decode_embedding_objects({"e": one[None]}, _batch(1))
    assert got.vectors.tolist() == [[0.6000000238418579, 0.800000011920929]]


@pytest.mark.parametrize("mar,sym", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("net", [(64, 48), (48, 64), (7, 5)])
def test_crop_mappings_equal_nvinfer_transform(mar, sym, net):
    rng = np.random.default_rng(7)
    rects = np.array([_rect(rng) for _ in range(500)], np.float32).astype(np.float64)
    m = crop_mappings(rects, net, mar, sym)
    for k, r in enumerate(rects):
        t = crop_transform(
            StepContext(network_size=net, crop_rect=tuple(r)),
            maintain_aspect_ratio=mar,
            symmetric_padding=sym,
        )
        assert t.transform == nvinfer_transform(
            tuple(r), net, maintain_aspect_ratio=mar, symmetric_padding=sym
        )
        assert np.array_equal(m.offset[k], t.offset) and np.array_equal(m.ratio[k], t.ratio)
        assert np.array_equal(m.origin[k], t.origin) and tuple(m.rect_origin[k]) == t.rect[:2]
    with pytest.raises(ValueError, match="2x2"):
        crop_mappings(np.array([[0.0, 0.0, 1.9, 10.0]]), net, mar, sym)
    with pytest.raises(ValueError, match="finite"):
        crop_mappings(np.array([[np.nan, 0.0, 10.0, 10.0]]), net, mar, sym)


def test_run_objects_on_no_objects_and_read_layer_without_copying_the_table(sgie_rec, monkeypatch):
    pp = _pp(EMBEDDINGS[0])
    d, owner = pp.run_objects({"embedding": np.zeros((0, 128), np.float32)}, _batch(0))
    assert len(d) == 0 and owner.shape == (0,)
    t = sgie_rec.object_table("objects")
    rows = np.flatnonzero(
        (t["layer_row"].to_numpy() >= 0)
        & (sgie_rec.frames["unique_id"].to_numpy()[t["row"].to_numpy()] == 2)
    )
    want = sgie_rec.read_layer("embedding", rows)

    def no_copy(*a, **k):
        raise AssertionError("read_layer copied the objects table")

    monkeypatch.setattr(sgie_rec, "object_table", no_copy)
    got = np.concatenate(
        [sgie_rec.read_layer("embedding", rows[a : a + 7]) for a in range(0, len(rows), 7)]
    )
    assert np.array_equal(got, want, equal_nan=True)
    with pytest.raises(KeyError, match="has no layer 'embedding' of GIE 2"):
        sgie_rec.read_layer("embedding", [int(np.flatnonzero(t["layer_row"].to_numpy() < 0)[0])])
