"""Re-clustering cached decoder output on the GPU (what a search pays per clustering setting).

:class:`GpuCandidates` uploads every cached frame's candidates once, flat. Each clustering
(``threshold -> nms | none`` at the search's lowest threshold, no top-k, no post-cluster threshold)
then runs for all frames in a few kernels, and the nvinfer scaling of the kept boxes in one more;
only flat arrays come back. Per-frame Detections are built when someone asks for a frame
(:class:`LazyRows`), so a search over 100,000 frames never builds 100,000 objects per setting.
:class:`dsprobe.analysis.search.Reclusterer` (``device="cuda"``) uses this; its results are
identical to the CPU path's.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from dsprobe.detections import Detections
from dsprobe.postprocess.gpu import cluster as ops
from dsprobe.postprocess.gpu.decode import Candidates

_EXTRAS = ("keypoints", "vectors", "masks", "object_ids")


class LazyRows(Mapping):
    """``{row: value}`` over flat arrays ordered by row; ``make(row, start, stop)`` builds a value
    when it is looked up (every row is present, also those with no boxes)."""

    def __init__(self, rows: Sequence[int], flat_rows: np.ndarray, make: Callable) -> None:
        self._rows = list(rows)
        self._pos = {r: i for i, r in enumerate(self._rows)}
        order = np.asarray(self._rows, np.int64)
        self._bounds = (
            np.searchsorted(flat_rows, order, side="left"),
            np.searchsorted(flat_rows, order, side="right"),
        )
        self._make = make

    def __getitem__(self, row: int) -> Any:
        i = self._pos[row]
        return self._make(row, int(self._bounds[0][i]), int(self._bounds[1][i]))

    def __iter__(self) -> Iterator[int]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)


class GpuCandidates:
    """Every cached candidate of a ``DecodedRecording`` on the GPU, flat in row order."""

    def __init__(self, decoded: Any) -> None:
        import cupy

        self.rows = sorted(decoded.candidates)
        cands = [decoded.candidates[r] for r in self.rows]
        self.host = cands
        counts = np.array([len(d) for d in cands], np.int64)
        self.start = np.concatenate([[0], np.cumsum(counts)])
        cat = lambda xs, shape, dt: np.concatenate(xs) if xs else np.zeros(shape, dt)  # noqa: E731
        self.all = Candidates(
            cupy.asarray(cat([d.boxes for d in cands], (0, 4), np.float32)),
            cupy.asarray(cat([d.scores for d in cands], 0, np.float32)),
            cupy.asarray(cat([d.class_ids for d in cands], 0, np.int32)),
            cupy.asarray(np.repeat(np.arange(len(cands), dtype=np.int32), counts)),
            cupy.arange(int(counts.sum()), dtype=np.int64),
        )
        self.contexts = [decoded.contexts[r] for r in self.rows]
        self.position = {r: i for i, r in enumerate(self.rows)}
        self.plain = all(getattr(d, x) is None for d in cands for x in _EXTRAS)
        self._mappings: dict[tuple, tuple] = {}

    # ---------------------------------------------------------------- clustering
    def cluster(self, pp: Any) -> tuple[Any, ...]:
        """Steps 1-2 of ``pp`` (``filter:threshold``, ``cluster:nms|none``; top-k -1, post-cluster
        threshold -inf as the Reclusterer asks) for every frame: ``(per_row, offsets, scores,
        class_ids, flat rows, kept)`` with ``per_row`` lazy and ``kept`` the device candidates."""
        t, cl = pp.steps[1].params, pp.steps[2]
        ctx = self.contexts[0] if self.contexts else None
        n_cls = t.get("num_classes", 0) or (ctx.num_classes if ctx is not None else 0)
        c = ops.threshold(self.all, t.get("pre_cluster_threshold", 0.2), n_cls)
        p = cl.params
        c = ops.cluster(
            c,
            cl.name,
            p.get("iou_threshold", 0.3),
            p.get("post_cluster_threshold", 0.0),
            p.get("topk", -1),
        )
        scores, classes = c.scores.get(), c.class_ids.get()
        frame, index = c.frame.get(), c.index.get()
        rows = np.asarray(self.rows, np.int64)[frame]
        bounds = np.searchsorted(frame, np.arange(len(self.rows) + 1))
        offsets = dict(zip(self.rows, bounds[:-1].tolist()))

        def make(row: int, a: int, b: int) -> Detections:
            k = self.position[row]
            return self.host[k][index[a:b] - self.start[k]]

        return LazyRows(self.rows, rows, make), offsets, scores, classes, rows, c

    # ---------------------------------------------------------------- scaling
    def can_scale(self, pp: Any) -> bool:
        """Whether the steps after clustering run here: nothing, ``scale:none``, ``scale:nvinfer``
        (+ ``filter:objects``), on candidates with no keypoints / vectors / masks / object ids."""
        names = [(s.kind, s.name) for s in pp.steps[3:]]
        return self.plain and names in (
            [],
            [("scale", "none")],
            [("scale", "nvinfer")],
            [("scale", "nvinfer"), ("filter", "objects")],
        )

    def scale(self, pp: Any, kept: Candidates) -> tuple[Any, ...]:
        """The steps after clustering on every clustered box: ``(rows, boxes, scores, class_ids,
        tags, per_row)`` as the Reclusterer caches them (``tags``: positions among the clustered)."""
        import cupy

        c = kept._replace(index=cupy.arange(kept.n, dtype=np.int64))
        tail = pp.steps[3:]
        space = "network"
        if tail and tail[0].name == "nvinfer":
            sp = tail[0].params
            key = (sp.get("maintain_aspect_ratio"), sp.get("symmetric_padding"))
            if key not in self._mappings:
                self._mappings[key] = ops.frame_mappings(self.contexts, *key)
            filters = dict(tail[1].params) if len(tail) > 1 else None
            c = ops.scale_nvinfer(
                c,
                self._mappings[key],
                deepstream_version=sp.get("deepstream_version", 7.1),
                filters=filters,
            )
            space = "frame"
        boxes, scores, classes = c.boxes.get(), c.scores.get(), c.class_ids.get()
        rows = np.asarray(self.rows, np.int64)[c.frame.get()]
        tags = c.index.get()

        def make(row: int, a: int, b: int) -> tuple[Detections, np.ndarray]:
            d = Detections(boxes[a:b], scores[a:b], classes[a:b], space)  # type: ignore[arg-type]
            return d, np.arange(a, b)

        return rows, boxes, scores, classes, tags, LazyRows(self.rows, rows, make)
