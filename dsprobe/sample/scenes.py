"""Synthetic scenes for the bundled sample: coloured shapes moving over generated backgrounds.

Pure numpy and deterministic from a seed. Four classes (``CLASSES``). Objects bounce around, some
leave the frame partly (edge cases nvinfer users fight with), some overlap, some are small.
Ground-truth boxes are ``x1, y1, x2, y2`` in pixels of the rendered frame, clipped to the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES = ("circle", "square", "triangle", "diamond")


@dataclass
class Shape:
    """One moving object: centre (cx, cy) and half-size r in pixels, velocity in pixels/frame."""

    class_id: int
    cx: float
    cy: float
    r: float
    vx: float
    vy: float
    color: tuple[int, int, int]


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth textured background (low-frequency sinusoids + mild noise), HxWx3 uint8."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    base = rng.uniform(60, 190, 3)
    for c in range(3):
        acc = np.full((height, width), base[c], np.float32)
        for _ in range(3):
            fx, fy = rng.uniform(0.5, 4, 2) * 2 * np.pi / np.array([width, height])
            acc += rng.uniform(10, 35) * np.sin(fx * x + fy * y + rng.uniform(0, 2 * np.pi))
        img[:, :, c] = acc
    img += rng.normal(0, 4, (height, width, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _mask(class_id: int, x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Pixel mask of a shape centred at 0 with half-size r (x, y are offsets)."""
    if class_id == 0:
        return x * x + y * y <= r * r
    if class_id == 1:
        return (np.abs(x) <= r) & (np.abs(y) <= r)
    if class_id == 2:  # upward triangle with apex at (0, -r), base at y = r
        return (y <= r) & (y >= -r) & (np.abs(x) <= (y + r) / 2)
    return np.abs(x) + np.abs(y) <= r  # diamond


def random_shapes(rng: np.random.Generator, width: int, height: int, n: int) -> list[Shape]:
    shapes = []
    for _ in range(n):
        small = rng.random() < 0.2
        r = rng.uniform(10, 18) if small else rng.uniform(22, 70)
        speed = rng.uniform(1.5, 6)
        ang = rng.uniform(0, 2 * np.pi)
        color = tuple(int(v) for v in rng.integers(0, 256, 3))
        if max(color) - min(color) < 80:  # keep objects distinguishable from grey backgrounds
            color = (int(rng.integers(180, 256)), int(rng.integers(0, 80)), int(rng.integers(0, 256)))
        shapes.append(Shape(int(rng.integers(0, len(CLASSES))), rng.uniform(0, width), rng.uniform(0, height),
                            r, speed * np.cos(ang), speed * np.sin(ang), color))
    return shapes


def render(bg: np.ndarray, shapes: list[Shape]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``shapes`` (in order, later on top) onto a copy of ``bg``.

    Returns (image HxWx3 uint8, boxes (N, 4) float32 x1y1x2y2 clipped to the frame, class ids (N,)).
    Objects fully outside the frame or less than 20% visible are left out of the ground truth.
    """
    img = bg.copy()
    h, w = img.shape[:2]
    boxes, classes = [], []
    for s in shapes:
        x0, x1 = int(np.floor(s.cx - s.r)), int(np.ceil(s.cx + s.r)) + 1
        y0, y1 = int(np.floor(s.cy - s.r)), int(np.ceil(s.cy + s.r)) + 1
        cx0, cx1, cy0, cy1 = max(x0, 0), min(x1, w), max(y0, 0), min(y1, h)
        if cx0 >= cx1 or cy0 >= cy1:
            continue
        yy, xx = np.mgrid[cy0:cy1, cx0:cx1].astype(np.float32)
        m = _mask(s.class_id, xx + 0.5 - s.cx, yy + 0.5 - s.cy, s.r)
        full = _mask(s.class_id, *np.meshgrid(np.arange(x0, x1) + 0.5 - s.cx, np.arange(y0, y1) + 0.5 - s.cy), s.r)
        img[cy0:cy1, cx0:cx1][m] = s.color
        if not m.any() or m.sum() < 0.2 * full.sum():
            continue
        ys, xs = np.nonzero(m)
        boxes.append((cx0 + xs.min(), cy0 + ys.min(), cx0 + xs.max() + 1, cy0 + ys.max() + 1))
        classes.append(s.class_id)
    return img, np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int32)


class Scene:
    """A clip: one background, moving shapes; ``frame(i)`` renders frame i deterministically."""

    def __init__(self, seed: int, width: int = 960, height: int = 540, num_objects: int = 7) -> None:
        rng = np.random.default_rng(seed)
        self.width, self.height = width, height
        self.bg = background(rng, width, height)
        self.shapes = random_shapes(rng, width, height, num_objects)
        self._t = 0

    def step(self) -> None:
        """Advance one frame: move, bounce off a margin outside the frame (objects may leave partly)."""
        for s in self.shapes:
            s.cx += s.vx
            s.cy += s.vy
            m = s.r * 0.6
            if s.cx < -m or s.cx > self.width + m:
                s.vx = -s.vx
            if s.cy < -m or s.cy > self.height + m:
                s.vy = -s.vy
        self._t += 1

    def frames(self, n: int):
        """Yield ``n`` (image, boxes, class_ids) tuples, advancing the scene."""
        for _ in range(n):
            yield render(self.bg, self.shapes)
            self.step()
