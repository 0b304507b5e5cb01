"""Running a Postprocess over a whole Recording: layers read in blocks of frames (SGIE: of objects),
never frame by frame, with the same result as ``pp(rec[row])`` per row; and the decoded-once cache
(:class:`DecodedRecording`) that threshold / clustering sweeps re-run."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from dsprobe.detections import Detections, classifier_label
from dsprobe.postprocess.registry import ObjectBatch, PostprocessError, StepContext

#: a :class:`dsprobe.postprocess.pipeline.Postprocess` (pipeline imports this module, never the other way)
PostprocessLike = Any


#: layer bytes read per block of PGIE frames (at most ``batch`` frames, at least one): a few frames
#: of a big layer stay in the CPU caches between the read and the postprocess, and the reused block
#: buffer is not fresh memory to fault in (reading into a 90 MB block ran ~1.7x slower a frame
#: than into 3-6 MB ones)
BLOCK_BYTES = 4 << 20

#: Detections fields that may view a layer buffer (a decoder may return slices of its input)
_ARRAY_FIELDS = ("boxes", "scores", "class_ids", "keypoints", "vectors", "masks", "object_ids")


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
    runs only steps ``[0, stop)``. Fast path: each layer is read once per block of frames
    (:func:`replay_rows`); no frame is opened on its own."""
    rows = frame_rows(rec, rows, unique_id)
    with gie_hint(rec, rows, unique_id):
        out = dict(replay_rows(pp, rec, rows, progress=progress, batch=batch, stop=stop))
    return {int(r): out[int(r)] for r in rows}


def run_recording(
    pp: PostprocessLike,
    rec: Any,
    rows: Iterable[int] | None = None,
    *,
    unique_id: int | None = None,
    progress: bool = False,
    batch: int = 32,
) -> Any:
    """``Postprocess.run_recording`` on the CPU: the DataFrame :func:`detections_frame` makes of
    :func:`detections_by_row`, built once from flat arrays as the blocks run (no Detections kept
    per frame, no DataFrame per frame)."""
    rows = frame_rows(rec, rows, unique_id)
    table = DetectionTable(rec, getattr(pp, "labels", ()), order=rows, classifier=is_classifier(pp))
    with gie_hint(rec, rows, unique_id):
        for r, d in replay_rows(pp, rec, rows, progress=progress, batch=batch):
            table.add(r, d)
    return table.frame()


def replay_rows(
    pp: PostprocessLike,
    rec: Any,
    rows: np.ndarray,
    *,
    progress: bool = False,
    batch: int = 32,
    stop: int | None = None,
) -> Iterator[tuple[int, Detections]]:
    """``(row, pp(rec[row]))`` for each distinct frame row of ``rows`` (PGIE blocks first, then
    SGIE frames), steps ``[0, stop)``.

    PGIE frames run in blocks of one GIE's frames: up to ``batch`` frames and about
    :data:`BLOCK_BYTES` of layer data, each layer read once per block with ``rec.read_layer`` into a
    buffer reused from block to block (a new one after any result that views it). SGIE frames:
    ``8 * batch`` objects per read."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if len(rows) > 1 and not (np.diff(rows) > 0).all():
        rows = np.asarray(list(dict.fromkeys(rows.tolist())), dtype=np.int64)
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
    contexts: dict[tuple[int, int, int, int], StepContext] = {}

    def ctx(r: int, crop: tuple[float, float, float, float] | None = None) -> StepContext:
        sizes = (
            int(col["network_width"][r]),
            int(col["network_height"][r]),
            int(col["frame_width"][r]),
            int(col["frame_height"][r]),
        )
        if crop is not None:
            return pp.context(FrameSizes(sizes[:2], sizes[2:]), crop)
        c = contexts.get(sizes)
        if c is None:  # one StepContext (frozen) per distinct frame geometry
            c = contexts[sizes] = pp.context(FrameSizes(sizes[:2], sizes[2:]))
        return c

    layered = col["layer_row"][rows] >= 0
    layer_rows, object_rows = rows[layered], rows[~layered]
    uids = col["unique_id"][layer_rows]
    blocks = []
    for u in dict.fromkeys(uids.tolist()):
        infos = [i for i in rec.layers.values() if i.unique_id == u and not i.per_object]
        frame_bytes = sum(int(np.prod(i.shape, dtype=np.int64)) * i.dtype.itemsize for i in infos)
        per_block = max(1, min(batch, BLOCK_BYTES // max(frame_bytes, 1)))
        rs = layer_rows[uids == u]
        blocks += [(int(u), infos, blk) for blk in np.array_split(rs, -(-len(rs) // per_block))]
    buffers: dict[tuple[int, str], np.ndarray] = {}
    for uid, infos, block in _progress(blocks, progress):
        arrays = {}
        for i in infos:
            buf = buffers.get((uid, i.name))
            if buf is None or len(buf) < len(block):
                buf = buffers[(uid, i.name)] = np.empty((len(block), *i.shape), i.dtype)
            arrays[i.name] = rec.read_layer(i.name, block, unique_id=uid, out=buf[: len(block)])
        for k, r in enumerate(block.tolist()):
            d = pp.run({n: a[k] for n, a in arrays.items()}, ctx(r), stop=stop)
            if _views_any(d, arrays.values()):  # keep that block's data: read the next elsewhere
                for i in infos:
                    buffers.pop((uid, i.name), None)
            yield r, d
    if len(object_rows):
        yield from _object_rows(pp, rec, object_rows, col, ctx, 8 * batch, stop, progress).items()


def _views_any(d: Detections, buffers: Iterable[np.ndarray]) -> bool:
    """Whether an array of ``d`` may share memory with one of ``buffers``."""
    bufs = list(buffers)
    for name in _ARRAY_FIELDS:
        a = getattr(d, name)
        if a is not None and any(np.may_share_memory(a, b) for b in bufs):
            return True
    return False


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
    the frame sizes; each layer is read once per block (into a buffer reused from block to block while
    no result views it). A decode step with an object-batched variant
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
    buffers: dict[tuple[int, str], np.ndarray] = {}  # reused while no result views them
    batched = pp.batches_objects
    for uid, sizes, sel in _progress(_object_blocks(rec, col, frame_of, chunk), progress):
        infos = [i for i in rec.layers.values() if i.unique_id == uid and i.per_object]
        arrays = {}
        for i in infos:
            buf = buffers.get((uid, i.name)) if batched else None
            if buf is None or len(buf) < len(sel):
                buf = np.empty((len(sel), *i.shape), i.dtype)
                if batched:
                    buffers[(uid, i.name)] = buf
            arrays[i.name] = rec.read_layer(
                i.name, table_rows[sel], unique_id=uid, out=buf[: len(sel)]
            )
        if not batched:
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
        if _views_any(dets, arrays.values()):  # results keep this block: the next goes elsewhere
            for i in infos:
                buffers.pop((uid, i.name), None)
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
    tagged = replace(dets, object_ids=parent[row_object].astype(np.uint64))
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


@contextmanager
def gie_hint(rec: Any, rows: np.ndarray, unique_id: int | None) -> Iterator[None]:
    """A PostprocessError raised while replaying frames of several GIEs (no ``unique_id`` given)
    gets which GIE recorded which layers, and the ``unique_id=`` to pass."""
    try:
        yield
    except PostprocessError as e:
        uids = np.unique(rec.frames["unique_id"].to_numpy()[rows]) if len(rows) else []
        if unique_id is not None or len(uids) < 2:
            raise
        by_gie: dict[int, list[str]] = {}
        for info in rec.layers.values():
            where = "per object" if info.per_object else "per frame"
            by_gie.setdefault(info.unique_id, []).append(f"{info.name} ({where})")
        gies = "; ".join(
            f"unique_id={u}: " + (", ".join(by_gie.get(int(u), [])) or "no layers") for u in uids
        )
        raise PostprocessError(
            f"{e}\nThese frames come from {len(uids)} GIEs ({gies}): pass unique_id= to replay "
            "one of them."
        ) from e


def detections_frame(
    rec: Any,
    per_frame: Mapping[int, Detections],
    labels: Sequence[str] = (),
    classifier: bool = False,
) -> Any:
    """One DataFrame row per detection with the frame ``row``, ``source_id``, ``frame_num``, then
    :meth:`Detections.to_dataframe`'s columns, frames in ``per_frame``'s order (what concatenating
    each frame's ``to_dataframe`` would give, built from flat arrays: :class:`DetectionTable`).
    ``classifier``: rows of ``decode:classifier`` (an ``attribute`` column, and ``label`` =
    ``labels[attribute][class_id]`` with ``labels`` the label file's ``;``-separated lines)."""
    table = DetectionTable(rec, labels, classifier=classifier)
    for r, d in per_frame.items():
        table.add(int(r), d)
    return table.frame()


#: the columns of a detections DataFrame of no frames
FRAME_COLUMNS = (
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
)


class DetectionTable:
    """Detections of many frames gathered into flat arrays, then one DataFrame (:meth:`frame`):
    memory O(detections), one ``to_dataframe`` per kind of frame rather than per frame.

    Frames whose DataFrames would differ in columns or dtypes (empty or not, with or without
    ``object_ids``, keypoint count, space) are kept apart and concatenated once, so the result equals
    ``pd.concat`` of the per-frame DataFrames, dtypes included. Rows come in ``order`` (frame rows;
    default: the order frames were added)."""

    #: frames gathered before a kind's per-frame arrays are joined into one
    COMPACT = 256

    def __init__(
        self,
        rec: Any,
        labels: Sequence[str] = (),
        order: np.ndarray | None = None,
        classifier: bool = False,
    ) -> None:
        f = rec.frames
        self.labels = list(labels)
        self.classifier = classifier
        self._source = f["source_id"].to_numpy()
        self._frame_num = f["frame_num"].to_numpy()
        self._rank: np.ndarray | None = None
        if order is not None:
            order = np.asarray(order, dtype=np.int64)
            self._rank = np.full(len(f), -1, np.int64)
            self._rank[order[::-1]] = np.arange(len(order) - 1, -1, -1)  # first occurrence
        self._kinds: dict[tuple, dict[str, list]] = {}
        self._added = 0

    def add(self, row: int, d: Detections) -> None:
        """Gather frame ``row``'s detections (a row added twice keeps both)."""
        kps = None if d.keypoints is None else int(d.keypoints.shape[1])
        kind = (d.space, len(d) == 0, d.object_ids is not None, kps)
        g = self._kinds.get(kind)
        if g is None:
            g = self._kinds[kind] = {
                k: []
                for k in ("rows", "pos", "counts", "boxes", "scores", "classes", "ids", "attrs")
            }
        pos = self._added if self._rank is None else int(self._rank[row])
        self._added += 1
        g["rows"].append(row)
        g["pos"].append(pos)
        g["counts"].append(len(d))
        if len(d):
            g["boxes"].append(d.boxes)
            g["scores"].append(d.scores)
            g["classes"].append(d.class_ids)
            if d.object_ids is not None:
                g["ids"].append(d.object_ids)
            if self.classifier:
                g["attrs"].append(attribute_indices(d))
            if len(g["boxes"]) >= self.COMPACT:
                for k in ("boxes", "scores", "classes", "ids", "attrs"):
                    if g[k]:
                        g[k] = [np.concatenate(g[k])]

    def frame(self) -> Any:
        """The DataFrame: ``row``, ``source_id``, ``frame_num``, ``x1 .. y2``, ``width``,
        ``height``, ``score``, ``class_id`` (+ ``label``, ``object_id``, ``num_keypoints``)."""
        import pandas as pd

        if not self._kinds:
            return pd.DataFrame(columns=list(FRAME_COLUMNS))
        parts, positions = [], []
        # kinds in the order their first frame comes: pandas joins columns in order of appearance
        for (space, _, has_ids, kps), g in sorted(
            self._kinds.items(), key=lambda kv: min(kv[1]["pos"])
        ):
            d = Detections(
                _joined(g["boxes"], np.float32, (0, 4)),
                _joined(g["scores"], np.float32),
                _joined(g["classes"], np.int32),
                space,
                object_ids=_joined(g["ids"], np.uint64) if has_ids else None,
            )
            if self.classifier:
                df = d.to_dataframe()
                at = df.columns.get_loc("class_id") + 1
                attrs = _joined(g["attrs"], np.int64)
                df.insert(at, "attribute", attrs)
                if self.labels:
                    names = [
                        classifier_label(self.labels, int(a), int(c))
                        for a, c in zip(attrs, d.class_ids)
                    ]
                    df.insert(at + 1, "label", names)
            else:
                df = d.to_dataframe(self.labels or None)
            if kps is not None:
                df["num_keypoints"] = kps
            counts = np.asarray(g["counts"], np.int64)
            rows = np.repeat(np.asarray(g["rows"], np.int64), counts)
            df.insert(0, "row", rows)
            df.insert(1, "source_id", self._source[rows].astype(np.int64))
            df.insert(2, "frame_num", self._frame_num[rows].astype(np.int64))
            parts.append(df)
            positions.append(np.repeat(np.asarray(g["pos"], np.int64), counts))
        out = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
        pos = np.concatenate(positions)
        if len(pos) > 1 and (np.diff(pos) < 0).any():
            out = out.take(np.argsort(pos, kind="stable"))
            out.index = pd.RangeIndex(len(out))
        return out


def attribute_indices(d: Detections) -> np.ndarray:
    """A classifier's rows' attribute (output layer) indices: ``vectors[:, 0]`` as
    ``decode:classifier`` sets it, else the row index (one attribute per row, in layer order)."""
    if d.vectors is not None and d.vectors.ndim == 2 and d.vectors.shape[1] >= 1:
        return d.vectors[:, 0].astype(np.int64)
    return np.arange(len(d), dtype=np.int64)


def is_classifier(pp: Any) -> bool:
    """Whether ``pp`` decodes with the built-in ``decode:classifier`` (its label column is then
    per attribute, nvinfer's ``labels[attribute][class_id]``)."""
    steps = getattr(pp, "steps", None) or ()
    return bool(steps) and steps[0].kind == "decode" and steps[0].name == "classifier"


def _joined(parts: list[np.ndarray], dtype: type, empty: tuple[int, ...] = (0,)) -> np.ndarray:
    if not parts:
        return np.zeros(empty, dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


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
