"""The appendable HDF5 datasets a segment writes in blocks: row buffers kept in memory until the next
block write (:class:`RowBuffer`), column tables (:class:`Table`), one dataset per layer
(:class:`LayerSet`) and the image byte store (:class:`ByteStore`)."""

from __future__ import annotations

import math
from typing import Any, Mapping

import h5py
import numpy as np
from h5py import h5s

from dsprobe.recording.schema import (
    IMAGE_CHUNK_BYTES,
    compression_options,
    hdf5_name,
    layer_chunks,
    table_chunks,
)


def write_rows(ds: h5py.Dataset, start: int, block: np.ndarray) -> None:
    """Write ``block`` (rows, *row shape; C-contiguous, the dataset's dtype) at row ``start`` of
    ``ds`` (already long enough), through h5py's low-level calls: its slicing costs ~3x as much per
    call (measured ~110 us against ~40 us with the resize), and a block write makes one call per
    dataset."""
    dsid = ds.id
    space = dsid.get_space()
    space.select_hyperslab((start,) + (0,) * (block.ndim - 1), block.shape)
    dsid.write(h5s.create_simple(block.shape), space, block)


class RowBuffer:
    """Rows kept in memory until the next block write: ``append`` numbers them, ``discard`` forgets
    the unwritten ones, ``take`` hands them out with the file row of the first one."""

    def __init__(self) -> None:
        self.pending: list = []
        self.count = 0  # rows numbered so far (written + pending)

    def append(self, row: Any) -> int:
        self.pending.append(row)
        self.count += 1
        return self.count - 1

    def discard(self, keep: int = 0) -> None:
        """Forget the pending rows after the first ``keep``."""
        self.count -= len(self.pending) - keep
        self.pending = self.pending[:keep]

    def take(self) -> tuple[int, list]:
        rows, self.pending = self.pending, []
        return self.count - len(rows), rows


class Table(RowBuffer):
    """A group of equal-length column datasets, appended in blocks. A row is a tuple of the column
    values in the order of ``columns`` (the schema's order); a block write turns the pending rows
    into one array at C speed and writes each column once.

    A table whose columns are all signed integers (``/frames``) takes *flat* rows: the values of a
    sub-array column spread out in place (``network_size`` as three values), converted at a block
    write into one 2-D int64 array (about twice as fast as a structured array) and cut into columns;
    the values in the file are the same (every value was checked to fit its column)."""

    def __init__(
        self, f: h5py.File, name: str, columns: Mapping[str, tuple[str, tuple[int, ...]]]
    ) -> None:
        g = f.require_group(name)
        self.ds = {
            c: g.create_dataset(
                c,
                shape=(0, *shape),
                maxshape=(None, *shape),
                dtype=dtype,
                chunks=table_chunks(dtype, shape),
            )
            for c, (dtype, shape) in columns.items()
        }
        self.row_dtype = np.dtype([(c, dtype, shape) for c, (dtype, shape) in columns.items()])
        #: rows are flat tuples of ints: all columns are signed integers of at most 64 bits
        self.flat = all(np.dtype(d).kind == "i" for d, _ in columns.values())
        self.spans: list[tuple[str, int, int, np.dtype, tuple[int, ...]]] = []
        at = 0
        for c, (dtype, shape) in columns.items():
            width = math.prod(shape)
            self.spans.append((c, at, at + width, np.dtype(dtype), shape))
            at += width
        super().__init__()

    def write(self) -> None:
        n0, rows = self.take()
        if not rows:
            return
        n = len(rows)
        if self.flat:
            flat = np.array(rows, dtype=np.int64)
            cols = {
                c: np.ascontiguousarray(flat[:, a:b], dtype=dt).reshape(n, *shape)
                for c, a, b, dt, shape in self.spans
            }
        else:
            block = np.array(rows, dtype=self.row_dtype)
            cols = {c: np.ascontiguousarray(block[c]) for c in self.ds}
        for c, ds in self.ds.items():
            ds.id.set_extent((self.count, *ds.shape[1:]))
            write_rows(ds, n0, cols[c])


class ByteStore:
    """A 1-D uint8 dataset appended in whole chunks: full chunks go straight to the file
    (``write_direct_chunk``, no cache copy); the unfinished last chunk is kept in a buffer and its new
    bytes are written normally so that a flush puts them on disk."""

    def __init__(self, f: h5py.File, name: str, chunk: int = IMAGE_CHUNK_BYTES) -> None:
        self.ds = f.create_dataset(
            name, shape=(0,), maxshape=(None,), chunks=(chunk,), dtype=np.uint8
        )
        self.chunk = chunk
        self.tail = np.zeros(chunk, np.uint8)  # bytes of the unfinished last chunk
        self.tail_len = 0  # of which this many are valid
        self.tail_written = 0  # and this many are already in the file
        self.size = 0

    def extend(self, payloads: list[np.ndarray]) -> None:
        total = self.size + sum(int(p.size) for p in payloads)
        self.ds.resize((total,))
        for p in payloads:
            pos, n = 0, int(p.size)
            while pos < n:
                if (
                    self.tail_len == 0 and n - pos >= self.chunk
                ):  # a whole chunk straight from the payload
                    self.ds.id.write_direct_chunk((self.size,), p[pos : pos + self.chunk])
                    k = self.chunk
                else:
                    k = min(self.chunk - self.tail_len, n - pos)
                    self.tail[self.tail_len : self.tail_len + k] = p[pos : pos + k]
                    self.tail_len += k
                    if self.tail_len == self.chunk:
                        self.ds.id.write_direct_chunk((self.size + k - self.chunk,), self.tail)
                        self.tail_len = self.tail_written = 0
                pos += k
                self.size += k
        if self.tail_len > self.tail_written:  # the new bytes of the unfinished chunk
            start = self.size - self.tail_len
            self.ds[start + self.tail_written : self.size] = self.tail[
                self.tail_written : self.tail_len
            ]
            self.tail_written = self.tail_len


class LayerSet(RowBuffer):
    """One layer's dataset: (rows, *shape) with its true dtype, chunks of whole frames (~1 MiB)."""

    def __init__(
        self,
        f: h5py.File,
        group: str,
        uid: int,
        name: str,
        first: np.ndarray,
        compression: str | None,
    ) -> None:
        self.name = name
        self.shape = first.shape
        # numpy's shared instance of the (native) dtype: the writer's fast path compares with ``is``
        # (a dtype with metadata, e.g. h5py's enum, is kept as it is: the file stores what it says)
        native = first.dtype.newbyteorder("=")
        self.dtype = np.dtype(native.str) if native.metadata is None else native
        chunks = layer_chunks(first.shape, first.dtype)
        opts = compression_options(compression, first.dtype.itemsize) if chunks else {}
        self.ds = f.create_dataset(
            f"{group}/{uid}/{hdf5_name(name)}",
            shape=(0, *first.shape),
            maxshape=(None, *first.shape),
            dtype=self.dtype,
            chunks=chunks,
            **opts,
        )
        self.ds.attrs["layer_name"] = name
        self.ds.attrs["unique_id"] = uid
        self.rows_per_chunk = chunks[0] if chunks else 1
        self.row_bytes = first.nbytes
        # no filters: whole chunks are written directly (as fast as a plain file write, no cache copy)
        self.unfiltered = bool(chunks) and not opts
        # one row per chunk and no filters: every row is written directly, nothing goes through the cache
        self.direct = self.unfiltered and self.rows_per_chunk == 1
        super().__init__()

    def write(self, whole_chunks_only: bool = False) -> None:
        """Write the pending rows; with ``whole_chunks_only`` (a block between flushes) the rows past
        the last whole chunk of an unfiltered multi-row-chunk dataset stay pending, so the next
        block starts on a chunk boundary and its chunks go to the file directly."""
        n0, end, r = self.count - len(self.pending), self.count, self.rows_per_chunk
        if whole_chunks_only and self.unfiltered and r > 1:
            end = end // r * r
        if end <= n0:
            return
        rows, self.pending = self.pending[: end - n0], self.pending[end - n0 :]
        dsid, zeros = self.ds.id, (0,) * len(self.shape)
        dsid.set_extent((end, *self.shape))
        if (
            self.direct
        ):  # big uncompressed frames: each row is one whole chunk, handed over as it is
            for i, arr in enumerate(rows):
                dsid.write_direct_chunk(
                    (n0 + i, *zeros), np.ascontiguousarray(arr, dtype=self.dtype)
                )
        elif r == 1:  # big compressed frames: one chunk per row, no stacking copy
            for i, arr in enumerate(rows):
                write_rows(self.ds, n0 + i, np.ascontiguousarray(arr, dtype=self.dtype)[None])
        else:
            block = self._stack(rows)
            first, last = -(-n0 // r) * r, end // r * r  # the whole chunks in the block
            if not self.unfiltered or last <= first:
                write_rows(self.ds, n0, block)
                return
            if first > n0:  # the rest of a chunk begun by the last block: through the cache
                write_rows(self.ds, n0, block[: first - n0])
            for c in range(first, last, r):
                dsid.write_direct_chunk((c, *zeros), block[c - n0 : c - n0 + r])
            if end > last:  # a chunk begun (at a flush): through the cache, a later block ends it
                write_rows(self.ds, last, block[last - n0 :])

    def _stack(self, rows: list[np.ndarray]) -> np.ndarray:
        """``rows`` stacked into one C-contiguous block of the dataset's dtype, end to end along
        their first axis (``np.stack`` costs ~1 us of Python per row, which tiny rows feel)."""
        block = np.empty((len(rows), *self.shape), self.dtype)
        if self.shape:
            np.concatenate(rows, out=block.reshape(-1, *self.shape[1:]), casting="unsafe")
        else:  # 0-d rows
            np.stack(rows, out=block, casting="unsafe")
        return block
