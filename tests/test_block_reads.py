"""``Recording.read_layer``'s block reads (straight into the result, run by run, or one span picked
out) give exactly the rows a frame-by-frame read gives, in every order, across segments, into
``out=``, for frame-level and per-object layers."""

import numpy as np
import pytest

from dsprobe import FrameRecord, ObjectRecord, Recorder, open_recording

#: row sizes that take each read strategy: small rows with small gaps are read as one span and
#: picked out; big rows run by run; one frame per chunk and many frames per chunk
SIZES = {"tiny": 24, "mid": 20_000, "big": 300_000}
#: floats of the per-object layer (120 KB: segments rotate within a few frames)
EMB = 30_000


def value(n: int, size: int, uid: int = 1) -> np.ndarray:
    return (np.arange(size, dtype=np.float32) % 97) + 1000 * n + 100_000 * uid


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    """Two GIEs interleaved over several segment files, three layer sizes, 40 frames."""
    path = tmp_path_factory.mktemp("blocks") / "run.h5"
    with Recorder(
        path, segment_max_bytes=10_000_000, flush_interval_s=0.01, block_frames=3, images=False
    ) as rec:
        for n in range(40):
            uid = 1 if n % 3 else 2
            rec.record(
                FrameRecord(
                    n % 2,
                    n,
                    unique_id=uid,
                    layers={k: value(n, s, uid) for k, s in SIZES.items()},
                )
            )
    r = open_recording(path)
    assert len(r.paths) >= 3
    yield r
    r.close()


def reference(r, key: str, rows) -> np.ndarray:
    """One frame at a time, as ``rec[row]`` reads it."""
    info = r.layers[key]
    parts = [r[int(i)].tensors[info.name] for i in rows]
    return np.stack(parts) if parts else np.zeros((0, *info.shape), info.dtype)


def orders(rows: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "all": rows,
        "one": rows[3:4],
        "block": rows[4:12],
        "every 2nd": rows[::2],
        "every 5th": rows[1::5],
        "gaps of mixed length": rows[[0, 1, 2, 5, 6, 9, 10, 11, 13]],
        "reversed": rows[::-1],
        "shuffled": rng.permutation(rows),
        "repeats": rows[[4, 4, 5, 0, 5, 9, 4]],
        "sorted repeats": rows[[1, 1, 2, 3, 3, 3, 7]],
        "empty": rows[:0],
    }


@pytest.mark.parametrize("size", list(SIZES))
def test_block_reads_equal_frame_by_frame_reads(segmented, size):
    r = segmented
    rng = np.random.default_rng(0)
    for uid in (1, 2):
        key = f"{uid}/{size}"
        rows = np.flatnonzero(r.frames["unique_id"].to_numpy() == uid)
        assert (
            r.frames["segment"].to_numpy()[rows].min() < r.frames["segment"].to_numpy()[rows].max()
        )
        for what, sub in orders(rows, rng).items():
            got = r.read_layer(key, sub)
            assert got.shape == (len(sub), SIZES[size]), what
            np.testing.assert_array_equal(got, reference(r, key, sub), err_msg=what)
            buf = np.full_like(got, -1)
            assert r.read_layer(key, sub, out=buf) is buf
            np.testing.assert_array_equal(buf, got, err_msg=what)
        np.testing.assert_array_equal(r.read_layer(key), reference(r, key, rows))


def test_out_must_fit_and_rows_must_have_the_layer(segmented):
    r = segmented
    rows = np.flatnonzero(r.frames["unique_id"].to_numpy() == 1)[:4]
    good = np.empty((4, SIZES["tiny"]), np.float32)
    for bad in (
        np.empty((3, SIZES["tiny"]), np.float32),
        np.empty((4, SIZES["tiny"]), np.float64),
        np.empty((4, 2 * SIZES["tiny"]), np.float32)[:, ::2],
        good.tolist(),
    ):
        with pytest.raises(ValueError, match="read_layer\\('1/tiny', out=...\\) needs a writeable"):
            r.read_layer("1/tiny", rows, out=bad)
    frozen = good.copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writeable C-contiguous float32\\[4, 24\\]"):
        r.read_layer("1/tiny", rows, out=frozen)
    other = int(np.flatnonzero(r.frames["unique_id"].to_numpy() == 2)[0])
    with pytest.raises(KeyError, match=f"frame row {other} has no layer '1/tiny' of GIE 1"):
        r.read_layer("1/tiny", [int(rows[0]), other])
    with pytest.raises(IndexError, match="rows out of range"):
        r.read_layer("1/tiny", [len(r)])


def test_per_object_layers_read_in_blocks_equal_each_object(tmp_path):
    path = tmp_path / "sgie.h5"
    with Recorder(
        path, images=False, segment_max_bytes=400_000, flush_interval_s=0.01, block_frames=1
    ) as rec:
        for n in range(30):
            objs = [
                ObjectRecord(
                    rect=(k, n, 10, 10),
                    layers={} if (n + k) % 4 == 0 else {"emb": value(n * 10 + k, EMB)},
                )
                for k in range(n % 4)
            ]
            rec.record(FrameRecord(0, n, unique_id=2, objects=objs))
    with open_recording(path) as r:
        assert len(r.paths) > 1
        objs = r.object_table("objects")
        have = np.flatnonzero(objs["layer_row"].to_numpy() >= 0)
        expect = {
            int(j): value(int(objs["row"].iloc[j]) * 10 + int(objs["left"].iloc[j]), EMB)
            for j in have
        }
        rng = np.random.default_rng(1)
        for what, sub in orders(have, rng).items():
            got = r.read_layer("emb", sub)
            want = np.array([expect[int(j)] for j in sub], np.float32).reshape(-1, EMB)
            np.testing.assert_array_equal(got, want, err_msg=what)
        np.testing.assert_array_equal(r.read_layer("emb"), np.stack([expect[int(j)] for j in have]))
