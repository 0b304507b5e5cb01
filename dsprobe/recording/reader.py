"""Reading recordings: ``open_recording(path_or_dir) -> Recording``.

A recording is one ``.h5`` file or several numbered segments (``run-00000.h5``, ...); segments read as
one. Frames are indexed by a global row number (the ``Recording.frames`` index); tensors and images
are read lazily, only for the rows asked for. Every problem with a file (truncated, corrupt, newer
schema, not a recording) is a :class:`RecordingError` naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from dsprobe.nvinfer.config import NvinferConfig, parse_nvinfer_config
from dsprobe.recording.frame_view import FrameView
from dsprobe.recording.schema import OBJECT_COLUMNS
from dsprobe.recording.segment_reader import RecordingError, SegmentReader, attr_text, read_guard

__all__ = ["LayerInfo", "Recording", "RecordingError", "open_recording"]


@dataclass(frozen=True)
class LayerInfo:
    """One recorded layer: ``shape`` is per frame (per object when ``per_object``), no batch axis.

    ``key`` is how :attr:`Recording.layers` names it: the layer name, or ``"<unique_id>/<name>"``
    when several GIEs recorded a layer of that name.
    """

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    unique_id: int
    per_object: bool = False
    key: str = ""


#: what one HDF5 read call costs, in bytes copied in the same time (~30 us against ~4 GB/s): rows
#: whose gaps cost less than that are read as one span and picked out, others run by run
READ_CALL_BYTES = 128 << 10


def read_rows(seg: SegmentReader, what: str, ds: Any, loc: np.ndarray, dest: np.ndarray) -> None:
    """``dest[k] = ds[loc[k]]`` for rows ``loc`` of dataset ``ds`` (no repeats, any order), ``dest``
    C-contiguous. Each run of consecutive rows is one HDF5 read straight into ``dest`` (no fancy
    selections: HDF5 is slow on those), unless reading the whole span once and picking rows out is
    cheaper (small rows with small gaps)."""
    breaks = np.flatnonzero(np.diff(loc) != 1) + 1
    if not len(breaks):
        seg.read_into(what, ds, slice(int(loc[0]), int(loc[0]) + len(loc)), dest)
        return
    lo, hi = int(loc.min()), int(loc.max())
    row_bytes = dest[:1].nbytes
    if (hi - lo + 1) * row_bytes < len(breaks) * READ_CALL_BYTES:
        dest[...] = seg.read(what, ds, slice(lo, hi + 1))[loc - lo]
        return
    starts = [0, *breaks.tolist()]
    ends = [*breaks.tolist(), len(loc)]
    for a, b in zip(starts, ends):
        seg.read_into(what, ds, slice(int(loc[a]), int(loc[a]) + b - a), dest[a:b])


def open_recording(path: str | Path) -> "Recording":
    """Open a recording file, a segment series (``run.h5`` finds ``run-00000.h5``...), or a folder."""
    p = Path(path)
    if p.is_dir():
        paths = sorted(p.glob("*.h5"))
        if not paths:
            raise RecordingError(f"{p}: no .h5 recording files in this folder")
    elif p.exists():
        paths = [p]
    else:
        paths = sorted(p.parent.glob(f"{p.stem}-[0-9][0-9][0-9][0-9][0-9]{p.suffix or '.h5'}"))
        if not paths:
            raise RecordingError(
                f"{p}: no such recording (and no segments {p.stem}-NNNNN{p.suffix or '.h5'})"
            )
    return Recording(paths)


class Recording:
    """A recording (one or more segment files). Use as a context manager or call :meth:`close`.

    * ``frames``: DataFrame, one row per frame (index = global row used by ``rec[i]``).
    * ``layers``: ``{key: LayerInfo}``; ``rec[i]`` a :class:`FrameView`; ``read_layer`` reads many rows.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self._segs: list[SegmentReader] = []
        try:
            for p in self.paths:
                self._segs.append(SegmentReader(p))
            self._check_one_recording()
        except BaseException:
            self.close()
            raise
        self._segs.sort(key=lambda s: int(s.attrs.get("segment_index", 0)))
        self.paths = [s.path for s in self._segs]
        parts = []
        for i, seg in enumerate(self._segs):
            cols = {c: v for c, v in seg.frames.items() if v.ndim == 1}
            df = pd.DataFrame(cols)
            df["network_width"], df["network_height"], df["network_channels"] = seg.frames[
                "network_size"
            ].T
            df["frame_width"], df["frame_height"] = seg.frames["frame_size"].T
            df["segment"] = i
            df["local_row"] = np.arange(len(df))
            parts.append(df)
        frames = pd.concat(parts, ignore_index=True)
        frames["has_image"] = frames["image_row"] >= 0
        frames["num_objects"] = frames["object_count"]
        frames["num_detections"] = frames["detection_count"]
        frames.index.name = "row"
        self.frames: pd.DataFrame = frames
        self._seg_of = frames["segment"].to_numpy()
        self._columns: dict[tuple[str, str], np.ndarray] = {}  # object_columns, read once
        self._local = frames["local_row"].to_numpy()
        self._frame_uid = frames["unique_id"].to_numpy()
        self._frame_layer_row = frames["layer_row"].to_numpy()

    def _check_one_recording(self) -> None:
        ids = {s.attrs.get("recording_id") for s in self._segs}
        if len(ids) > 1:
            names = ", ".join(f"{s.path.name} ({s.attrs.get('recording_id')})" for s in self._segs)
            raise RecordingError(
                f"{self.paths[0].parent}: these files belong to {len(ids)} different recordings: "
                f"{names}; open one file or one segment series"
            )

    # ------------------------------------------------------------------ file-level
    @property
    def segments(self) -> list[SegmentReader]:
        """The open files in segment order (one per path of :attr:`paths`)."""
        return list(self._segs)

    @property
    def attrs(self) -> dict[str, Any]:
        """File-level attributes of the first file (schema_version, dsprobe_version, created, host, notes...)."""
        return dict(self._segs[0].attrs)

    @property
    def notes(self) -> Any:
        raw = self.attrs.get("notes", "")
        try:
            return json.loads(raw)
        except (TypeError, ValueError):
            return raw

    @property
    def closed_cleanly(self) -> bool:
        """False when the recorder did not close the last file (crash, kill -9): frames up to its last flush."""
        return self._segs[-1].closed_cleanly

    @property
    def stats(self) -> dict[str, Any]:
        """Recorder stats as of the last flush of the last segment (counters cover the whole recording)."""
        try:
            return json.loads(self._segs[-1].attrs.get("stats", "{}"))
        except ValueError:
            return {}

    @cached_property
    def layers(self) -> dict[str, LayerInfo]:
        """key -> LayerInfo. A name recorded by several GIEs is keyed ``"<unique_id>/<name>"``."""
        infos: dict[tuple[str, int, str], tuple] = {}
        for seg in self._segs:
            for (group, uid, name), ds in seg.layer_ds.items():
                infos.setdefault((group, uid, name), (np.dtype(ds.dtype), tuple(ds.shape[1:])))
        counts: dict[str, int] = {}
        for _, _, name in infos:
            counts[name] = counts.get(name, 0) + 1
        out = {}
        for (group, uid, name), (dtype, shape) in sorted(
            infos.items(), key=lambda kv: (kv[0][1], kv[0][0])
        ):
            key = name if counts[name] == 1 else f"{uid}/{name}"
            out[key] = LayerInfo(name, dtype, shape, uid, group == "object_layers", key)
        return out

    @property
    def unique_ids(self) -> list[int]:
        """gie-unique-ids present (frames recorded or a config stored)."""
        return sorted(set(int(u) for u in self.frames["unique_id"]) | set(self._gie_attrs()))

    def _gie_attrs(self) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for seg in self._segs:
            with read_guard(seg.path, "/gies"):
                for uid, g in seg.f.get("gies", {}).items():
                    out.setdefault(int(uid), {k: attr_text(v) for k, v in g.attrs.items()})
        return out

    def _config_attrs(self, unique_id: int | None) -> dict[str, Any] | None:
        gies = {u: a for u, a in self._gie_attrs().items() if a.get("config_text")}
        if not gies:
            return None
        if unique_id is None:
            if len(gies) > 1:
                raise ValueError(
                    f"{self.paths[0]}: nvinfer configs are stored for GIEs {sorted(gies)}; "
                    "pass unique_id="
                )
            return next(iter(gies.values()))
        return gies.get(int(unique_id))

    def config_text(self, unique_id: int | None = None) -> str | None:
        """The nvinfer config text stored for ``unique_id`` (default: the only GIE with one)."""
        a = self._config_attrs(unique_id)
        return None if a is None else a["config_text"]

    def config(self, unique_id: int | None = None) -> NvinferConfig | None:
        """The nvinfer config stored for ``unique_id`` as parsed when recorded (default: the only one),
        carrying the labels read at record time: nothing on this machine is opened for it (a
        recording without stored labels gives none)."""
        a = self._config_attrs(unique_id)
        if a is None:
            return None
        where = f"{self.paths[0]}: /gies/{a.get('unique_id', unique_id)}"
        try:
            labels = json.loads(a.get("labels_json", "[]"))
            if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                raise ValueError("labels_json is not a list of text")
        except ValueError as exc:
            raise RecordingError(f"{where}: bad stored labels ({exc})") from None
        try:
            cfg = NvinferConfig.from_dict(json.loads(a["config_json"]))
        except (KeyError, TypeError, ValueError):
            # a config dict from another dsprobe version: parse the stored text
            try:
                cfg = parse_nvinfer_config(
                    str(a.get("config_text", "")), source=f"{where}/config_text"
                )
            except ValueError as exc:
                raise RecordingError(f"{where}: bad stored nvinfer config ({exc})") from None
        return replace(cfg, embedded_labels=tuple(labels))

    @property
    def streams(self) -> pd.DataFrame:
        """One row per (source_id, unique_id): frames, first/last frame_num, duration (PTS), frame gaps,
        frame size and network size."""
        f = self.frames
        if not len(f):
            return pd.DataFrame(
                columns=[
                    "source_id",
                    "unique_id",
                    "frames",
                    "first_frame",
                    "last_frame",
                    "duration_s",
                    "frame_gaps",
                    "frame_width",
                    "frame_height",
                    "network_width",
                    "network_height",
                ]
            )
        g = f.groupby(["source_id", "unique_id"])
        out = g.agg(
            frames=("frame_num", "size"),
            first_frame=("frame_num", "min"),
            last_frame=("frame_num", "max"),
            first_pts_ns=("pts_ns", "min"),
            last_pts_ns=("pts_ns", "max"),
            frame_width=("frame_width", "max"),
            frame_height=("frame_height", "max"),
            network_width=("network_width", "max"),
            network_height=("network_height", "max"),
        )
        out["duration_s"] = (out.pop("last_pts_ns") - out.pop("first_pts_ns")) / 1e9
        out["frame_gaps"] = g["frame_num"].apply(
            lambda s: int((np.diff(np.sort(s.to_numpy())) > 1).sum())
        )
        return out.reset_index()

    # ------------------------------------------------------------------ frames
    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(
        self, index: int | slice | Sequence[int] | np.ndarray
    ) -> "FrameView | list[FrameView]":
        """``rec[i]`` a FrameView; ``rec[a:b]`` / ``rec[[i, j]]`` a list of lazy FrameViews."""
        if isinstance(index, slice):
            return [self._view(i) for i in range(*index.indices(len(self)))]
        if isinstance(index, (list, tuple, np.ndarray)):
            return [self[int(i)] for i in np.asarray(index).reshape(-1)]
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(
                f"frame row {index} out of range for a recording of {len(self)} frames"
            )
        return self._view(i)

    def __iter__(self) -> Iterator["FrameView"]:
        for i in range(len(self)):
            yield self._view(i)

    def _view(self, row: int) -> FrameView:
        return FrameView(self._segs[int(self._seg_of[row])], int(self._local[row]), row)

    def find(self, source_id: int, frame_num: int, unique_id: int | None = None) -> "FrameView":
        """The frame of ``source_id`` with ``frame_num`` (and GIE ``unique_id`` if several)."""
        f = self.frames
        m = (f["source_id"] == source_id) & (f["frame_num"] == frame_num)
        if unique_id is not None:
            m &= f["unique_id"] == unique_id
        rows = np.flatnonzero(m.to_numpy())
        if not len(rows):
            raise KeyError(
                f"{self.paths[0]}: no frame {frame_num} of source {source_id}"
                f"{f' from GIE {unique_id}' if unique_id is not None else ''}"
            )
        return self._view(int(rows[0]))

    def layer(
        self, name: str, unique_id: int | None = None, per_object: bool | None = None
    ) -> LayerInfo:
        """The LayerInfo of layer ``name`` (a key of :attr:`layers`, or a name plus ``unique_id``)."""
        if (
            unique_id is None
            and name in self.layers
            and per_object in (None, self.layers[name].per_object)
        ):
            return self.layers[name]
        cands = [
            i
            for i in self.layers.values()
            if i.name == name
            and (per_object is None or i.per_object == per_object)
            and (unique_id is None or i.unique_id == unique_id)
        ]
        if len(cands) == 1:
            return cands[0]
        have = (
            ", ".join(
                f"{k} {i.dtype}{list(i.shape)} (GIE {i.unique_id}{', per object' if i.per_object else ''})"
                for k, i in self.layers.items()
            )
            or "(none)"
        )
        if not cands:
            raise KeyError(
                f"{self.paths[0]}: no layer {name!r}"
                f"{f' from GIE {unique_id}' if unique_id is not None else ''}; recorded layers: {have}"
            )
        raise KeyError(
            f"{self.paths[0]}: layer {name!r} was recorded by GIEs "
            f"{sorted(i.unique_id for i in cands)}; pass unique_id="
        )

    def read_layer(
        self,
        name: str,
        rows: Sequence[int] | np.ndarray | None = None,
        unique_id: int | None = None,
        *,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Layer ``name`` for many rows in one read per segment: ``(len(rows), *shape)``.

        For a frame-level layer ``rows`` are frame rows (``frames`` index; default: every frame of the
        GIE); for a per-object (SGIE) layer they are rows of :meth:`object_table` (default: all objects
        with tensors of that GIE).

        Rows are read by HDF5 straight into the result (one read per run of consecutive rows, the
        usual replay: one per segment), with no copy after it; repeated rows, or rows of several
        segments interleaved, are read once each and then placed. ``out``: a C-contiguous array of
        that shape and dtype to fill and return instead of a new one (a buffer reused across blocks
        saves allocating and touching fresh memory).
        """
        info = self.layer(name, unique_id)
        uid_col, layer_rows, segment = (
            self._object_index if info.per_object else self._frame_index()
        )
        if rows is None:
            rows = np.flatnonzero((uid_col == info.unique_id) & (layer_rows >= 0))
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        shape = (len(rows), *info.shape)
        if out is None:
            out = np.empty(shape, dtype=info.dtype)
        elif (
            not isinstance(out, np.ndarray)
            or out.shape != shape
            or out.dtype != info.dtype
            or not out.flags.c_contiguous
            or not out.flags.writeable
        ):
            got = (
                f"{out.dtype}{list(out.shape)}"
                if isinstance(out, np.ndarray)
                else type(out).__name__
            )
            raise ValueError(
                f"{self.paths[0]}: read_layer({name!r}, out=...) needs a writeable C-contiguous "
                f"{info.dtype}{list(shape)} array, got {got}"
            )
        if not len(rows):
            return out
        if rows.min() < 0 or rows.max() >= len(layer_rows):
            raise IndexError(
                f"{self.paths[0]}: rows out of range 0..{len(layer_rows) - 1} for layer {name!r}"
            )
        local = layer_rows[rows]
        bad = (local < 0) | (uid_col[rows] != info.unique_id)
        if bad.any():
            r = int(rows[np.flatnonzero(bad)[0]])
            raise KeyError(
                f"{self.paths[0]}: {'object' if info.per_object else 'frame'} row {r} has no layer "
                f"{name!r} of GIE {info.unique_id}"
            )
        seg_idx = segment[rows]
        group = "object_layers" if info.per_object else "layers"
        what = f"layer {name!r}"
        if out.size == 0:  # rows of an empty layer shape: nothing to read
            return out
        one_segment = len(self._segs) == 1 or bool((seg_idx == seg_idx[0]).all())
        for s in [seg_idx[0]] if one_segment else np.unique(seg_idx):
            seg = self._segs[int(s)]
            ds = seg.layer_ds.get((group, info.unique_id, info.name))
            if ds is None:
                raise RecordingError(
                    f"{seg.path}: layer {name!r} of GIE {info.unique_id} is missing"
                )
            sel: slice | np.ndarray = (
                slice(0, len(rows)) if one_segment else np.flatnonzero(seg_idx == s)
            )
            if isinstance(sel, np.ndarray) and sel[-1] - sel[0] + 1 == len(sel):
                sel = slice(int(sel[0]), int(sel[-1]) + 1)
            loc = local[sel]
            step = np.diff(loc)
            if isinstance(sel, slice) and (step == 1).all():  # the usual replay: one read
                seg.read_into(what, ds, slice(int(loc[0]), int(loc[-1]) + 1), out[sel])
                continue
            if isinstance(sel, slice) and ((step > 0).all() or len(np.unique(loc)) == len(loc)):
                read_rows(seg, what, ds, loc, out[sel])  # gaps or another order, no repeats
                continue
            # rows of segments interleaved, or repeated: each row read once, then placed
            uniq, inverse = np.unique(loc, return_inverse=True)
            block = np.empty((len(uniq), *info.shape), dtype=info.dtype)
            read_rows(seg, what, ds, uniq, block)
            out[sel] = block[inverse.reshape(-1)]
        return out

    def _frame_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(unique_id, layer_row, segment)`` of every frame row (columns of :attr:`frames`)."""
        return self._frame_uid, self._frame_layer_row, self._seg_of

    @cached_property
    def _object_index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(unique_id, layer_row, segment)`` of every row of ``object_table("objects")``, taken
        once as numpy (a block read must not copy the whole table)."""
        t = self.object_columns("objects", ["row", "layer_row", "segment"])
        uid = self._frame_index()[0][t["row"]] if len(t["row"]) else np.zeros(0, np.int64)
        return uid, t["layer_row"], t["segment"]

    def object_table(self, kind: str = "objects") -> pd.DataFrame:
        """All ``"objects"`` (SGIE inputs, with ``layer_row``) or ``"detections"`` (pipeline objects);
        ``row`` is the frame row, ``left, top, width, height`` frame pixels."""
        if kind not in ("objects", "detections"):
            raise ValueError(f"kind must be 'objects' or 'detections', got {kind!r}")
        return self._object_tables[kind].copy()

    def object_columns(
        self, kind: str = "objects", columns: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Columns of :meth:`object_table` as numpy arrays, each read once and then shared
        (read-only): the stored columns (``rect`` ``(N, 4)`` left, top, width, height in frame
        pixels, ``label`` as UTF-8 bytes, ...) with ``row`` (frame row) for ``frame_row``, and
        ``segment``; ``columns``: those only (default all). For code that needs a few columns of many
        objects (SGIE replay) without building the DataFrame."""
        if kind not in ("objects", "detections"):
            raise ValueError(f"kind must be 'objects' or 'detections', got {kind!r}")
        names = [*OBJECT_COLUMNS, "row", "segment"]
        names.remove("frame_row")
        if columns is not None:
            unknown = [c for c in columns if c not in names]
            if unknown:
                raise KeyError(f"no object column {unknown[0]!r}; columns: {', '.join(names)}")
            names = list(columns)
        return {c: self._object_column(kind, c) for c in names}

    def _object_column(self, kind: str, name: str) -> np.ndarray:
        key = (kind, name)
        cached = self._columns.get(key)
        if cached is not None:
            return cached
        parts = []
        for i, seg in enumerate(self._segs):
            fr = seg.frames
            prefix = "object" if kind == "objects" else "detection"
            n = (
                int(fr[f"{prefix}_start"][-1] + fr[f"{prefix}_count"][-1])
                if len(fr["source_id"])
                else 0
            )
            if name == "segment":
                parts.append(np.full(n, i, np.int64))
                continue
            stored = "frame_row" if name == "row" else name
            a = seg.read(f"/{kind}", seg.f[f"{kind}/{stored}"], slice(0, n))
            parts.append(a + int(self._row_offsets[i]) if name == "row" else a)
        out = np.concatenate(parts)
        out.setflags(write=False)
        self._columns[key] = out
        return out

    @cached_property
    def _row_offsets(self) -> np.ndarray:
        """The global frame row of each segment's first frame."""
        return np.concatenate([[0], np.cumsum([len(s.frames["source_id"]) for s in self._segs])])

    @cached_property
    def _object_tables(self) -> dict[str, pd.DataFrame]:
        out = {}
        for kind in ("objects", "detections"):
            cols = self.object_columns(kind)
            df = pd.DataFrame(
                {c: v for c, v in cols.items() if v.ndim == 1 and c not in ("row", "segment")}
            )
            df[["left", "top", "width", "height"]] = cols["rect"].reshape(-1, 4)
            df["label"] = [b.decode("utf-8", "replace") for b in cols["label"]]
            df["row"] = cols["row"]
            df["segment"] = cols["segment"]
            out[kind] = df
        return out

    def close(self) -> None:
        for s in self._segs:
            try:
                s.f.close()
            except Exception:
                pass

    def __enter__(self) -> "Recording":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        more = f" +{len(self.paths) - 1} segments" if len(self.paths) > 1 else ""
        return f"Recording({str(self.paths[0])!r}{more}, frames={len(self)}, layers={list(self.layers)})"
