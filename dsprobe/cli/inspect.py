"""``dsprobe inspect PATH``: what a recording holds, as text or ``--json``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from dsprobe.recording.reader import Recording, RecordingError, open_recording
from dsprobe.recording.schema import IMAGE_ENCODINGS, jsonable

_GEOMETRY_KEYS = (
    "network_width",
    "network_height",
    "network_channels",
    "maintain_aspect_ratio",
    "symmetric_padding",
    "scaling_filter",
    "net_scale_factor",
    "offsets",
    "model_color_format",
    "network_input_order",
)


def summarize(path: str) -> dict[str, Any]:
    """A JSON-serialisable summary of the recording at ``path`` (file, segment series or folder)."""
    with open_recording(path) as rec:
        return jsonable(_summary(rec))


def _summary(rec: Recording) -> dict[str, Any]:
    f = rec.frames
    attrs = rec.attrs
    n = len(f)
    gies = {}
    for uid in rec.unique_ids:
        cfg = rec.config(uid)
        sel = f[f["unique_id"] == uid]
        pre = cfg.to_dict()["preprocessing"] if cfg else None
        gies[str(uid)] = {
            "frames": len(sel),
            "network_size_recorded": sorted(
                {
                    tuple(r)
                    for r in sel[["network_width", "network_height", "network_channels"]].to_numpy()
                }
            ),
            "config_path": (cfg.path if cfg else None),
            "process_mode": cfg.process_mode if cfg else None,
            "network_type": cfg.network_type if cfg else None,
            "preprocessing": {k: pre[k] for k in _GEOMETRY_KEYS} if pre else None,
        }
    encodings: dict[str, int] = {}
    for seg in rec.segments:
        codes = seg.f["images/encoding"][:]
        for code, count in zip(*np.unique(codes, return_counts=True)):
            encodings[IMAGE_ENCODINGS[int(code)]] = encodings.get(
                IMAGE_ENCODINGS[int(code)], 0
            ) + int(count)
    pts_span = float((f["pts_ns"].max() - f["pts_ns"].min()) / 1e9) if n else 0.0
    wall_span = float((f["recv_time_ns"].max() - f["recv_time_ns"].min()) / 1e9) if n else 0.0
    return {
        "path": [str(p) for p in rec.paths],
        "segments": len(rec.paths),
        "file_size_bytes": sum(p.stat().st_size for p in rec.paths),
        "schema_version": attrs.get("schema_version"),
        "dsprobe_version": attrs.get("dsprobe_version"),
        "created": attrs.get("created"),
        "host": attrs.get("host"),
        "recording_id": attrs.get("recording_id"),
        "closed_cleanly": rec.closed_cleanly,
        "notes": rec.notes,
        "frames": n,
        "time_span_s": pts_span,
        "wall_time_span_s": wall_span,
        "streams": rec.streams.to_dict(orient="records"),
        "gies": gies,
        "layers": [
            {
                "key": k,
                "name": i.name,
                "dtype": str(i.dtype),
                "shape": list(i.shape),
                "unique_id": i.unique_id,
                "per_object": i.per_object,
            }
            for k, i in rec.layers.items()
        ],
        "images": {"frames_with_image": int(f["has_image"].sum()) if n else 0, "stored": encodings},
        "objects": int(f["object_count"].sum()) if n else 0,
        "detections": int(f["detection_count"].sum()) if n else 0,
        "classifications": _classifications(rec),
        "frame_sizes": sorted(
            {(int(w), int(h)) for w, h in zip(f["frame_width"], f["frame_height"])}
        ),
        "recorder_stats": rec.stats,
    }


def _classifications(rec: Recording) -> int:
    """Classifier results stored for the recording's frames (/classifications rows)."""
    total = 0
    for seg in rec.segments:
        rows = seg.classification_rows
        if rows is not None:
            total += int((rows < len(seg.frames["source_id"])).sum())
    return total


def format_text(s: dict[str, Any]) -> str:
    """The summary as aligned text for people."""
    lines = [
        f"recording  {s['path'][0]}"
        + (f"  (+{s['segments'] - 1} segments)" if s["segments"] > 1 else ""),
        f"size       {s['file_size_bytes'] / 1e6:.1f} MB   schema {s['schema_version']}   "
        f"dsprobe {s['dsprobe_version']}   created {s['created']} on {s['host']}",
        f"closed     {'cleanly' if s['closed_cleanly'] else 'NOT cleanly (crash?): frames up to the last flush'}",
        f"frames     {s['frames']} over {s['time_span_s']:.2f} s of PTS ({s['wall_time_span_s']:.2f} s wall)",
        f"images     {s['images']['frames_with_image']} frames with an image; stored "
        f"{', '.join(f'{k} {v}' for k, v in s['images']['stored'].items()) or 'none'}",
        f"objects    {s['objects']} SGIE objects   {s['detections']} detections (pipeline objects)   "
        f"{s['classifications']} classifications",
        f"frame size {', '.join(f'{w}x{h}' for w, h in s['frame_sizes']) or '-'}",
    ]
    if s["notes"]:
        lines.append(f"notes      {s['notes']}")
    lines.append("streams")
    for st in s["streams"]:
        lines.append(
            f"  source {st['source_id']} gie {st['unique_id']}: {st['frames']} frames "
            f"({st['first_frame']}..{st['last_frame']}, {st['duration_s']:.2f} s, {st['frame_gaps']} gaps)"
        )
    lines.append("layers")
    for layer in s["layers"]:
        lines.append(
            f"  {layer['key']:<32} {layer['dtype']:<8} {str(layer['shape']):<14} gie {layer['unique_id']}"
            f"{'  per object' if layer['per_object'] else ''}"
        )
    lines.append("gies")
    for uid, g in s["gies"].items():
        pre = g["preprocessing"]
        geo = (
            f"config network {pre['network_width']}x{pre['network_height']}x{pre['network_channels']}, "
            f"maintain-aspect-ratio={int(pre['maintain_aspect_ratio'])}, "
            f"symmetric-padding={int(pre['symmetric_padding'])}, scaling-filter={pre['scaling_filter']}, "
            f"net-scale-factor={pre['net_scale_factor']:.6g}, offsets={list(pre['offsets'])}"
            if pre
            else "no nvinfer config stored"
        )
        nets = ", ".join("x".join(str(v) for v in t) for t in g["network_size_recorded"]) or "-"
        lines.append(f"  {uid}: {g['frames']} frames, recorded network size {nets}; {geo}")
    st = s["recorder_stats"]
    keys = (
        "received",
        "written",
        "dropped_queue_full",
        "dropped_rate_limited",
        "dropped_invalid",
        "dropped_stopped",
        "errors",
        "flushes",
        "segments",
        "bytes_written",
        "failed_reason",
    )
    lines.append("recorder   " + "  ".join(f"{k}={st[k]}" for k in keys if k in st))
    for section, values in st.items():
        if isinstance(values, dict):
            lines.append(f"{section:<10} " + "  ".join(f"{k}={v}" for k, v in values.items()))
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "path", help="recording file, segment series name (run.h5 for run-00000.h5...) or folder"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    try:
        s = summarize(args.path)
    except (RecordingError, OSError) as exc:  # one line, exit 2, never a traceback
        print("dsprobe inspect: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    print(json.dumps(s, indent=2) if args.json else format_text(s))
    return 0
