"""Checks that keep a bad frame from ever reaching HDF5 half-written: :class:`InvalidFrame` names
the frame and the field at fault; the frame is dropped and counted, the recorder carries on."""

from __future__ import annotations

from dsprobe.records import FrameRecord


class InvalidFrame(ValueError):
    """A frame that does not fit what the recording stores (the message says which field)."""


def check_fields(frame: FrameRecord) -> None:
    """Reject a frame whose scalar fields would not fit the tables (before anything is buffered)."""
    where = f"source {frame.source_id}, frame {frame.frame_num}"
    try:
        for name, value, n in (
            ("network_size", frame.network_size, 3),
            ("frame_size", frame.frame_size, 2),
        ):
            if len(value) != n:
                raise ValueError(f"{name} needs {n} values, got {value!r}")
        for kind, objs in (("object", frame.objects), ("detection", frame.detections)):
            for i, o in enumerate(objs):
                if len(o.rect) != 4:
                    raise ValueError(
                        f"{kind} {i}: rect needs (left, top, width, height), got {o.rect!r}"
                    )
                float(o.confidence), int(o.class_id), int(o.object_id), int(o.parent_object_id)
        int(frame.source_id), int(frame.frame_num), int(frame.pts_ns), int(frame.unique_id)
    except (TypeError, ValueError) as exc:
        raise InvalidFrame(f"{where}: {exc}; frame dropped") from None
