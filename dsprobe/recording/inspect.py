"""``dsprobe inspect PATH``: what a recording holds, as text or ``--json``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dsprobe.recording.reader import RecordingError, open_recording


def summarize(path: str) -> dict[str, Any]:
    """A JSON-serialisable summary of the recording at ``path``."""
    with open_recording(path) as rec:
        f = rec.frames
        attrs = rec.attrs
        gies = {}
        for uid in rec.unique_ids:
            cfg = rec.config(uid)
            gies[str(uid)] = {
                "frames": int((f["unique_id"] == uid).sum()) if len(f) else 0,
                "config_path": cfg.path if cfg else None,
                "preprocessing": cfg.to_dict()["preprocessing"] if cfg else None,
                "process_mode": cfg.process_mode if cfg else None,
                "network_type": cfg.network_type if cfg else None,
            }
        streams = rec.streams
        return {
            "path": [str(p) for p in rec.paths],
            "file_size_bytes": sum(p.stat().st_size for p in rec.paths),
            "schema_version": attrs.get("schema_version"),
            "dsprobe_version": attrs.get("dsprobe_version"),
            "created": attrs.get("created"),
            "host": attrs.get("host"),
            "notes": rec.notes,
            "frames": len(rec),
            "time_span_s": float((f["pts_ns"].max() - f["pts_ns"].min()) / 1e9) if len(f) else 0.0,
            "streams": streams.to_dict(orient="records"),
            "gies": gies,
            "layers": [{"name": i.name, "key": k, "dtype": str(i.dtype), "shape": list(i.shape),
                        "unique_id": i.unique_id, "per_object": i.per_object} for k, i in rec.layers.items()],
            "images": int(f["has_image"].sum()) if len(f) else 0,
            "objects": int(f["object_count"].sum()) if len(f) else 0,
            "detections": int(f["detection_count"].sum()) if len(f) else 0,
            "frame_size": sorted({(int(w), int(h)) for w, h in zip(f["frame_width"], f["frame_height"])}) if len(f) else [],
            "recorder_stats": rec.stats,
        }


def format_text(s: dict[str, Any]) -> str:
    lines = [f"recording  {', '.join(s['path'])}",
             f"size       {s['file_size_bytes'] / 1e6:.1f} MB   schema {s['schema_version']}   "
             f"dsprobe {s['dsprobe_version']}   created {s['created']} on {s['host']}",
             f"frames     {s['frames']} over {s['time_span_s']:.2f} s   images {s['images']}   "
             f"objects {s['objects']}   detections (pipeline objects) {s['detections']}",
             f"frame size {', '.join(f'{w}x{h}' for w, h in s['frame_size']) or '-'}", "streams"]
    for st in s["streams"]:
        lines.append(f"  source {st['source_id']} gie {st['unique_id']}: {st['frames']} frames "
                     f"({st['first_frame']}..{st['last_frame']}, {st['duration_s']:.2f} s, {st['frame_gaps']} gaps)")
    lines.append("layers")
    for layer in s["layers"]:
        lines.append(f"  {layer['key']:<24} {layer['dtype']:<8} {layer['shape']}  gie {layer['unique_id']}"
                     f"{'  per object' if layer['per_object'] else ''}")
    lines.append("gies")
    for uid, g in s["gies"].items():
        pre = g["preprocessing"]
        geo = (f"network {pre['network_width']}x{pre['network_height']}x{pre['network_channels']}, "
               f"maintain-aspect-ratio={int(pre['maintain_aspect_ratio'])}, "
               f"symmetric-padding={int(pre['symmetric_padding'])}, net-scale-factor={pre['net_scale_factor']:.6g}"
               if pre else "no nvinfer config stored")
        lines.append(f"  {uid}: {g['frames']} frames; {geo}")
    st = s["recorder_stats"]
    keys = ("received", "written", "dropped_queue_full", "dropped_rate_limited", "dropped_invalid", "errors",
            "flushes", "segments", "failed_reason")
    lines.append("recorder   " + "  ".join(f"{k}={st[k]}" for k in keys if k in st))
    for section, values in st.items():
        if isinstance(values, dict):
            lines.append(f"{section:<10} " + "  ".join(f"{k}={v}" for k, v in values.items()))
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="recording file, first segment, series name or folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    try:
        s = summarize(args.path)
    except RecordingError as exc:
        print(f"dsprobe inspect: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(s, indent=2, default=str) if args.json else format_text(s))
    return 0
