"""Detections: a struct of arrays in one named coordinate space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Literal, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from dsprobe.records import ObjectRecord

Space = Literal["network", "frame", "crop"]
"""``network``: network-input pixels (letterbox included); ``frame``: nvstreammux-output pixels;
``crop``: pixels of an SGIE's object crop before the parent offset is added."""


#: the per-row arrays of Detections besides ``boxes``
_ROW_FIELDS = ("scores", "class_ids", "keypoints", "vectors", "masks", "object_ids")


@dataclass(frozen=True)
class Detections:
    """N detections. ``boxes`` are ``(N, 4)`` float32 ``x1, y1, x2, y2`` in ``space`` pixels.

    * ``scores``: ``(N,)`` float32 confidences.
    * ``class_ids``: ``(N,)`` int32.
    * ``keypoints``: optional ``(N, K, 3)`` float32 ``x, y, confidence`` in the same space.
    * ``vectors``: optional ``(N, D)`` float32 per-object vectors (embeddings, attributes,
      mask coefficients).
    * ``masks``: optional ``(N, h, w)`` float32 masks (instance segmentation), box-relative.
    * ``object_ids``: optional ``(N,)`` uint64 tracker ids (recorded pipeline objects).
    """

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    space: Space = "network"
    keypoints: np.ndarray | None = None
    vectors: np.ndarray | None = None
    masks: np.ndarray | None = None
    object_ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        boxes = self.boxes
        if not (
            type(boxes) is np.ndarray
            and boxes.dtype == np.float32
            and boxes.ndim == 2
            and boxes.shape[1] == 4
        ):
            boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
            object.__setattr__(self, "boxes", boxes)
        n = boxes.shape[0]
        object.__setattr__(self, "scores", _column(self.scores, np.float32, n, "scores"))
        object.__setattr__(self, "class_ids", _column(self.class_ids, np.int32, n, "class_ids"))
        for name, dtype in (
            ("keypoints", np.float32),
            ("vectors", np.float32),
            ("masks", np.float32),
            ("object_ids", np.uint64),
        ):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value, dtype=dtype)
                if value.shape[:1] != (n,):
                    raise ValueError(
                        f"Detections.{name} has {value.shape[0] if value.ndim else 0} rows, "
                        f"expected {n} (one per box)"
                    )
                object.__setattr__(self, name, value)
        if self.space not in ("network", "frame", "crop"):
            raise ValueError(
                f"Detections.space must be 'network', 'frame' or 'crop', got {self.space!r}"
            )

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, space: Space = "network") -> "Detections":
        return cls(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), space
        )

    @classmethod
    def from_objects(
        cls, objects: Sequence["ObjectRecord"], space: Space = "frame"
    ) -> "Detections":
        """Detections from recorded ``NvDsObjectMeta`` records (rects are left, top, width, height)."""
        if not objects:
            return cls.empty(space)
        rects = (
            np.array([o.rect for o in objects], dtype=np.float32).astype(np.float64).reshape(-1, 4)
        )
        boxes = np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:]], axis=1)
        return cls(
            boxes,
            [o.confidence for o in objects],
            [o.class_id for o in objects],
            space,
            object_ids=np.array([o.object_id for o in objects], dtype=np.uint64),
        )

    @classmethod
    def concatenate(cls, parts: Iterable["Detections"]) -> "Detections":
        parts = list(parts)
        if not parts:
            return cls.empty()
        spaces = {p.space for p in parts}
        if len(spaces) != 1:
            raise ValueError(f"cannot concatenate Detections in different spaces: {sorted(spaces)}")

        def cat(name: str) -> np.ndarray | None:
            values = [getattr(p, name) for p in parts]
            if all(v is None for v in values):
                return None
            if any(v is None for v in values):
                raise ValueError(f"cannot concatenate Detections where only some have {name}")
            return np.concatenate(values)

        return cls(
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.scores for p in parts]),
            np.concatenate([p.class_ids for p in parts]),
            parts[0].space,
            keypoints=cat("keypoints"),
            vectors=cat("vectors"),
            masks=cat("masks"),
            object_ids=cat("object_ids"),
        )

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def __getitem__(self, index: int | slice | np.ndarray | Sequence[int]) -> "Detections":
        """Select rows by boolean mask, integer index array, slice or single int (keeps 2-D shapes)."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        elif isinstance(index, tuple):
            raise TypeError(
                "Detections are indexed by rows only (mask, indices, slice or int), not a tuple"
            )
        rows = self.boxes[index]  # IndexError / shape errors here, before anything is built
        if rows.ndim != 2:
            raise IndexError(f"Detections index {index!r} does not select rows")
        out = object.__new__(
            type(self)
        )  # the arrays are already checked: no __post_init__ (hot path)
        object.__setattr__(out, "boxes", rows)
        object.__setattr__(out, "space", self.space)
        for name in _ROW_FIELDS:
            value = getattr(self, name)
            object.__setattr__(out, name, None if value is None else value[index])
        return out

    @property
    def widths(self) -> np.ndarray:
        return self.boxes[:, 2] - self.boxes[:, 0]

    @property
    def heights(self) -> np.ndarray:
        return self.boxes[:, 3] - self.boxes[:, 1]

    def to_rects(self) -> np.ndarray:
        """(N, 4) float32 ``left, top, width, height`` as a probe writes them into ``rect_params``
        (width computed in float64 from the float32 corners, then stored as float32)."""
        b = self.boxes.astype(np.float64)
        return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1).astype(
            np.float32
        )

    def same_objects(self, other: "Detections") -> bool:
        """Bit-identical as DeepStream object meta: rects (float32), scores (float32) and class ids."""
        return (
            len(self) == len(other)
            and np.array_equal(self.to_rects(), other.to_rects())
            and np.array_equal(self.scores, other.scores)
            and np.array_equal(self.class_ids, other.class_ids)
        )

    def to_dataframe(self, labels: Sequence[str] | None = None) -> "pd.DataFrame":
        """One row per detection: x1, y1, x2, y2, width, height, score, class_id (+ label, object_id)."""
        import pandas as pd

        df = pd.DataFrame(
            {
                "x1": self.boxes[:, 0],
                "y1": self.boxes[:, 1],
                "x2": self.boxes[:, 2],
                "y2": self.boxes[:, 3],
                "width": self.widths,
                "height": self.heights,
                "score": self.scores,
                "class_id": self.class_ids,
            }
        )
        if labels is not None:
            df["label"] = [labels[c] if 0 <= c < len(labels) else str(c) for c in self.class_ids]
        if self.object_ids is not None:
            df["object_id"] = self.object_ids
        if self.keypoints is not None:
            df["num_keypoints"] = self.keypoints.shape[1]
        df.attrs["space"] = self.space
        return df

    def equals(self, other: "Detections") -> bool:
        """Bit-identical boxes, scores, class ids (and optional arrays) in the same space."""
        if self.space != other.space or len(self) != len(other):
            return False
        for name in ("boxes", "scores", "class_ids", "keypoints", "vectors", "masks", "object_ids"):
            a, b = getattr(self, name), getattr(other, name)
            if (a is None) != (b is None):
                return False
            if a is not None and not np.array_equal(a, b):
                return False
        return True

    def __repr__(self) -> str:
        extra = "".join(
            f", {n}={getattr(self, n).shape}"
            for n in ("keypoints", "vectors", "masks")
            if getattr(self, n) is not None
        )
        return f"Detections(n={len(self)}, space={self.space!r}{extra})"


def _column(values: object, dtype: type, n: int, name: str) -> np.ndarray:
    arr = (
        values
        if type(values) is np.ndarray and values.dtype == dtype and values.ndim == 1
        else np.asarray(values, dtype=dtype).reshape(-1)
    )
    if arr.shape[0] != n:
        raise ValueError(f"Detections.{name} has {arr.shape[0]} values, expected {n} (one per box)")
    return arr


def attribute_labels(labels: Sequence[str] | Sequence[Sequence[str]], attribute: int) -> list[str]:
    """A classifier's class names for output layer ``attribute`` (nvinfer's ``labels[attribute]``):
    line ``attribute`` of the label file split at ``;`` (or that line given as a list); [] when the
    labels have no such line."""
    if not labels or not 0 <= attribute < len(labels):
        return []
    line = labels[attribute]
    return line.split(";") if isinstance(line, str) else [str(x) for x in line]


def classifier_label(
    labels: Sequence[str] | Sequence[Sequence[str]], attribute: int, class_id: int
) -> str:
    """nvinfer's ``result_label`` for class ``class_id`` of attribute ``attribute``; "" when unknown."""
    names = attribute_labels(labels, attribute)
    return names[class_id] if 0 <= class_id < len(names) else ""
