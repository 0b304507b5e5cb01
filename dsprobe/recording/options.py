"""What a Recorder keeps and how it writes: :class:`RecorderOptions` (one frozen dataclass, checked
when made, stored as JSON in every file it writes)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from dsprobe.recording.schema import IMAGE_ENCODINGS, compression_options

#: where the Recorder's writer runs
WRITERS = ("thread", "process")


@dataclass(frozen=True)
class RecorderOptions:
    """Recorder options (``Recorder(path, RecorderOptions(...))`` or ``Recorder(path, every_n=2)``).

    * ``layers``: names of the output layers to keep (None: all), frame-level and per-object alike.
    * ``every_n`` / ``max_fps``: rate limits per stream (source_id, unique_id).
    * ``images``: keep frame images / crops; ``image_max_size``: longest side in pixels (downscaled on
      the writer thread); ``image_format``: "jpeg", "png" or "raw" (JPEG/PNG need Pillow; without it
      images are stored raw); ``image_quality``: JPEG quality 1..100. Images handed over already
      encoded are stored as they are.
    * ``segment_max_bytes`` / ``segment_max_seconds``: rotate into numbered segment files.
    * ``flush_interval_s``: longest time (seconds) an accepted frame waits before it is on disk.
    * ``block_frames``: frames buffered per block write (small frames: until the block holds 1 MiB
      or 256 frames); ``queue_size``: frames the queue holds.
    * ``drop_when_full``: True (live pipelines): a full queue drops the frame; False (offline
      recorders that must keep every frame): ``record()`` waits for room.
    * ``compression``: None (default), "lzf", "gzip", "gzip-N", "blosc-lz4", "blosc-zstd" for tensor
      datasets (see docs/recording-format.md for measurements and why None is the default).
    * ``writer``: "thread" (default) writes on a thread of the caller's process; "process" writes
      in a child process fed through a shared-memory ring of ``ring_mib`` MiB, so HDF5 and JPEG
      work never holds the caller's GIL (a live pipeline's probe does not wait on it; ``record()``
      copies the frame's arrays into the ring); see docs/performance.md for measurements,
      docs/reliability.md for what its death costs.
    * ``ring_mib``: ``writer="process"`` only: MiB of shared memory between ``record()`` and the
      writer process (allocated when the Recorder starts, so no copy into it pays for a page
      fault); a frame that does not fit is dropped and counted as ``dropped_queue_full``, as one
      over ``queue_size`` frames is; one bigger than the whole ring is dropped as
      ``dropped_invalid``, the error naming ``ring_mib``. Frames wait in it until their block is
      written (a ring half full has its blocks written at once).
    * ``overwrite``: replace an existing recording (the file or its segment series) at the path;
      without it the Recorder refuses to start there.
    """

    layers: tuple[str, ...] | None = None
    every_n: int = 1
    max_fps: float | None = None
    images: bool = True
    image_max_size: int = 640
    image_format: str = "jpeg"
    image_quality: int = 90
    segment_max_bytes: int | None = None
    segment_max_seconds: float | None = None
    flush_interval_s: float = 1.0
    block_frames: int = 16
    queue_size: int = 64
    drop_when_full: bool = True
    compression: str | None = None
    overwrite: bool = False
    writer: str = "thread"
    ring_mib: int = 256

    def __post_init__(self) -> None:
        if self.layers is not None:
            if isinstance(self.layers, (str, bytes)):
                raise ValueError(f"layers must be a list of names, got {self.layers!r}")
            object.__setattr__(self, "layers", tuple(sorted(set(self.layers))))
        if self.image_format not in IMAGE_ENCODINGS:
            raise ValueError(
                f"image_format must be one of {IMAGE_ENCODINGS}, got {self.image_format!r}"
            )
        if self.writer not in WRITERS:
            raise ValueError(f"writer must be one of {WRITERS}, got {self.writer!r}")
        compression_options(self.compression)  # the name (and hdf5plugin where it is needed)
        _positive(
            self,
            "flush_interval_s",
            "image_max_size",
            "every_n",
            "block_frames",
            "queue_size",
            "ring_mib",
        )
        _positive(self, "max_fps", "segment_max_bytes", "segment_max_seconds", optional=True)
        if not 1 <= self.image_quality <= 100:
            raise ValueError(f"image_quality must be 1..100, got {self.image_quality!r}")

    @classmethod
    def build(cls, options: "RecorderOptions | None" = None, **overrides: Any) -> "RecorderOptions":
        """``options`` (default: the defaults) with ``overrides`` applied; unknown names are an error."""
        base = options if options is not None else cls()
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(
                f"unknown Recorder option(s) {unknown}; known: {[f.name for f in fields(cls)]}"
            )
        return replace(base, **overrides) if overrides else base

    @property
    def rotating(self) -> bool:
        """True when the recording is written as numbered segment files."""
        return bool(self.segment_max_bytes or self.segment_max_seconds)

    def to_json(self) -> dict[str, Any]:
        """The options as stored in a recording's ``recorder_options`` attribute."""
        out = asdict(self)
        out["layers"] = list(self.layers) if self.layers is not None else None
        return out


def _positive(opts: RecorderOptions, *names: str, optional: bool = False) -> None:
    for name in names:
        value = getattr(opts, name)
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a number > 0, got {value!r}")
