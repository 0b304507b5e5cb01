"""A Recording replayed on the GPU: ``pp.to("cuda").detections_by_row(rec)`` (and ``run_recording``,
``decode_recording``) read each layer once per block of frames, copy the block to the GPU and run it
as one batch; the result equals the CPU path's, row for row. SGIE rows (tensors per object) run on
the CPU path."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from dsprobe.detections import Detections
from dsprobe.postprocess.gpu.plan import plan_of
from dsprobe.postprocess.gpu.runner import run_batch
from dsprobe.postprocess.replay import FrameSizes, frame_rows

#: frames per GPU batch when reading a recording
GPU_BATCH = 256


def contexts_of(pp: Any, rec: Any, rows: np.ndarray) -> list:
    """The StepContext of each frame row (network size from the frame, else the spec's geometry)."""
    f = rec.frames
    cols = [
        f[c].to_numpy()[rows]
        for c in ("network_width", "network_height", "frame_width", "frame_height")
    ]
    return [
        pp.context(FrameSizes((int(nw), int(nh)), (int(fw), int(fh))))
        for nw, nh, fw, fh in zip(*cols)
    ]


def detections_by_row(
    pp: Any,
    rec: Any,
    rows: Iterable[int] | None = None,
    *,
    unique_id: int | None = None,
    progress: bool = False,
    batch: int = GPU_BATCH,
    stop: int | None = None,
) -> dict[int, Detections]:
    """``{frame row: Detections}``, identical to ``pp.to("cpu").detections_by_row(...)``."""
    plan = plan_of(pp)
    rows = frame_rows(rec, rows, unique_id)
    f = rec.frames
    layered = f["layer_row"].to_numpy()[rows] >= 0
    uids = f["unique_id"].to_numpy()
    out: dict[int, Detections] = {}
    frame_rows_ = rows[layered]
    blocks = [
        (int(u), blk)
        for u in dict.fromkeys(uids[frame_rows_].tolist())
        for rs in [frame_rows_[uids[frame_rows_] == u]]
        for blk in np.array_split(rs, -(-len(rs) // max(batch, 1)))
    ]
    if progress:
        try:
            from tqdm.auto import tqdm

            blocks = tqdm(blocks, desc="postprocess (GPU)", unit="block")
        except ImportError:
            pass
    for uid, block in blocks:
        names = [i.name for i in rec.layers.values() if i.unique_id == uid and not i.per_object]
        arrays = {n: rec.read_layer(n, block, unique_id=uid) for n in names}
        dets = run_batch(pp, plan, arrays, contexts_of(pp, rec, block), stop)
        out.update(zip(block.tolist(), dets))
    if (~layered).any():
        cpu = pp.to("cpu")
        out.update(cpu.detections_by_row(rec, rows[~layered], progress=progress, stop=stop))
    return {int(r): out[int(r)] for r in rows}
