"""Which tensor metas a probe reads, checked before a byte is copied.

* GIEs refused at attach time (``disable-output-host-copy=1``: nvinfer still allocates the host
  buffers but never copies into them, ``nvdsinfer_context_impl.cpp``; so they hold stale data) are
  skipped, never recorded.
* Data-type codes 4 and 5 are not members of pyds' NvDsInferDataType enum and their meaning depends
  on the DeepStream headers on the device (``nvdsinfer.h``: INT64 = 4 in DeepStream 7.1, UINT8 = 5 in
  9.1; TensorRT's own numbering has 4 = BOOL). dsprobe reads them as int64 / uint8 and checks that
  at run time: nvinfer points meta ``j`` of one inference batch at ``hostBuffer + numElements *
  elementSize * j`` (``gstnvinfer_meta_utils.cpp``), so whenever a batch holds two or more metas of
  one GIE the pointer spacing gives the true element size. A layer whose spacing contradicts the
  assumed size is not read (warning ``dtype-size``), so a wrong guess never over-reads.
* Tensor meta in ``batch_user_meta_list`` comes from ``input-tensor-meta`` (nvdspreprocess)
  pipelines, where the per-ROI metas hang on ROI meta that pyds 1.2 cannot walk: warned once
  (``input-tensor-meta``) with the real cause instead of "set output-tensor-meta".
"""

from __future__ import annotations

import ctypes
from typing import Any, Collection, Iterator

from dsprobe.deepstream.meta import DATA_TYPES, iter_list, layer_dims, tensor_metas

#: dtype codes outside pyds' enum, checked against pointer spacing
UNVERIFIED_CODES = (4, 5)


class TensorMetaReader:
    def __init__(self, stats: Any) -> None:
        self.stats = stats
        self.refused: dict[int, str] = {}  # uid -> why its tensors are not read
        self.layouts: dict[int, list[tuple[int, str, int, int]]] = {}  # uid -> suspect layers
        self.sizes: dict[tuple[int, str], int | None] = {}  # (uid, layer) -> measured size

    def refuse(self, unique_id: int, reason: str) -> None:
        self.refused[int(unique_id)] = reason

    # ------------------------------------------------------------------ per batch
    def begin_batch(self, pyds: Any, batch_meta: Any) -> None:
        """Run before any frame of the batch is read: the batch-level meta check and, while some
        GIE seen so far has unverified dtype codes, the pointer-spacing check (a GIE seen for the
        first time is checked by :meth:`metas` before its first meta is read)."""
        if batch_meta.batch_user_meta_list is not None:
            if any(True for _ in tensor_metas(pyds, batch_meta.batch_user_meta_list)):
                self.stats.warn_once(
                    "input-tensor-meta",
                    "tensor meta found in batch_user_meta_list: nvinfer runs with "
                    "input-tensor-meta=1 (nvdspreprocess), so its per-ROI tensor meta hangs on ROI "
                    "meta, which pyds 1.2 cannot walk. dsprobe records PGIE tensors only from "
                    "frame_user_meta_list: run the GIE without input-tensor-meta to record it",
                )
        pending = any(
            self.sizes.get((uid, name)) is None
            for uid, lays in self.layouts.items()
            for _, name, _, _ in lays
        )
        if pending:
            self._safe_check(pyds, batch_meta)

    def _safe_check(self, pyds: Any, batch_meta: Any) -> None:
        try:
            self._check_spacing(pyds, batch_meta)
        except Exception:  # a bad meta: the frame walk counts it where it is
            pass

    def _check_spacing(self, pyds: Any, batch_meta: Any) -> None:
        addresses: dict[tuple[int, int], list[int]] = {}
        for tm in self._all_metas(pyds, batch_meta):
            uid = int(tm.unique_id)
            if uid not in self.layouts:
                self.layouts[uid] = self._suspects(tm)
            if not self.layouts[uid]:
                continue
            n = int(tm.num_output_layers)
            ptrs = (ctypes.c_void_p * n).from_address(pyds.get_ptr(tm.out_buf_ptrs_host))
            for i, _, _, _ in self.layouts[uid]:
                if ptrs[i]:
                    addresses.setdefault((uid, i), []).append(int(ptrs[i]))
        for uid, lays in self.layouts.items():
            for i, name, code, count in lays:
                addrs = sorted(set(addresses.get((uid, i), ())))
                if len(addrs) < 2 or self.sizes.get((uid, name)) is not None or count <= 0:
                    continue
                gap = min(b - a for a, b in zip(addrs, addrs[1:]))
                size = DATA_TYPES[code].itemsize
                if gap == count * size:
                    self.sizes[(uid, name)] = size
                elif gap < count * size or gap % count:
                    self.sizes[(uid, name)] = gap // count if gap % count == 0 else 0
                    self.stats.warn_once(
                        f"dtype-size:{uid}:{name}",
                        f"gie-unique-id {uid} layer {name!r}: NvDsInferDataType {code} measures "
                        f"{gap / count:g} bytes per element on this device (pointer spacing), not "
                        f"{DATA_TYPES[code]}'s {size}: the layer is not read. Check nvdsinfer.h under "
                        "/opt/nvidia/deepstream/deepstream/sources/includes",
                    )

    @staticmethod
    def _suspects(tm: Any) -> list[tuple[int, str, int, int]]:
        out = []
        for i in range(int(tm.num_output_layers)):
            info = tm.output_layers_info(i)
            code = int(info.dataType)
            if code in UNVERIFIED_CODES:
                dims = layer_dims(info)
                count = 1
                for d in dims:
                    count *= d
                out.append((i, str(info.layerName), code, count))
        return out

    @staticmethod
    def _all_metas(pyds: Any, batch_meta: Any) -> Iterator[Any]:
        for fdata in iter_list(batch_meta.frame_meta_list):
            fm = pyds.NvDsFrameMeta.cast(fdata)
            yield from tensor_metas(pyds, fm.frame_user_meta_list)
            for odata in iter_list(fm.obj_meta_list):
                yield from tensor_metas(pyds, pyds.NvDsObjectMeta.cast(odata).obj_user_meta_list)

    # ------------------------------------------------------------------ per meta
    def metas(
        self,
        pyds: Any,
        batch_meta: Any,
        user_meta_list: Any,
        unique_ids: Collection[int] | None = None,
    ) -> Iterator[Any]:
        """Tensor metas of ``user_meta_list`` (of ``unique_ids`` if given), refused GIEs skipped."""
        for tm in tensor_metas(pyds, user_meta_list, unique_ids):
            uid = int(tm.unique_id)
            if uid not in self.layouts:  # first sight: check this batch before reading it
                self.layouts[uid] = self._suspects(tm)
                if self.layouts[uid]:
                    self._safe_check(pyds, batch_meta)
            if uid in self.refused:
                self.stats.warn_once(f"refused:{uid}", self.refused[uid])
                continue
            yield tm

    def check(self, unique_id: int, name: str, code: int) -> bool:
        """Called by ``read_tensor_meta`` before copying a layer: False to skip it."""
        if code not in UNVERIFIED_CODES:
            return True
        size = self.sizes.get((unique_id, name))
        if size is None:
            self.stats.warn_once(
                f"dtype-unverified:{unique_id}:{name}",
                f"gie-unique-id {unique_id} layer {name!r}: NvDsInferDataType {code} read as "
                f"{DATA_TYPES[code]} (not yet confirmed by pointer spacing: no batch held two metas "
                "of this GIE)",
            )
            return True
        return size == DATA_TYPES[code].itemsize
