"""Reading recordings: ``open_recording(path_or_dir) -> Recording``.

A recording is one ``.h5`` file or several numbered segments (``run-00000.h5``, ...); segments read as
one. Frames are indexed by a global row number (``Recording.frames`` index); tensors and images are
read lazily, only for the rows asked for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np
import pandas as pd

from dsprobe.detections import Detections
from dsprobe.nvinfer_config import NvinferConfig
from dsprobe.recording import images as imgs
from dsprobe.recording.schema import FORMAT_NAME, FRAME_COLUMNS, IMAGE_ENCODINGS, OBJECT_COLUMNS, SCHEMA_VERSION
from dsprobe.types import FrameRecord, ImageRecord, ObjectRecord


class RecordingError(ValueError):
    """A file that is not a readable dsprobe recording; the message names the file and the problem."""


@dataclass(frozen=True)
class LayerInfo:
    """One recorded layer: ``shape`` is per frame (per object when ``per_object``), no batch axis."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    unique_id: int
    per_object: bool = False


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
            raise RecordingError(f"{p}: no such recording (and no segments {p.stem}-NNNNN{p.suffix or '.h5'})")
    return Recording(paths)


class _Segment:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.f = h5py.File(path, "r")
        except OSError as exc:
            raise RecordingError(f"{path}: cannot open as HDF5 — the file is truncated, corrupt or not HDF5 "
                                 f"({exc})") from None
        try:
            fmt = self.f.attrs.get("format")
            if fmt is None or (fmt.decode() if isinstance(fmt, bytes) else fmt) != FORMAT_NAME:
                raise RecordingError(f"{path}: not a dsprobe recording (no format='{FORMAT_NAME}' attribute)")
            version = int(self.f.attrs.get("schema_version", -1))
            if version > SCHEMA_VERSION:
                raise RecordingError(f"{path}: written with recording schema {version}, this dsprobe reads up to "
                                     f"{SCHEMA_VERSION}; upgrade dsprobe")
            if version < 1:
                raise RecordingError(f"{path}: bad schema_version attribute {version}")
            self.frames = self._table("frames", FRAME_COLUMNS)
            self.objects_n = self._length("objects", OBJECT_COLUMNS)
            self.detections_n = self._length("detections", OBJECT_COLUMNS)
        except RecordingError:
            self.f.close()
            raise
        except (OSError, KeyError, ValueError) as exc:
            self.f.close()
            raise RecordingError(f"{path}: damaged recording ({type(exc).__name__}: {exc})") from None

    def _length(self, name: str, columns: dict) -> int:
        lengths = {c: self.f[f"{name}/{c}"].shape[0] for c in columns}
        if len(set(lengths.values())) != 1:
            raise RecordingError(f"{self.path}: table /{name} has columns of different lengths {lengths}")
        return next(iter(lengths.values()))

    def _table(self, name: str, columns: dict) -> dict[str, np.ndarray]:
        self._length(name, columns)
        return {c: self.f[f"{name}/{c}"][()] for c in columns}

    def layer_datasets(self) -> dict[tuple[str, int, str], h5py.Dataset]:
        out = {}
        for group in ("layers", "object_layers"):
            if group not in self.f:
                continue
            for uid, g in self.f[group].items():
                for name, ds in g.items():
                    out[(group, int(uid), name)] = ds
        return out


class Recording:
    """A recording (one or more segment files). Use as a context manager or call :meth:`close`."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self._segs: list[_Segment] = []
        try:
            for p in self.paths:
                self._segs.append(_Segment(p))
        except RecordingError:
            self.close()
            raise
        parts = []
        for i, seg in enumerate(self._segs):
            cols = {c: v for c, v in seg.frames.items() if v.ndim == 1}
            df = pd.DataFrame(cols)
            df["network_width"], df["network_height"], df["network_channels"] = seg.frames["network_size"].T
            df["frame_width"], df["frame_height"] = seg.frames["frame_size"].T
            df["segment"] = i
            df["local_row"] = np.arange(len(df))
            parts.append(df)
        frames = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        if len(frames):
            frames["has_image"] = frames["image_row"] >= 0
            frames["num_objects"] = frames["object_count"]
            frames["num_detections"] = frames["detection_count"]
        self.frames: pd.DataFrame = frames
        self.frames.index.name = "row"

    # ------------------------------------------------------------------ file-level
    @property
    def attrs(self) -> dict[str, Any]:
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in self._segs[0].f.attrs.items()}

    @property
    def notes(self) -> Any:
        raw = self.attrs.get("notes", "")
        try:
            return json.loads(raw)
        except (TypeError, ValueError):
            return raw

    @property
    def stats(self) -> dict[str, Any]:
        """Recorder stats of the last segment (counters are cumulative over the recording)."""
        try:
            return json.loads(self._segs[-1].f.attrs.get("stats", "{}"))
        except ValueError:
            return {}

    @cached_property
    def layers(self) -> dict[str, LayerInfo]:
        """name -> LayerInfo. A name recorded by several GIEs appears as ``"<unique_id>/<name>"``."""
        infos: dict[tuple[str, int, str], LayerInfo] = {}
        for seg in self._segs:
            for (group, uid, name), ds in seg.layer_datasets().items():
                infos.setdefault((group, uid, name),
                                 LayerInfo(name, ds.dtype, tuple(ds.shape[1:]), uid, group == "object_layers"))
        counts: dict[str, int] = {}
        for _, _, name in infos:
            counts[name] = counts.get(name, 0) + 1
        return {(name if counts[name] == 1 else f"{uid}/{name}"): info for (_, uid, name), info in infos.items()}

    @property
    def unique_ids(self) -> list[int]:
        return sorted(set(int(u) for u in self.frames["unique_id"])) if len(self.frames) else sorted(self._gie_attrs())

    def _gie_attrs(self) -> dict[int, h5py.AttributeManager]:
        out: dict[int, Any] = {}
        for seg in self._segs:
            for uid, g in seg.f.get("gies", {}).items():
                out.setdefault(int(uid), g.attrs)
        return out

    def config_text(self, unique_id: int | None = None) -> str | None:
        """The nvinfer config text stored for ``unique_id`` (default: the first GIE with one)."""
        gies = self._gie_attrs()
        if not gies:
            return None
        uid = unique_id if unique_id is not None else min(gies)
        return gies[uid]["config_text"] if uid in gies else None

    def config(self, unique_id: int | None = None) -> NvinferConfig | None:
        """The parsed nvinfer config stored for ``unique_id`` (default: the first GIE with one)."""
        gies = self._gie_attrs()
        if not gies:
            return None
        uid = unique_id if unique_id is not None else min(gies)
        if uid not in gies:
            return None
        cfg = NvinferConfig.from_dict(json.loads(gies[uid]["config_json"]))
        return cfg

    @property
    def streams(self) -> pd.DataFrame:
        """One row per (source_id, unique_id): frame count, first/last frame, time span (s), gaps."""
        if not len(self.frames):
            return pd.DataFrame(columns=["source_id", "unique_id", "frames", "first_frame", "last_frame",
                                         "duration_s", "frame_gaps"])
        g = self.frames.groupby(["source_id", "unique_id"])
        out = g.agg(frames=("frame_num", "size"), first_frame=("frame_num", "min"), last_frame=("frame_num", "max"),
                    first_pts_ns=("pts_ns", "min"), last_pts_ns=("pts_ns", "max"))
        out["duration_s"] = (out.pop("last_pts_ns") - out.pop("first_pts_ns")) / 1e9
        out["frame_gaps"] = g["frame_num"].apply(lambda s: int((np.diff(np.sort(s.to_numpy())) > 1).sum()))
        return out.reset_index()

    # ------------------------------------------------------------------ frames
    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int | slice) -> "FrameView | list[FrameView]":
        if isinstance(index, slice):
            return [FrameView(self, i) for i in range(*index.indices(len(self)))]
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"frame row {index} out of range for a recording of {len(self)} frames")
        return FrameView(self, i)

    def __iter__(self) -> Iterator["FrameView"]:
        for i in range(len(self)):
            yield FrameView(self, i)

    def find(self, source_id: int, frame_num: int, unique_id: int | None = None) -> "FrameView":
        """The frame of ``source_id`` with ``frame_num`` (and GIE ``unique_id`` if several)."""
        f = self.frames
        m = (f["source_id"] == source_id) & (f["frame_num"] == frame_num)
        if unique_id is not None:
            m &= f["unique_id"] == unique_id
        rows = np.flatnonzero(m.to_numpy())
        if not len(rows):
            raise KeyError(f"no frame {frame_num} of source {source_id} in {self.paths[0]}")
        return FrameView(self, int(rows[0]))

    def read_layer(self, name: str, rows: Sequence[int] | np.ndarray | None = None,
                   unique_id: int | None = None) -> np.ndarray:
        """Frame-level layer ``name`` for many frame rows at once: ``(len(rows), *shape)``.

        ``rows`` defaults to every frame of the GIE that has the layer. Rows of other GIEs raise.
        """
        info = self._layer_info(name, unique_id, per_object=False)
        f = self.frames
        if rows is None:
            rows = np.flatnonzero(((f["unique_id"] == info.unique_id) & (f["layer_row"] >= 0)).to_numpy())
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), *info.shape), dtype=info.dtype)
        if not len(rows):
            return out
        seg_idx = f["segment"].to_numpy()[rows]
        local = f["layer_row"].to_numpy()[rows]
        uids = f["unique_id"].to_numpy()[rows]
        bad = (local < 0) | (uids != info.unique_id)
        if bad.any():
            r = int(rows[np.flatnonzero(bad)[0]])
            raise KeyError(f"frame row {r} has no layer {name!r} of GIE {info.unique_id}")
        for s in np.unique(seg_idx):
            sel = np.flatnonzero(seg_idx == s)
            ds = self._segs[s].f[f"layers/{info.unique_id}/{info.name}"]
            want = local[sel]
            uniq, inverse = np.unique(want, return_inverse=True)
            if len(uniq) == uniq[-1] - uniq[0] + 1:   # contiguous: one slice read
                block = ds[int(uniq[0]):int(uniq[-1]) + 1]
            else:
                block = ds[uniq]
            out[sel] = block[inverse]
        return out

    def _layer_info(self, name: str, unique_id: int | None, per_object: bool) -> LayerInfo:
        cands = [i for i in self.layers.values() if i.name == name and i.per_object == per_object
                 and (unique_id is None or i.unique_id == unique_id)]
        if len(cands) == 1:
            return cands[0]
        have = ", ".join(f"{k} {i.dtype}{list(i.shape)} (GIE {i.unique_id}{', per object' if i.per_object else ''})"
                         for k, i in self.layers.items()) or "(none)"
        if not cands:
            raise KeyError(f"{self.paths[0]}: no {'per-object ' if per_object else ''}layer {name!r}"
                           f"{f' for GIE {unique_id}' if unique_id is not None else ''}; recorded layers: {have}")
        raise KeyError(f"{self.paths[0]}: layer {name!r} was recorded by several GIEs; pass unique_id=")

    def object_table(self, kind: str = "objects") -> pd.DataFrame:
        """All recorded objects (``"objects"``: SGIE inputs) or ``"detections"`` with their frame rows."""
        parts = []
        offsets = np.concatenate([[0], np.cumsum([len(s.frames["source_id"]) for s in self._segs])])
        for i, seg in enumerate(self._segs):
            cols = {c: seg.f[f"{kind}/{c}"][()] for c in OBJECT_COLUMNS}
            df = pd.DataFrame({c: v for c, v in cols.items() if v.ndim == 1})
            df[["left", "top", "width", "height"]] = cols["rect"]
            df["label"] = [b.decode("utf-8", "replace") for b in cols["label"]]
            df["row"] = df.pop("frame_row") + offsets[i]
            parts.append(df)
        return pd.concat(parts, ignore_index=True)

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
        return f"Recording({str(self.paths[0])!r}{f' +{len(self.paths) - 1} segments' if len(self.paths) > 1 else ''}, " \
               f"frames={len(self)}, layers={list(self.layers)})"


class FrameView:
    """Lazy view of one recorded frame (row ``row`` of ``Recording.frames``)."""

    def __init__(self, rec: Recording, row: int) -> None:
        self.rec = rec
        self.row = row
        r = rec.frames.iloc[row]
        self._r = r
        self._seg = rec._segs[int(r["segment"])]
        self.source_id = int(r["source_id"])
        self.frame_num = int(r["frame_num"])
        self.pts_ns = int(r["pts_ns"])
        self.ntp_timestamp = int(r["ntp_timestamp"])
        self.unique_id = int(r["unique_id"])
        self.batch_id = int(r["batch_id"])
        self.pad_index = int(r["pad_index"])
        self.network_size = (int(r["network_width"]), int(r["network_height"]), int(r["network_channels"]))
        self.frame_size = (int(r["frame_width"]), int(r["frame_height"]))

    @cached_property
    def tensors(self) -> dict[str, np.ndarray]:
        """Frame-level layers (PGIE) as arrays with their recorded dtype and per-frame shape."""
        lr = int(self._r["layer_row"])
        if lr < 0:
            return {}
        g = self._seg.f.get(f"layers/{self.unique_id}")
        return {} if g is None else {name: ds[lr] for name, ds in g.items()}

    @property
    def layers(self) -> dict[str, np.ndarray]:
        """Alias of :attr:`tensors` (FrameRecord naming)."""
        return self.tensors

    def _image(self, image_row: int) -> ImageRecord | None:
        if image_row < 0:
            return None
        f = self._seg.f
        enc = IMAGE_ENCODINGS[int(f["images/encoding"][image_row])]
        shape = tuple(int(v) for v in f["images/shape"][image_row])
        data = imgs.decode(f["images/data"][image_row], enc, shape)
        return ImageRecord(data, tuple(float(v) for v in f["images/rect"][image_row]), "raw")

    @cached_property
    def image_record(self) -> ImageRecord | None:
        return self._image(int(self._r["image_row"]))

    @property
    def image(self) -> np.ndarray | None:
        """The recorded picture as HxWx3 uint8 RGB (decoded), or None."""
        ir = self.image_record
        return None if ir is None else ir.data

    @property
    def image_rect(self) -> tuple[float, float, float, float] | None:
        """The frame rectangle (left, top, width, height; frame pixels) the image shows."""
        ir = self.image_record
        return None if ir is None else ir.rect

    def _objects(self, table: str, start: int, count: int) -> list[ObjectRecord]:
        if count == 0:
            return []
        f = self._seg.f
        cols = {c: f[f"{table}/{c}"][start:start + count] for c in OBJECT_COLUMNS}
        layer_groups = f.get(f"object_layers/{self.unique_id}") if table == "objects" else None
        out = []
        for k in range(count):
            lr = int(cols["layer_row"][k])
            layers = {n: ds[lr] for n, ds in layer_groups.items()} if (layer_groups is not None and lr >= 0) else {}
            out.append(ObjectRecord(
                rect=tuple(float(v) for v in cols["rect"][k]), class_id=int(cols["class_id"][k]),
                confidence=float(cols["confidence"][k]), object_id=int(cols["object_id"][k]),
                unique_component_id=int(cols["unique_component_id"][k]),
                label=cols["label"][k].decode("utf-8", "replace"), parent_index=int(cols["parent_index"][k]),
                parent_object_id=int(cols["parent_object_id"][k]), layers=layers,
                image=self._image(int(cols["image_row"][k]))))
        return out

    @cached_property
    def objects(self) -> list[ObjectRecord]:
        """SGIE objects with their per-object layers (and crops if recorded)."""
        return self._objects("objects", int(self._r["object_start"]), int(self._r["object_count"]))

    @cached_property
    def detection_objects(self) -> list[ObjectRecord]:
        """The NvDsObjectMeta that were on the frame when it was recorded."""
        return self._objects("detections", int(self._r["detection_start"]), int(self._r["detection_count"]))

    @property
    def detections(self) -> Detections:
        """The pipeline's own objects (e.g. nvinfer's output) as Detections in frame pixels."""
        return Detections.from_objects(self.detection_objects, space="frame")

    def to_record(self) -> FrameRecord:
        """The FrameRecord this row was written from (images decoded to raw RGB)."""
        return FrameRecord(self.source_id, self.frame_num, self.pts_ns, self.unique_id, self.network_size,
                           self.frame_size, dict(self.tensors), self.objects, self.detection_objects,
                           self.image_record, self.ntp_timestamp, self.batch_id, self.pad_index)

    def __repr__(self) -> str:
        return (f"FrameView(row={self.row}, source_id={self.source_id}, frame_num={self.frame_num}, "
                f"unique_id={self.unique_id})")
