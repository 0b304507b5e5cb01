"""Running a Postprocess over a whole Recording: layers read in blocks of frames (SGIE: of objects),
never frame by frame, with the same result as ``pp(rec[row])`` per row; and the decoded-once cache
(:class:`DecodedRecording`) that threshold / clustering sweeps re-run."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from dsprobe.detections import Detections
from dsprobe.postprocess.registry import ObjectBatch, PostprocessError, StepContext

#: a :class:`dsprobe.postprocess.pipeline.Postprocess` (pipeline imports this module, never the other way)
PostprocessLike = Any


def detections_by_row(
    pp: PostprocessLike,
    rec: Any,
    rows: Iterable[int] | None = None,
    *,
    unique_id: int | None = None,
    progress: bool = False,
    batch: int = 32,
    stop: int | None = None,
) -> dict[int, Detections]:
    """``{frame row: Detections}`` for a Recording, identical to ``pp(rec[row])`` per row; ``stop``
    runs only steps ``[0, stop)``. Fast path: each layer is read once per block of ``batch`` frames
    (SGIE: ``8 * batch`` objects) with ``rec.read_layer``; no frame is opened on its own."""
    rows = frame_rows(rec, rows, unique_id)
    f = rec.frames
    col = {
        c: f[c].to_numpy()
        for c in (
            "unique_id",
            "layer_row",
            "network_width",
            "network_height",
            "frame_width",
            "frame_height",
        )
    }

    def ctx(r: int, crop: tuple[float, float, float, float] | None = None) -> StepContext:
        size = FrameSizes(
            (int(col["network_width"][r]), int(col["network_height"][r])),
            (int(col["frame_width"][r]), int(col["frame_height"][r])),
        )
        return pp.context(size, crop)

    out: dict[int, Detections] = {}
    layered = col["layer_row"][rows] >= 0
    layer_rows, object_rows = rows[layered], rows[~layered]
    blocks = [
        (int(u), blk)
        for u in dict.fromkeys(col["unique_id"][layer_rows].tolist())
        for rs in [layer_rows[col["unique_id"][layer_rows] == u]]
        for blk in np.array_split(rs, -(-len(rs) // batch))
    ]
    for uid, block in _progress(blocks, progress):
        names = [i.name for i in rec.layers.values() if i.unique_id == uid and not i.per_object]
        arrays = {n: rec.read_layer(n, block, unique_id=uid) for n in names}
        for k, r in enumerate(block):
            out[int(r)] = pp.run({n: a[k] for n, a in arrays.items()}, ctx(int(r)), stop=stop)
    if len(object_rows):
        out.update(_object_rows(pp, rec, object_rows, col, ctx, 8 * batch, stop, progress))
    return {int(r): out[int(r)] for r in rows}


#: bytes of per-object layers read (and batched) per block of SGIE objects
OBJECT_BLOCK_BYTES = 16 << 20
#: most objects per block
OBJECT_BLOCK_MAX = 65536


def _object_rows(
    pp: PostprocessLike,
    rec: Any,
    object_rows: np.ndarray,
    col: Mapping[str, np.ndarray],
    ctx: Callable,
    chunk: int,
    stop: int | None,
    progress: bool,
) -> dict[int, Detections]:
    """SGIE frames: every object with tensors runs with its rect as the crop. Objects are taken in
    blocks (at least ``chunk`` objects, about :data:`OBJECT_BLOCK_BYTES` of layers) sharing the GIE and
    the frame sizes; each layer is read once per block. A decode step with an object-batched variant
    runs once per block (:meth:`Postprocess.run_objects`), any other per object (``ctx`` is unused:
    the contexts are built per block)."""
    objs = rec.object_columns("objects", ["row", "layer_row", "rect"])  # numpy, read once
    frame_all = objs["row"]
    keep = np.isin(frame_all, object_rows) & (objs["layer_row"] >= 0)
    table_rows = np.flatnonzero(keep)
    frame_of = frame_all[table_rows]
    parent = position_in_frame(frame_all)[table_rows]
    rects = objs["rect"].reshape(-1, 4)[table_rows].astype(np.float64)  # left, top, width, height
    parts: dict[int, list[Detections]] = {int(r): [] for r in object_rows}
    for uid, sizes, sel in _progress(_object_blocks(rec, col, frame_of, chunk), progress):
        names = [i.name for i in rec.layers.values() if i.unique_id == uid and i.per_object]
        arrays = {n: rec.read_layer(n, table_rows[sel], unique_id=uid) for n in names}
        if not pp.batches_objects:
            for k, j in enumerate(sel):
                r = int(frame_of[j])
                d = pp.run(
                    {n: a[k] for n, a in arrays.items()},
                    pp.context(sizes, tuple(rects[j])),
                    stop=stop,
                )
                parts[r].append(tag_parent(d, int(parent[j])))
            continue
        objects = ObjectBatch(replace(pp.context(sizes), crop_rect=None), rects[sel])
        dets, owner = pp.run_objects(arrays, objects, stop=stop)
        _split_by_frame(dets, sel[owner], sel, frame_of, parent, parts)
    space = "frame" if stop is None or stop >= len(pp.steps) else "network"
    return {
        r: (p[0] if len(p) == 1 else Detections.concatenate(p)) if p else Detections.empty(space)
        for r, p in parts.items()
    }


def _object_blocks(
    rec: Any, col: Mapping[str, np.ndarray], frame_of: np.ndarray, chunk: int
) -> list[tuple[int, FrameSizes, np.ndarray]]:
    """``(unique_id, frame sizes, indices into frame_of)`` per block of objects, in table order within
    each (GIE, sizes) group."""
    if not len(frame_of):
        return []
    keys = np.stack(
        [
            col[c][frame_of]
            for c in (
                "unique_id",
                "network_width",
                "network_height",
                "frame_width",
                "frame_height",
            )
        ],
        axis=1,
    ).astype(np.int64)
    if (keys == keys[0]).all():
        groups = [(keys[0], np.arange(len(keys)))]
    else:
        uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        groups = [(u, np.flatnonzero(inverse == g)) for g, u in enumerate(uniq)]
    blocks = []
    for (uid, nw, nh, fw, fh), idx in groups:
        per_object = sum(
            i.dtype.itemsize * int(np.prod(i.shape))
            for i in rec.layers.values()
            if i.unique_id == uid and i.per_object
        )
        size = max(chunk, min(OBJECT_BLOCK_MAX, OBJECT_BLOCK_BYTES // max(per_object, 1)))
        sizes = FrameSizes((int(nw), int(nh)), (int(fw), int(fh)))
        blocks += [(int(uid), sizes, idx[a : a + size]) for a in range(0, len(idx), size)]
    return blocks


def _split_by_frame(
    dets: Detections,
    row_object: np.ndarray,
    block: np.ndarray,
    frame_of: np.ndarray,
    parent: np.ndarray,
    parts: dict[int, list[Detections]],
) -> None:
    """Append to ``parts[frame]`` the rows of ``dets`` (row i from object ``row_object[i]``) of each
    frame with objects in ``block``, tagged with their parent index, in object order (an empty part
    for a frame whose objects gave no rows: what concatenating its per-object results gives)."""
    frames = frame_of[row_object]
    tagged = Detections(
        dets.boxes,
        dets.scores,
        dets.class_ids,
        dets.space,
        keypoints=dets.keypoints,
        vectors=dets.vectors,
        masks=dets.masks,
        object_ids=parent[row_object].astype(np.uint64),
    )
    if len(frames) > 1 and (np.diff(frames) < 0).any():
        order = np.argsort(frames, kind="stable")
        tagged, frames = tagged[order], frames[order]
    present = np.unique(frame_of[block])
    lo = np.searchsorted(frames, present, "left").tolist()
    hi = np.searchsorted(frames, present, "right").tolist()
    for r, a, b in zip(present.tolist(), lo, hi):
        parts[r].append(tagged[a:b])


def position_in_frame(frame_of: np.ndarray) -> np.ndarray:
    """Each object's position among the objects of its frame, in table order (``frame_of``: the frame
    row of each row of ``Recording.object_table("objects")``): the SGIE parent index."""
    order = np.argsort(frame_of, kind="stable")
    f = frame_of[order]
    starts = np.flatnonzero(np.r_[True, f[1:] != f[:-1]]) if len(f) else np.zeros(0, np.int64)
    first = np.repeat(starts, np.diff(np.r_[starts, len(f)]))
    out = np.empty(len(f), np.int64)
    out[order] = np.arange(len(f)) - first
    return out


def decode_recording(
    pp: PostprocessLike, rec: Any, rows: Iterable[int] | None = None, **kw: Any
) -> "DecodedRecording":
    """Decode once for many PGIE frames and cache the candidates (network pixels), so thresholds,
    clustering and scaling can be swept cheaply: ``dec.run(pp.with_params(...))`` re-runs only the
    steps after the decoder (:mod:`dsprobe.analysis.search` adds exact cached re-clustering on top)."""
    rows = frame_rows(rec, rows, kw.pop("unique_id", None))
    sgie = rows[rec.frames["layer_row"].to_numpy()[rows] < 0] if len(rows) else rows
    if len(sgie):
        raise PostprocessError(
            f"decode_recording: frame row {int(sgie[0])} has per-object (SGIE) tensors; "
            "it caches PGIE frames only: use run_recording for SGIE frames"
        )
    cands = pp.detections_by_row(rec, rows, stop=1, **kw)
    f = rec.frames
    ctxs = {r: pp.context(_RowContext(f, r)) for r in cands}
    return DecodedRecording(pp, cands, ctxs, rec)


@dataclass
class DecodedRecording:
    """Decoder output (candidates in network pixels) per frame row, ready for re-running the rest."""

    postprocess: PostprocessLike
    candidates: dict[int, Detections]
    contexts: dict[int, StepContext]
    recording: Any = None

    def run(self, postprocess: PostprocessLike | None = None) -> dict[int, Detections]:
        """Apply every step after the decoder of ``postprocess`` (default: the decoding one) to the
        cached candidates; its decode step must equal the cached one."""
        pp = postprocess or self.postprocess
        if pp.steps[0].to_dict() != self.postprocess.steps[0].to_dict():
            raise PostprocessError(
                "the cached candidates come from another decode step; decode again"
            )
        return {
            r: pp.run({}, self.contexts[r], start=1, dets=d) for r, d in self.candidates.items()
        }


@dataclass(frozen=True)
class FrameSizes:
    """What :meth:`Postprocess.context` reads of a frame."""

    network_size: tuple[int, int]
    frame_size: tuple[int, int]


class _RowContext:
    """Frame context of one row of ``Recording.frames`` (what Postprocess.context needs)."""

    def __init__(self, frames: Any, row: int) -> None:
        r = frames.iloc[row]
        self.network_size = (int(r["network_width"]), int(r["network_height"]))
        self.frame_size = (int(r["frame_width"]), int(r["frame_height"]))


def frame_rows(rec: Any, rows: Iterable[int] | None, unique_id: int | None) -> np.ndarray:
    """Rows to run: ``rows``, or every frame with tensors (of ``unique_id`` when given)."""
    f = rec.frames
    if rows is None:
        mask = (f["layer_row"] >= 0) | (f["object_count"] > 0)
        if unique_id is not None:
            mask &= f["unique_id"] == unique_id
        return np.flatnonzero(mask.to_numpy())
    return np.asarray(list(rows), dtype=np.int64)


def detections_frame(
    rec: Any, per_frame: Mapping[int, Detections], labels: Sequence[str] = ()
) -> Any:
    """One DataFrame row per detection with the frame ``row``, ``source_id``, ``frame_num``."""
    import pandas as pd

    parts = []
    f = rec.frames
    for r, d in per_frame.items():
        df = d.to_dataframe(labels or None)
        df.insert(0, "row", r)
        df.insert(1, "source_id", int(f["source_id"].iloc[r]))
        df.insert(2, "frame_num", int(f["frame_num"].iloc[r]))
        parts.append(df)
    if not parts:
        return pd.DataFrame(
            columns=[
                "row",
                "source_id",
                "frame_num",
                "x1",
                "y1",
                "x2",
                "y2",
                "width",
                "height",
                "score",
                "class_id",
            ]
        )
    return pd.concat(parts, ignore_index=True)


def _progress(it: Sequence, enabled: bool) -> Iterable:
    if not enabled or not len(it):
        return it
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return it
    return tqdm(it, total=len(it), desc="postprocess", unit="block")


def tag_parent(d: Detections, parent_index: int) -> Detections:
    """``d`` with ``object_ids`` set to the SGIE parent's index in the frame's objects."""
    return Detections(
        d.boxes,
        d.scores,
        d.class_ids,
        d.space,
        keypoints=d.keypoints,
        vectors=d.vectors,
        masks=d.masks,
        object_ids=np.full(len(d), parent_index, np.uint64),
    )
