"""One recording file opened for reading (:class:`SegmentReader`): header and schema checks, the tables'
lengths after a crash (only frames whose objects, images and tensors all reached the disk count), and
reads that turn HDF5 errors into a :class:`RecordingError` naming the file."""

from __future__ import annotations

import re
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from dsprobe.recording.file_checks import (
    RecordingError,
    check_images,
    check_links,
    check_table,
    layer_datasets,
)
from dsprobe.recording.output import holder_text
from dsprobe.recording.schema import (
    CLASSIFICATION_COLUMNS,
    CLASSIFICATION_TABLES,
    FORMAT_NAME,
    FRAME_COLUMNS,
    IMAGE_COLUMNS,
    OBJECT_COLUMNS,
    SCHEMA_VERSION,
)
from dsprobe.records import Classification

_LAYER_GROUPS = ("layers", "object_layers")


@contextmanager
def read_guard(path: Path, what: str) -> Iterator[None]:
    """Turn h5py/HDF5 errors while reading ``what`` into a RecordingError naming the file."""
    try:
        yield
    except RecordingError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError) as exc:
        raise RecordingError(
            f"{path}: cannot read {what}: the file is damaged or truncated "
            f"({type(exc).__name__}: {exc})"
        ) from None


def attr_text(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        return v.item()
    return v


class SegmentReader:
    """One open file: its tables' consistent lengths and its layer datasets."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.f = _open(path)
        try:
            with read_guard(path, "the file header"):
                self.attrs = {k: attr_text(v) for k, v in self.f.attrs.items()}
            if self.attrs.get("format") != FORMAT_NAME:
                raise RecordingError(
                    f"{path}: an HDF5 file but not a dsprobe recording "
                    f"(no format='{FORMAT_NAME}' attribute)"
                )
            version = _int_attr(path, self.attrs, "schema_version", -1)
            if version > SCHEMA_VERSION:
                raise RecordingError(
                    f"{path}: written with recording schema {version}, this dsprobe reads up to "
                    f"{SCHEMA_VERSION}; upgrade dsprobe"
                )
            if version < 1:
                raise RecordingError(f"{path}: bad schema_version attribute {version}")
            with read_guard(path, "the tables"):
                self._load()
        except BaseException:
            self.f.close()
            raise

    def _load(self) -> None:
        f, path = self.f, self.path
        clean = self.closed_cleanly = bool(self.attrs.get("closed_cleanly", False))
        size = path.stat().st_size
        check_links(f, path)
        self.layer_ds = layer_datasets(f, path, size)
        n_obj = check_table(f, path, "objects", OBJECT_COLUMNS, clean, size)
        n_det = check_table(f, path, "detections", OBJECT_COLUMNS, clean, size)
        n_img = check_table(f, path, "images", IMAGE_COLUMNS, clean, size)
        if "classifications" in f:
            check_table(f, path, "classifications", CLASSIFICATION_COLUMNS, clean, size)
        data = f.get("images/data")
        if not isinstance(data, h5py.Dataset) or data.dtype != np.uint8 or data.ndim != 1:
            raise RecordingError(f"{path}: /images/data is missing or not a 1-D uint8 dataset")
        images = {c: f[f"images/{c}"][:n_img] for c in ("encoding", "offset", "nbytes", "shape")}
        n_img = check_images(path, images, data.shape[0], clean)
        n = check_table(f, path, "frames", FRAME_COLUMNS, clean, size)
        committed = _int_attr(path, self.attrs, "frames_committed", n)
        if clean and committed != n:
            raise RecordingError(
                f"{path}: /frames has {n} rows but frames_committed says {committed} in a cleanly "
                "closed file"
            )
        n = min(n, max(0, committed))
        frames = {c: f[f"frames/{c}"][:n] for c in FRAME_COLUMNS}
        objects = {c: f[f"objects/{c}"][:n_obj] for c in ("frame_row", "layer_row", "image_row")}
        ok = frames_ok(frames, objects, self.layer_ds, (n_obj, n_det, n_img))
        if not ok.all():
            first = int(np.argmin(ok))
            if clean:
                raise RecordingError(
                    f"{path}: /frames row {first} points at objects, detections, an image or "
                    "layer rows that are not in the file (a cleanly closed file must not)"
                )
            frames = {c: v[:first] for c, v in frames.items()}  # after a crash: the complete ones
        self.frames = frames

    def classifications(self, frame_row: int, table: str) -> dict[int, list[Classification]]:
        """``{object index: [Classification]}`` of one frame's ``table`` ("objects" or
        "detections"); empty for files without a /classifications table."""
        rows = self.classification_rows
        if rows is None:
            return {}
        lo, hi = np.searchsorted(rows, [frame_row, frame_row + 1])
        if lo == hi:
            return {}
        g = self.f["classifications"]
        cols = {
            c: self.read("/classifications", g[c], slice(lo, hi)) for c in CLASSIFICATION_COLUMNS
        }
        out: dict[int, list[Classification]] = {}
        code = CLASSIFICATION_TABLES.index(table)
        for k in range(hi - lo):
            if int(cols["table"][k]) != code:
                continue
            out.setdefault(int(cols["object_index"][k]), []).append(
                Classification(
                    unique_component_id=int(cols["unique_component_id"][k]),
                    attribute=int(cols["attribute"][k]),
                    class_id=int(cols["class_id"][k]),
                    confidence=float(cols["confidence"][k]),
                    label=cols["label"][k].decode("utf-8", "replace"),
                )
            )
        return out

    @cached_property
    def classification_rows(self) -> np.ndarray | None:
        """The /classifications frame_row column (sorted: rows are written in frame order); None
        for files written before the table existed. Rows of frames lost in a crash may follow."""
        if "classifications" not in self.f:
            return None
        g = self.f["classifications"]
        n = min(g[c].shape[0] for c in CLASSIFICATION_COLUMNS)
        return self.read("/classifications", g["frame_row"], slice(0, n))

    def read(self, what: str, ds: h5py.Dataset, sel: Any) -> np.ndarray:
        with read_guard(self.path, what):
            return ds[sel]

    def read_into(self, what: str, ds: h5py.Dataset, rows: slice, dest: np.ndarray) -> None:
        """``dest[...] = ds[rows]`` with no array in between: one HDF5 read of the rows
        ``rows.start`` .. ``rows.stop - 1`` straight into ``dest`` (C-contiguous, as many rows, the
        dataset's dtype and row shape)."""
        with read_guard(self.path, what):
            fspace = ds.id.get_space()
            fspace.select_hyperslab(
                (rows.start,) + (0,) * (dest.ndim - 1), (rows.stop - rows.start, *dest.shape[1:])
            )
            ds.id.read(h5py.h5s.create_simple(dest.shape), fspace, dest)


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        try:
            empty = path.stat().st_size == 0
        except OSError:
            raise RecordingError(f"{path}: cannot open: {exc}") from None
        if empty:
            raise RecordingError(f"{path}: empty file, not a recording") from None
        who = writer_of(path)
        if who is not None or "unable to lock file" in str(exc).lower():
            raise RecordingError(
                f"{path}: being written by another process ({who or 'it holds the file lock'}); "
                "open it once the recorder has closed it"
            ) from None
        raise RecordingError(
            f"{path}: cannot open as HDF5: the file is truncated, corrupt or not HDF5 ({exc})"
        ) from None


def writer_of(path: Path) -> str | None:
    """Who is writing the recording ``path`` belongs to (its own lock or its series'), or None."""
    m = re.fullmatch(r"(.*)-\d{5}(\.[^.]*)?", path.name)
    candidates = [path] + ([path.with_name(m.group(1) + (m.group(2) or ".h5"))] if m else [])
    for p in candidates:
        who = holder_text(p)
        if who is not None:
            return who
    return None


def _int_attr(path: Path, attrs: dict, name: str, default: int) -> int:
    value = attrs.get(name, default)
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise RecordingError(f"{path}: attribute {name}={value!r} is not an integer")
    return int(value)


def per_uid_value(per_uid: dict[int, tuple[int, int]], uids: np.ndarray) -> np.ndarray:
    """``per_uid[u][1]`` (per-object layer rows of GIE ``u``; 0 for a GIE not listed) for each of
    ``uids``, without a Python loop over them (one per object)."""
    keys = np.array(sorted(per_uid), dtype=np.int64)
    if not len(keys):
        return np.zeros(len(uids), np.int64)
    values = np.array([per_uid[int(k)][1] for k in keys], dtype=np.int64)
    pos = np.minimum(np.searchsorted(keys, uids), len(keys) - 1)
    return np.where(keys[pos] == uids, values[pos], 0)


def frames_ok(
    frames: dict[str, np.ndarray],
    objects: dict[str, np.ndarray],
    layer_ds: dict[tuple[str, int, str], h5py.Dataset],
    lengths: tuple[int, int, int],
) -> np.ndarray:
    """Per frame: True when every row it points at (objects, detections, image, frame-level and
    per-object layer rows) is in the file."""
    n_obj, n_det, n_img = lengths

    def rows_of(group: str, uid: int) -> int:
        return min(
            (ds.shape[0] for (g, u, _), ds in layer_ds.items() if g == group and u == uid),
            default=0,
        )

    uids = frames["unique_id"]
    per_uid = {
        int(u): (rows_of("layers", u), rows_of("object_layers", u)) for u in set(uids.tolist())
    }
    frame_layers = np.array([per_uid[int(u)][0] for u in uids], dtype=np.int64)
    obj_end = frames["object_start"] + frames["object_count"]
    ok = (
        (frames["object_start"] >= 0)
        & (frames["object_count"] >= 0)
        & (obj_end <= n_obj)
        & (frames["detection_start"] >= 0)
        & (frames["detection_count"] >= 0)
        & (frames["detection_start"] + frames["detection_count"] <= n_det)
        & (frames["image_row"] < n_img)
        & (frames["layer_row"] < frame_layers)
    )
    if n_obj and len(uids):  # each object's layer and crop rows, judged by its frame's GIE
        fr = objects["frame_row"]
        valid = (fr >= 0) & (fr < len(uids))
        obj_uid = np.where(valid, uids[np.clip(fr, 0, len(uids) - 1)], 0)
        obj_layers = per_uid_value(per_uid, obj_uid)
        bad = ~valid | (objects["layer_row"] >= obj_layers) | (objects["image_row"] >= n_img)
        bad_before = np.concatenate([[0], np.cumsum(bad)])
        start = np.clip(frames["object_start"], 0, n_obj)
        end = np.clip(obj_end, 0, n_obj)
        ok &= bad_before[end] - bad_before[start] == 0
    return ok
