"""Recording sets: many recordings (cameras, days) treated as one: ``open_recordings(...)``.

A :class:`RecordingSet` holds what the client needs to plan work, never tensors: each recording's file
paths, one frames table with a ``recording`` column, the nvinfer config per recording (checked to be
compatible), and the ground-truth file found beside each recording. :meth:`RecordingSet.partitions`
cuts it into (recording, block of frames) pieces that a worker opens by path itself
(:mod:`dsprobe.analysis.sets` runs them on Dask).
"""

from __future__ import annotations

import glob as globlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from dsprobe.nvinfer.config import NvinferConfig
from dsprobe.recording.reader import Recording, open_recording
from dsprobe.recording.segment_reader import RecordingError

__all__ = ["Partition", "RecordingSet", "open_recordings"]

SEGMENT_NAME = re.compile(r"^(?P<stem>.+)-\d{5}$")


@dataclass(frozen=True)
class Partition:
    """One piece of work: frame ``rows`` (indices of that recording's ``frames``, ascending) of
    recording ``recording`` (its name), opened from ``paths``. ``index`` orders partitions; their
    frames are consecutive in (recording, source_id, frame_num) order, so results merge in that order.
    ``first`` / ``last``: (source_id, frame_num) of the first and last frame, for messages."""

    index: int
    recording_index: int
    recording: str
    paths: tuple[str, ...]
    rows: np.ndarray
    first: tuple[int, int]
    last: tuple[int, int]

    def describe(self) -> str:
        return (
            f"recording {self.recording!r} ({len(self.rows)} frames: source {self.first[0]} frame "
            f"{self.first[1]} .. source {self.last[0]} frame {self.last[1]})"
        )

    def open(self) -> Recording:
        """The recording, opened here (on a worker: by path, from shared storage)."""
        return Recording([Path(p) for p in self.paths])


def _layer_signature(rec: Recording) -> tuple:
    return tuple(
        sorted(
            (i.name, i.unique_id, str(i.dtype), i.shape, i.per_object) for i in rec.layers.values()
        )
    )


def _config_signature(rec: Recording) -> dict[str, Any]:
    """What must agree between recordings replayed with one postprocess, per GIE: network input,
    letterbox, colour, classes and labels."""
    sig: dict[str, Any] = {}
    for uid in rec.unique_ids:
        cfg = rec.config(uid)
        if cfg is None:
            continue
        pre = cfg.preprocessing
        sig[f"gie {uid} network"] = (pre.network_width, pre.network_height, pre.network_channels)
        sig[f"gie {uid} letterbox"] = (pre.maintain_aspect_ratio, pre.symmetric_padding)
        sig[f"gie {uid} input"] = (pre.model_color_format, pre.network_input_order)
        sig[f"gie {uid} network-type"] = cfg.network_type
        sig[f"gie {uid} num-detected-classes"] = cfg.num_detected_classes
        try:
            sig[f"gie {uid} labels"] = tuple(cfg.labels())
        except (OSError, ValueError):  # labels file not readable here: not part of the check
            pass
    return sig


class RecordingSet:
    """Several recordings replayed, scored and searched as one (see :func:`open_recordings`).

    * ``names``: one name per recording (file stem, or series stem); ``paths[name]``: its files.
    * ``frames``: every recording's frames table, concatenated, with ``recording`` (name),
      ``recording_index`` and ``row`` (the row within that recording) columns.
    * ``configs[name]``: the nvinfer config stored in the recording (None if none).
    * ``ground_truth_paths[name]``: ``<stem>_gt.json`` beside the recording when it exists.
    """

    def __init__(
        self, recordings: Sequence[tuple[str, Sequence[Path]]], unique_id: int | None = None
    ):
        if not recordings:
            raise RecordingError("open_recordings: no recordings given")
        names = [n for n, _ in recordings]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise RecordingError(f"open_recordings: two recordings are named {dup}; rename one")
        self.names: list[str] = names
        self.paths: dict[str, tuple[str, ...]] = {}
        self.configs: dict[str, NvinferConfig | None] = {}
        self.ground_truth_paths: dict[str, Path] = {}
        tables, signatures = [], {}
        for k, (name, paths) in enumerate(recordings):
            with Recording([Path(p) for p in paths]) as rec:
                self.paths[name] = tuple(str(p) for p in rec.paths)
                try:
                    self.configs[name] = rec.config(unique_id)
                except ValueError:  # several GIEs and no unique_id: each is checked below
                    self.configs[name] = None
                signatures[name] = (_layer_signature(rec), _config_signature(rec))
                f = rec.frames.reset_index()
                f.insert(0, "recording", name)
                f.insert(1, "recording_index", k)
                tables.append(f)
            gt = Path(self.paths[name][0]).with_name(f"{name}_gt.json")
            if gt.exists():
                self.ground_truth_paths[name] = gt
        self._check_compatible(signatures)
        self.frames: pd.DataFrame = pd.concat(tables, ignore_index=True)

    def _check_compatible(self, signatures: dict[str, tuple]) -> None:
        first = self.names[0]
        for name in self.names[1:]:
            (la, ca), (lb, cb) = signatures[first], signatures[name]
            if la != lb:
                only_a, only_b = sorted(set(la) - set(lb)), sorted(set(lb) - set(la))
                raise RecordingError(
                    f"recordings {first!r} and {name!r} hold different layers ({only_a} vs "
                    f"{only_b}); one postprocess cannot replay both: open them as separate sets"
                )
            diff = {k: (ca.get(k), cb.get(k)) for k in set(ca) | set(cb) if ca.get(k) != cb.get(k)}
            if diff:
                raise RecordingError(
                    f"recordings {first!r} and {name!r} were recorded with incompatible nvinfer "
                    f"configs: {diff}; open them as separate sets"
                )

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"RecordingSet({len(self.names)} recordings, {len(self.frames)} frames)"

    def config(self) -> NvinferConfig | None:
        """The (compatible) nvinfer config of the first recording."""
        return self.configs[self.names[0]]

    def open(self, name: str) -> Recording:
        """Recording ``name``, opened here."""
        return Recording([Path(p) for p in self.paths[name]])

    def partitions(self, block_frames: int = 1000, unique_id: int | None = None) -> list[Partition]:
        """(recording, block of at most ``block_frames`` frames) pieces covering every frame with
        tensors (of ``unique_id`` if given), in (recording, source_id, frame_num) order."""
        if block_frames < 1:
            raise ValueError(f"block_frames must be >= 1, got {block_frames}")
        out: list[Partition] = []
        f = self.frames
        for k, name in enumerate(self.names):
            g = f[f["recording_index"] == k]
            mask = (g["layer_row"] >= 0) | (g["object_count"] > 0)
            if unique_id is not None:
                mask &= g["unique_id"] == unique_id
            g = g[mask.to_numpy()]
            order = np.lexsort((g["frame_num"].to_numpy(), g["source_id"].to_numpy()))
            rows, src, fnum = (g[c].to_numpy()[order] for c in ("row", "source_id", "frame_num"))
            for start in range(0, len(rows), block_frames):
                sl = slice(start, start + block_frames)
                r, s, n = rows[sl], src[sl], fnum[sl]
                out.append(
                    Partition(
                        len(out),
                        k,
                        name,
                        self.paths[name],
                        np.sort(r).astype(np.int64),
                        (int(s[0]), int(n[0])),
                        (int(s[-1]), int(n[-1])),
                    )
                )
        return out


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _group_files(files: Iterable[Path]) -> list[tuple[str, list[Path]]]:
    """Files grouped into recordings: ``run-00000.h5``, ``run-00001.h5`` are one series ``run``."""
    groups: dict[str, list[Path]] = {}
    for p in sorted(files):
        m = SEGMENT_NAME.match(p.stem)
        groups.setdefault(str(p.parent / (m["stem"] if m else p.stem)), []).append(p)
    return [(Path(k).name, v) for k, v in groups.items()]


def open_recordings(
    source: str | Path | Sequence[str | Path], unique_id: int | None = None
) -> RecordingSet:
    """A :class:`RecordingSet` from a folder of recordings (each file or segment series is one
    recording), a glob (``"recordings/cam*.h5"``), or a list of recordings (each as
    :func:`~dsprobe.recording.reader.open_recording` takes it: a file, a series name, a folder).

    Recordings must hold the same layers and compatible nvinfer configs (network size, classes,
    labels, letterbox); otherwise a RecordingError names the two recordings and what differs.
    ``unique_id``: the GIE whose config is checked when recordings hold several.
    """
    if isinstance(source, (str, Path)) and not _is_glob(str(source)):
        p = Path(source)
        if p.is_dir():
            files = sorted(p.glob("*.h5"))
            if not files:
                raise RecordingError(f"{p}: no .h5 recordings in this folder")
            return RecordingSet(_group_files(files), unique_id)
        source = [p]
    if isinstance(source, (str, Path)):
        files = [Path(x) for x in sorted(globlib.glob(str(source)))]
        if not files:
            raise RecordingError(f"{source}: no recording matches this pattern")
        return RecordingSet(_group_files(files), unique_id)
    recordings = []
    for item in source:
        with open_recording(item) as rec:
            paths = list(rec.paths)
        m = SEGMENT_NAME.match(paths[0].stem)
        name = Path(item).name if Path(item).is_dir() else (m["stem"] if m else paths[0].stem)
        recordings.append((name, paths))
    return RecordingSet(recordings, unique_id)
