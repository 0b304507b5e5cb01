"""Detector-like frames for recorder tests and benchmarks (no model, no downloads).

``yolov8_like_output`` imitates a YOLOv8-640 head output ``(84, 8400)`` float32: rows 0-3 are
cx, cy, w, h in network pixels around the 80x80/40x40/20x20 anchor grid, rows 4-83 are sigmoid
class scores that are almost all near zero with a few objects scoring high. That statistics matters
for compression measurements: random arrays barely compress, real score maps are mostly tiny values.
"""

from __future__ import annotations

import numpy as np

from dsprobe.records import FrameRecord, ImageRecord, ObjectRecord


def _anchor_grid(size: int = 640, strides: tuple[int, ...] = (8, 16, 32)) -> np.ndarray:
    """(N, 3) anchor centres x, y and stride, in network pixels."""
    parts = []
    for s in strides:
        g = size // s
        gy, gx = np.mgrid[0:g, 0:g]
        parts.append(
            np.stack([(gx.ravel() + 0.5) * s, (gy.ravel() + 0.5) * s, np.full(g * g, s)], axis=1)
        )
    return np.concatenate(parts).astype(np.float64)


def yolov8_like_output(
    rng: np.random.Generator,
    num_classes: int = 80,
    size: int = 640,
    num_objects: int = 6,
    fp16_engine: bool = False,
) -> np.ndarray:
    """One ``(4 + num_classes, anchors)`` float32 output as a YOLOv8 detector head produces it.

    ``fp16_engine=True`` rounds values to float16 precision (an FP16 TensorRT engine's output layer
    converted to float32), which compresses much better than full float32 noise.
    """
    a = _anchor_grid(size)
    n = a.shape[0]
    out = np.empty((4 + num_classes, n), np.float32)
    out[0] = a[:, 0] + rng.normal(0, 0.3, n) * a[:, 2]
    out[1] = a[:, 1] + rng.normal(0, 0.3, n) * a[:, 2]
    out[2] = a[:, 2] * np.exp(rng.normal(0.5, 0.6, n))
    out[3] = a[:, 2] * np.exp(rng.normal(0.5, 0.6, n))
    logits = rng.normal(-9.0, 2.0, (num_classes, n))
    for _ in range(num_objects):  # a few objects: high scores on a run of neighbouring anchors
        c, i = int(rng.integers(num_classes)), int(rng.integers(n - 40))
        logits[c, i : i + 40] = rng.normal(2.0, 2.0, 40)
    out[4:] = 1.0 / (1.0 + np.exp(-logits))
    return out.astype(np.float16).astype(np.float32) if fp16_engine else out


def synthetic_image(rng: np.random.Generator, width: int = 640, height: int = 360) -> np.ndarray:
    """An HxWx3 uint8 RGB picture with smooth gradients and a few boxes (compresses like a photo, roughly)."""
    y, x = np.mgrid[0:height, 0:width]
    img = np.stack(
        [
            x * 255 // max(1, width - 1),
            y * 255 // max(1, height - 1),
            (x + y) * 255 // max(1, width + height - 2),
        ],
        axis=2,
    ).astype(np.uint8)
    for _ in range(5):
        x0, y0 = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        img[y0 : y0 + 40, x0 : x0 + 60] = rng.integers(0, 256, 3, dtype=np.uint8)
    img += rng.integers(0, 8, img.shape, dtype=np.uint8)  # sensor noise
    return img


def synthetic_frame(
    rng: np.random.Generator,
    source_id: int = 0,
    frame_num: int = 0,
    *,
    unique_id: int = 1,
    fps: float = 30.0,
    image: bool = True,
    frame_size: tuple[int, int] = (1920, 1080),
    num_detections: int = 3,
) -> FrameRecord:
    """A PGIE FrameRecord: one YOLOv8-like ``output0`` layer, a 640x360 image, a few detections."""
    dets = [
        ObjectRecord(
            (float(rng.uniform(0, 1800)), float(rng.uniform(0, 1000)), 80.0, 60.0),
            int(rng.integers(80)),
            float(rng.uniform(0.3, 1.0)),
            label="object",
        )
        for _ in range(num_detections)
    ]
    return FrameRecord(
        source_id=source_id,
        frame_num=frame_num,
        pts_ns=int(frame_num * 1e9 / fps),
        unique_id=unique_id,
        network_size=(640, 640, 3),
        frame_size=frame_size,
        layers={"output0": yolov8_like_output(rng)},
        detections=dets,
        image=ImageRecord(
            synthetic_image(rng), (0.0, 0.0, float(frame_size[0]), float(frame_size[1]))
        )
        if image
        else None,
    )
