"""One recording file opened for reading (:class:`SegmentReader`): header and schema checks, the tables'
lengths after a crash (only frames whose objects, images and tensors all reached the disk count), and
reads that turn HDF5 errors into a :class:`RecordingError` naming the file."""

from __future__ import annotations

from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from dsprobe.recording.schema import (
    CLASSIFICATION_COLUMNS,
    CLASSIFICATION_TABLES,
    FORMAT_NAME,
    FRAME_COLUMNS,
    IMAGE_COLUMNS,
    OBJECT_COLUMNS,
    SCHEMA_VERSION,
    layer_name_of,
)
from dsprobe.records import Classification

_LAYER_GROUPS = ("layers", "object_layers")


class RecordingError(ValueError):
    """A file that is not a readable dsprobe recording; the message names the file and the problem."""


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
        try:
            self.f = h5py.File(path, "r")
        except OSError as exc:
            if path.stat().st_size == 0:
                raise RecordingError(f"{path}: empty file, not a recording") from None
            raise RecordingError(
                f"{path}: cannot open as HDF5: the file is truncated, corrupt or not HDF5 ({exc})"
            ) from None
        try:
            with read_guard(path, "the file header"):
                self.attrs = {k: attr_text(v) for k, v in self.f.attrs.items()}
            if self.attrs.get("format") != FORMAT_NAME:
                raise RecordingError(
                    f"{path}: an HDF5 file but not a dsprobe recording "
                    f"(no format='{FORMAT_NAME}' attribute)"
                )
            version = int(self.attrs.get("schema_version", -1))
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
        f = self.f
        self.layer_ds: dict[tuple[str, int, str], h5py.Dataset] = {}
        for group in _LAYER_GROUPS:
            for uid, g in f.get(group, {}).items():
                for h5name, ds in g.items():
                    name = attr_text(ds.attrs.get("layer_name", layer_name_of(h5name)))
                    self.layer_ds[(group, int(uid), name)] = ds
        n_obj = self._length("objects", OBJECT_COLUMNS)
        n_det = self._length("detections", OBJECT_COLUMNS)
        n_img = self._length("images", IMAGE_COLUMNS)
        img_end = f["images/offset"][:n_img] + f["images/nbytes"][:n_img]
        fits = img_end <= f["images/data"].shape[0]
        n_img = n_img if fits.all() else int(np.argmin(fits))
        n = self._length("frames", FRAME_COLUMNS)
        if not self.attrs.get("closed_cleanly", False):
            n = min(n, int(self.attrs.get("frames_committed", n)))
        frames = {c: f[f"frames/{c}"][:n] for c in FRAME_COLUMNS}
        # after a crash only frames whose objects, images and tensors all made it to disk count
        layer_len = {
            uid: min(
                (
                    ds.shape[0]
                    for (grp, u, _), ds in self.layer_ds.items()
                    if grp == "layers" and u == uid
                ),
                default=0,
            )
            for uid in set(frames["unique_id"])
        }
        ok = (
            (frames["object_start"] + frames["object_count"] <= n_obj)
            & (frames["detection_start"] + frames["detection_count"] <= n_det)
            & (frames["image_row"] < n_img)
            & (
                frames["layer_row"]
                < np.array([layer_len[u] for u in frames["unique_id"]], dtype=np.int64)
            )
        )
        if not ok.all():
            n = int(np.argmin(ok))
            frames = {c: v[:n] for c, v in frames.items()}
        self.frames = frames
        self.closed_cleanly = bool(self.attrs.get("closed_cleanly", False))

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

    def _length(self, name: str, columns: dict) -> int:
        if name not in self.f:
            raise RecordingError(f"{self.path}: table /{name} is missing")
        return min(self.f[f"{name}/{c}"].shape[0] for c in columns)

    def read(self, what: str, ds: h5py.Dataset, sel: Any) -> np.ndarray:
        with read_guard(self.path, what):
            return ds[sel]
