"""What a reader checks before it trusts a recording file (a recording may come from anywhere):

* nothing leaves the file: no external or soft links, no external storage, no virtual datasets;
* every table column has the schema's dtype, rank and per-row shape; layers are numeric datasets of
  rank >= 1 under ``/layers/<unique_id>/``;
* no read asks for more memory than the file can hold (its size, times the best ratio a filter can
  reach when the dataset is compressed);
* the rows the frames point at exist (in a cleanly closed file a row that does not is an error; after
  a crash the frames past the last complete one are left out).

Every failure is a :class:`RecordingError` naming the file and the object."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import h5py
import numpy as np

from dsprobe.recording.schema import IMAGE_ENCODINGS, layer_name_of

#: deflate's best ratio is about 1032:1; no filtered chunk may promise more than this
MAX_FILTER_RATIO = 1100
#: one layer row (one frame or object) may hold at most this many bytes
MAX_ROW_BYTES = 1 << 30
LAYER_GROUPS = ("layers", "object_layers")


class RecordingError(ValueError):
    """A file that is not a readable dsprobe recording; the message names the file and the problem."""


def check_links(f: h5py.File, path: Path) -> None:
    """No soft or external link, no external storage, no virtual dataset anywhere in the file."""

    def visit(name: str, link: object) -> str | None:  # a non-None return stops the walk
        if isinstance(link, (h5py.SoftLink, h5py.ExternalLink)):
            kind = "an external link" if isinstance(link, h5py.ExternalLink) else "a soft link"
            return f"/{name} is {kind}; a recording holds its data itself (refused)"
        obj = f.get(name)
        if isinstance(obj, h5py.Dataset) and (obj.is_virtual or obj.external):
            kind = "a virtual dataset" if obj.is_virtual else "stored in external files"
            return f"/{name} is {kind}; refused"
        return None

    problem = f.visititems_links(visit)  # (raising inside an HDF5 callback is not safe)
    if problem:
        raise RecordingError(f"{path}: {problem}")


def byte_limit(ds: h5py.Dataset, file_size: int) -> int:
    """The most bytes ``ds`` can honestly give: the file's size, times the filter ratio if it is
    compressed (plus a chunk's worth of slack)."""
    chunk = int(np.prod(ds.chunks)) * ds.dtype.itemsize if ds.chunks else 0
    ratio = MAX_FILTER_RATIO if (ds.compression or ds._filters) else 1
    return file_size * ratio + chunk + (1 << 20)


def check_table(
    f: h5py.File,
    path: Path,
    name: str,
    columns: Mapping[str, tuple[str, tuple[int, ...]]],
    clean: bool,
    file_size: int,
) -> int:
    """Rows of table ``name`` every column has (checked against the schema); RecordingError on a
    missing or malformed column, or (``clean``) columns of different lengths."""
    g = f.get(name)
    if not isinstance(g, h5py.Group):
        raise RecordingError(f"{path}: table /{name} is missing or not a group")
    lengths = {}
    for col, (dtype, shape) in columns.items():
        ds = g.get(col)
        where = f"{path}: /{name}/{col}"
        if not isinstance(ds, h5py.Dataset):
            raise RecordingError(f"{where} is missing or not a dataset")
        if ds.dtype != np.dtype(dtype) or ds.ndim != 1 + len(shape) or ds.shape[1:] != shape:
            raise RecordingError(
                f"{where} is {ds.dtype}{list(ds.shape)}, the schema says {dtype} rows of {list(shape)}"
            )
        lengths[col] = ds.shape[0]
        if lengths[col] * max(1, int(np.prod(shape))) * ds.dtype.itemsize > byte_limit(
            ds, file_size
        ):
            raise RecordingError(f"{where} claims {lengths[col]} rows, more than the file holds")
    if clean and len(set(lengths.values())) > 1:
        raise RecordingError(
            f"{path}: table /{name} has columns of different lengths {lengths} in a cleanly "
            "closed file"
        )
    return min(lengths.values())


def layer_datasets(
    f: h5py.File, path: Path, file_size: int
) -> dict[tuple[str, int, str], h5py.Dataset]:
    """``{(group, unique_id, layer name): dataset}``, each checked (numeric, rank >= 1, rows that fit)."""
    out: dict[tuple[str, int, str], h5py.Dataset] = {}
    for group in LAYER_GROUPS:
        top = f.get(group)
        if top is None:
            continue
        if not isinstance(top, h5py.Group):
            raise RecordingError(f"{path}: /{group} is not a group")
        for uid, g in top.items():
            try:
                unique_id = int(uid)
            except ValueError:
                raise RecordingError(f"{path}: /{group}/{uid} is not a gie-unique-id") from None
            if not isinstance(g, h5py.Group):
                raise RecordingError(f"{path}: /{group}/{uid} is not a group")
            for h5name, ds in g.items():
                out[(group, unique_id, _layer_name(path, ds, h5name))] = _check_layer(
                    path, ds, f"/{group}/{uid}/{h5name}", file_size
                )
    return out


def _layer_name(path: Path, ds: object, h5name: str) -> str:
    raw = getattr(ds, "attrs", {}).get("layer_name", layer_name_of(h5name))
    name = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if not isinstance(name, str):
        raise RecordingError(f"{path}: layer {h5name!r} has a layer_name that is not text")
    return name


def _check_layer(path: Path, ds: object, where: str, file_size: int) -> h5py.Dataset:
    if not isinstance(ds, h5py.Dataset):
        raise RecordingError(f"{path}: {where} should be a layer dataset, it is a group")
    dt = ds.dtype
    if dt.kind not in "fiub" or dt.itemsize > 8 or ds.ndim < 1:
        raise RecordingError(
            f"{path}: {where} is {dt}{list(ds.shape)}; a layer is a numeric dataset of "
            "(rows, *shape)"
        )
    row_bytes = int(np.prod(ds.shape[1:], dtype=np.float64)) * dt.itemsize
    if row_bytes > min(MAX_ROW_BYTES, byte_limit(ds, file_size)):
        raise RecordingError(
            f"{path}: {where} declares rows of {list(ds.shape[1:])} ({row_bytes} bytes), more than "
            "the file can hold"
        )
    return ds


def check_images(path: Path, images: Mapping[str, np.ndarray], data_len: int, clean: bool) -> int:
    """Rows of /images whose bytes lie inside /images/data and whose encoding and shape make sense;
    in a cleanly closed file a bad row is an error."""
    enc, off, nb, shape = images["encoding"], images["offset"], images["nbytes"], images["shape"]
    ok = (
        (enc < len(IMAGE_ENCODINGS))
        & (off >= 0)
        & (nb >= 0)
        & (off + nb <= data_len)
        & (shape >= 0).all(axis=1)
    )
    raw = enc == 0
    ok &= ~raw | (shape.astype(np.int64).prod(axis=1) == nb)
    if ok.all():
        return len(enc)
    first = int(np.argmin(ok))
    if clean:
        raise RecordingError(
            f"{path}: /images row {first} is inconsistent (encoding {int(enc[first])}, offset "
            f"{int(off[first])}, {int(nb[first])} bytes, shape {shape[first].tolist()}, "
            f"{data_len} bytes stored) in a cleanly closed file"
        )
    return first
