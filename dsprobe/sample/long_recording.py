"""A long recording made in seconds, for exercising the notebooks at scale (thousands of frames)
without running a model: :func:`make_long_recording`.

Each stream shows shapes moving in straight lines (bouncing off the edges) on a small picture; its
``output0`` layer is what a YOLOv8-style head of the bundled sample detector would output (layout
``(4 + 4 classes, anchors)``, boxes cx, cy, w, h in network pixels of the sample config's 320x320
letterboxed input), made up from the ground truth: a few jittered candidates per object with a
per-object confidence (some objects are hard and score low), now and then the wrong class or a
shifted box, and background candidates at low confidence. The ground truth is written as COCO JSON
beside it (``<stem>_gt.json``), in the 1280x720 frame pixels of the sample's muxer.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from dsprobe.records import FrameRecord, ImageRecord

FRAME_SIZE = (1280, 720)
NETWORK = 320
_SCALE = NETWORK / FRAME_SIZE[0]  # letterbox 1280x720 -> 320x180, symmetric padding
_PAD_Y = (NETWORK - FRAME_SIZE[1] * _SCALE) / 2
_COLORS = np.array([(230, 25, 75), (60, 180, 75), (67, 99, 216), (245, 130, 49)], np.uint8)


def _tracks(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    size = rng.uniform(50, 160, (n, 2))
    return {
        "pos": rng.uniform(0, 1, (n, 2)) * (np.array(FRAME_SIZE) - size),
        "vel": rng.normal(0, 4, (n, 2)),
        "size": size,
        "cls": rng.integers(0, 4, n),
        "conf": rng.beta(5, 1.6, n),  # how well the "model" sees each object
    }


def _step(t: dict[str, np.ndarray]) -> None:
    t["pos"] += t["vel"]
    hi = np.array(FRAME_SIZE) - t["size"]
    bounce = (t["pos"] < 0) | (t["pos"] > hi)
    t["vel"][bounce] *= -1
    t["pos"] = np.clip(t["pos"], 0, hi)


def _candidates(rng: np.random.Generator, boxes: np.ndarray, t: dict, anchors: int) -> np.ndarray:
    """``(8, anchors)`` float32 YOLOv8-layout output for the frame's ground truth ``boxes``."""
    out = np.zeros((8, anchors), np.float32)
    rows = []
    for (x1, y1, x2, y2), c, conf in zip(boxes, t["cls"], t["conf"]):
        w, h = x2 - x1, y2 - y1
        for k in range(4):  # a cluster NMS merges
            jit = rng.normal(0, 0.04 if k else 0.02, 4) * [w, h, w, h]
            s = float(np.clip(conf * (1.0 if k == 0 else rng.uniform(0.5, 0.95)), 0, 1))
            cls = int(c) if rng.random() > 0.06 else int(rng.integers(0, 4))
            if rng.random() < 0.05:  # a badly placed box
                jit[:2] += rng.choice([-1, 1], 2) * [w, h] * 0.45
            rows.append((x1 + jit[0], y1 + jit[1], x2 + jit[2], y2 + jit[3], cls, s))
    for _ in range(int(rng.poisson(3))):  # background
        cx, cy = rng.uniform(0, 1, 2) * FRAME_SIZE
        w, h = rng.uniform(30, 120, 2)
        s = float(rng.uniform(0.02, 0.55) ** 1.5)
        rows.append((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, int(rng.integers(0, 4)), s))
    for i, (x1, y1, x2, y2, cls, s) in enumerate(rows[:anchors]):
        out[0, i] = (x1 + x2) / 2 * _SCALE
        out[1, i] = (y1 + y2) / 2 * _SCALE + _PAD_Y
        out[2, i] = (x2 - x1) * _SCALE
        out[3, i] = (y2 - y1) * _SCALE
        out[4 + cls, i] = s
    return out


def _picture(
    boxes: np.ndarray, classes: np.ndarray, size: tuple[int, int], tone: int
) -> np.ndarray:
    w, h = size
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (tone, 40 + tone // 2, 70)
    sx, sy = w / FRAME_SIZE[0], h / FRAME_SIZE[1]
    for (x1, y1, x2, y2), c in zip(boxes, classes):
        img[int(y1 * sy) : int(y2 * sy), int(x1 * sx) : int(x2 * sx)] = _COLORS[int(c)]
    return img


def make_long_recording(
    path: str | Path,
    frames_per_stream: int = 2500,
    streams: int = 2,
    *,
    objects: int = 6,
    image_size: tuple[int, int] = (320, 180),
    anchors: int = 2100,
    seed: int = 0,
    fps: float = 15.0,
) -> tuple[Path, Path]:
    """Write ``streams`` x ``frames_per_stream`` frames to ``path`` (images ``image_size``, JPEG) and
    their ground truth to ``<stem>_gt.json``; returns both paths. 5,000 frames take a few seconds."""
    from dsprobe.nvinfer.config import load_nvinfer_config
    from dsprobe.recording.writer import Recorder
    from dsprobe.sample import CONFIG_PATH, coco_categories

    path = Path(path)
    gt_path = path.with_name(f"{path.stem}_gt.json")
    rng = np.random.default_rng(seed)
    coco: dict = {"images": [], "annotations": [], "categories": coco_categories()}
    rect = (0.0, 0.0, float(FRAME_SIZE[0]), float(FRAME_SIZE[1]))
    with Recorder(
        path,
        nvinfer_config=load_nvinfer_config(CONFIG_PATH),
        image_max_size=max(image_size),
        drop_when_full=False,
        compression="lzf",
        block_frames=64,
        notes={"generator": "dsprobe.sample.long_recording", "seed": seed},
    ) as rec:
        for s in range(streams):
            t = _tracks(rng, objects)
            for f in range(frames_per_stream):
                _step(t)
                boxes = np.concatenate([t["pos"], t["pos"] + t["size"]], axis=1)
                image_id = s * 1_000_000 + f
                coco["images"].append(
                    {
                        "id": image_id,
                        "width": FRAME_SIZE[0],
                        "height": FRAME_SIZE[1],
                        "source_id": s,
                        "frame_num": f,
                    }
                )
                for b, c in zip(boxes.tolist(), t["cls"].tolist()):
                    coco["annotations"].append(
                        {
                            "id": len(coco["annotations"]) + 1,
                            "image_id": image_id,
                            "category_id": int(c),
                            "iscrowd": 0,
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                            "area": (b[2] - b[0]) * (b[3] - b[1]),
                        }
                    )
                rec.record(
                    FrameRecord(
                        source_id=s,
                        frame_num=f,
                        pts_ns=int(f * 1e9 / fps),
                        unique_id=1,
                        network_size=(NETWORK, NETWORK, 3),
                        frame_size=FRAME_SIZE,
                        layers={"output0": _candidates(rng, boxes, t, anchors)},
                        image=ImageRecord(_picture(boxes, t["cls"], image_size, 40 + 60 * s), rect),
                    )
                )
    gt_path.write_text(json.dumps(coco))
    return path, gt_path
