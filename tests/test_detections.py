"""Detections: construction, validation, selection, concatenation, DataFrame view."""

import numpy as np
import pytest

from dsprobe.detections import Detections
from dsprobe.records import ObjectRecord


def make(n=3, space="network"):
    x = np.arange(n, dtype=np.float64)[:, None]
    boxes = np.hstack([x, 2 * x, x + 10, 2 * x + 10])  # every box 10x10
    return Detections(
        boxes,
        np.linspace(0.9, 0.5, n),
        np.arange(n),
        space,
        keypoints=np.ones((n, 2, 3)),
        vectors=np.zeros((n, 8)),
    )


def test_dtypes_and_shapes_are_normalised():
    d = make()
    assert d.boxes.dtype == np.float32 and d.boxes.shape == (3, 4)
    assert d.scores.dtype == np.float32 and d.class_ids.dtype == np.int32
    assert d.keypoints.dtype == np.float32 and d.keypoints.shape == (3, 2, 3)
    np.testing.assert_array_equal(d.widths, [10, 10, 10])


def test_row_count_mismatch_names_the_field():
    with pytest.raises(ValueError, match="scores has 2 values, expected 3"):
        Detections(np.zeros((3, 4)), [0.1, 0.2], [0, 0, 0])
    with pytest.raises(ValueError, match="keypoints has 2 rows, expected 3"):
        Detections(np.zeros((3, 4)), np.zeros(3), np.zeros(3), keypoints=np.zeros((2, 1, 3)))
    with pytest.raises(ValueError, match="space must be"):
        Detections(np.zeros((0, 4)), [], [], "pixels")


def test_selection_by_mask_index_and_int():
    d = make()
    kept = d[d.scores > 0.6]
    assert len(kept) == 2 and kept.vectors.shape == (2, 8)
    np.testing.assert_array_equal(d[[2, 0]].class_ids, [2, 0])
    one = d[1]
    assert len(one) == 1 and one.boxes.shape == (1, 4) and one.keypoints.shape == (1, 2, 3)


def test_concatenate_and_space_check():
    d = Detections.concatenate([make(2), make(3)])
    assert len(d) == 5 and d.keypoints.shape[0] == 5
    with pytest.raises(ValueError, match="different spaces"):
        Detections.concatenate([make(1, "frame"), make(1, "network")])
    assert len(Detections.concatenate([])) == 0


def test_from_objects_converts_rects_to_corners():
    objs = [ObjectRecord(rect=(10.0, 20.0, 30.0, 40.0), class_id=2, confidence=0.7, object_id=5)]
    d = Detections.from_objects(objs)
    assert d.space == "frame"
    np.testing.assert_array_equal(d.boxes, [[10, 20, 40, 60]])
    assert d.object_ids.tolist() == [5] and d.class_ids.tolist() == [2]
    assert len(Detections.from_objects([])) == 0


def test_dataframe_has_labels_and_space():
    df = make(2, "frame").to_dataframe(labels=["car", "person"])
    assert list(df["label"]) == ["car", "person"]
    assert df.attrs["space"] == "frame"
    assert df.loc[0, "width"] == 10 and df.loc[1, "score"] == pytest.approx(0.5)


def test_equals_is_exact():
    a, b = make(), make()
    assert a.equals(b)
    c = Detections(
        a.boxes + np.float32(1e-3),
        a.scores,
        a.class_ids,
        a.space,
        keypoints=a.keypoints,
        vectors=a.vectors,
    )
    assert not a.equals(c)
