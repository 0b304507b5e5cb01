"""Synthetic scenes for the bundled sample: coloured shapes moving over photo backgrounds.

numpy and Pillow only, deterministic from a seed. Four classes (``CLASSES``): circle, square, triangle,
star, in varied colours, sizes and rotations. Objects move and bounce off a margin outside the frame
(so some are cut by the frame edges), overlap each other, and about one in five is small.
Backgrounds are crops of the public-domain/CC0 photos shipped beside this module (``bg_*.jpg``, taken
from scikit-image's data, see docs/sample.md), or a procedural texture.

Ground truth per frame: ``boxes`` (N, 4) float32 ``x1, y1, x2, y2`` in pixels of the rendered frame
(pixel edges: a box covering pixel columns 10..19 is ``x1=10, x2=20``), the extent of the object's
pixels inside the frame, including parts hidden by objects drawn on top; ``classes`` (N,) int32. An object
is left out when less than ``MIN_VISIBLE`` of its pixels are visible (outside the frame or covered).
:func:`render_truth` adds, per box, the object's identity (its index in the scene, the same on every
frame) and its colour family (``COLOR_FAMILIES``, from its RGB colour), what the secondary sample
model classifies and re-identifies.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np

CLASSES = ("circle", "square", "triangle", "star")
HERE = Path(__file__).resolve().parent
BACKGROUNDS = tuple(sorted(HERE.glob("bg_*.jpg")))
MIN_VISIBLE = 0.25
#: the secondary sample's attribute: six hue families (60 degrees each, centred on red, yellow, ...)
#: for the saturated colours, and the near-white / near-black ones (see :func:`color_family`)
COLOR_FAMILIES = ("red", "yellow", "green", "cyan", "blue", "magenta", "white", "black")


@dataclass
class Shape:
    """One moving object: centre (cx, cy) and half-size r in frame pixels, velocity in pixels/frame,
    rotation ``angle`` (radians) and its change per frame ``spin``; ``color`` RGB."""

    class_id: int
    cx: float
    cy: float
    r: float
    vx: float
    vy: float
    angle: float
    spin: float
    color: tuple[int, int, int]


def _polygon(class_id: int) -> np.ndarray | None:
    """Vertices (K, 2) of a shape of half-size 1 centred at 0 (None for the circle)."""
    if class_id == 1:
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float32) * 0.85
    if class_id == 2:
        return np.array([[0, -1], [1, 0.8], [-1, 0.8]], np.float32)
    if class_id == 3:
        a = -np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        return np.stack([rad * np.cos(a), rad * np.sin(a)], 1).astype(np.float32)
    return None


def shape_mask(s: Shape, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Which pixel centres ``(x, y)`` (frame pixels, any equal shapes) are inside shape ``s``."""
    dx, dy = x - s.cx, y - s.cy
    poly = _polygon(s.class_id)
    if poly is None:
        return dx * dx + dy * dy <= s.r * s.r
    c, si = np.cos(s.angle), np.sin(s.angle)
    v = poly * s.r @ np.array([[c, si], [-si, c]], np.float32)  # rotate the vertices by angle
    inside = np.zeros(dx.shape, bool)
    for (xi, yi), (xj, yj) in zip(v, np.roll(v, 1, axis=0)):  # even-odd rule
        crosses = (yi > dy) != (yj > dy)
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = (xj - xi) * (dy - yi) / (yj - yi) + xi
        inside ^= crosses & (dx < xc)
    return inside


def _random_color(rng: np.random.Generator) -> tuple[int, int, int]:
    """A saturated colour (HSV with s, v >= 0.55), now and then near-white or near-black."""
    u = rng.random()
    if u < 0.08:
        return tuple(int(v) for v in rng.integers(225, 256, 3))
    if u < 0.16:
        return tuple(int(v) for v in rng.integers(0, 30, 3))
    h, s, v = rng.random(), rng.uniform(0.55, 1), rng.uniform(0.55, 1)
    k = (np.array([5, 3, 1]) + h * 6) % 6
    rgb = v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)
    return tuple(int(round(c * 255)) for c in rgb)


def color_family(rgb: tuple[int, int, int]) -> int:
    """Index into ``COLOR_FAMILIES`` of an RGB colour (0..255): ``white`` when every channel is >= 200,
    ``black`` when every channel is < 60, else the hue family (hue rounded to the nearest multiple of
    60 degrees: red 330..30, yellow 30..90, ...). :func:`_random_color` keeps the three groups apart
    (saturated colours have a channel <= 115 and one >= 140)."""
    r, g, b = (float(c) / 255.0 for c in rgb)
    hi, lo = max(r, g, b), min(r, g, b)
    if lo >= 200 / 255:
        return 6
    if hi < 60 / 255:
        return 7
    d = hi - lo
    if d == 0:
        return 6 if hi >= 0.5 else 7
    if hi == r:
        h = ((g - b) / d) % 6
    elif hi == g:
        h = (b - r) / d + 2
    else:
        h = (r - g) / d + 4
    return int(np.floor(h + 0.5)) % 6


def random_shapes(rng: np.random.Generator, width: int, height: int, n: int) -> list[Shape]:
    """``n`` shapes at random places (anywhere in the frame), sizes, speeds, rotations and colours,
    largest first (the drawing order)."""
    shapes = []
    for _ in range(n):
        r = rng.uniform(10, 18) if rng.random() < 0.2 else rng.uniform(22, 72)
        speed, heading = rng.uniform(1.5, 6), rng.uniform(0, 2 * np.pi)
        shapes.append(
            Shape(
                int(rng.integers(0, len(CLASSES))),
                rng.uniform(0, width),
                rng.uniform(0, height),
                r,
                speed * np.cos(heading),
                speed * np.sin(heading),
                rng.uniform(0, 2 * np.pi),
                rng.uniform(-0.05, 0.05),
                _random_color(rng),
            )
        )
    shapes.sort(key=lambda s: -s.r)  # small ones drawn last, on top
    return shapes


@lru_cache(maxsize=None)
def _photo(path: Path) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover
        raise ImportError("dsprobe.sample needs Pillow: pip install dsprobe[onnx]") from e
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def photo_background(
    rng: np.random.Generator, width: int, height: int, index: int | None = None
) -> np.ndarray:
    """A random crop (aspect of the frame, 55-100% of the photo) of background photo ``index`` (random
    when None), resized to ``width`` x ``height`` (bilinear), maybe mirrored; grey photos get a tint.
    HxWx3 uint8."""
    from dsprobe.reference.preprocess import resize

    if not BACKGROUNDS:
        raise FileNotFoundError(f"no background photos (bg_*.jpg) in {HERE}")
    i = int(rng.integers(len(BACKGROUNDS))) if index is None else index % len(BACKGROUNDS)
    photo = _photo(BACKGROUNDS[i])
    ph, pw = photo.shape[:2]
    cw = int(min(pw, ph * width / height) * rng.uniform(0.55, 1.0))
    ch = int(cw * height / width)
    x0, y0 = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
    out = resize(photo[y0 : y0 + ch, x0 : x0 + cw], width, height, scaling_filter=1)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if (photo[..., 0] == photo[..., 2]).all():  # a grey texture: tint it
        out = (out * rng.uniform(0.6, 1.1, 3)).clip(0, 255)
    return np.ascontiguousarray(out, dtype=np.uint8)


def procedural_background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A smooth texture (low-frequency sinusoids + mild noise), HxWx3 uint8."""
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


@dataclass
class FrameTruth:
    """One rendered frame and its ground truth, row k of every array = box k.

    ``boxes`` (N, 4) float32 x1y1x2y2 frame pixels; ``classes`` (N,) int32 shape class;
    ``identities`` (N,) int32: the object's index in the scene's shape list (the same object keeps it
    on every frame); ``colors`` (N,) int32: its ``COLOR_FAMILIES`` index."""

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    identities: np.ndarray
    colors: np.ndarray


def render(bg: np.ndarray, shapes: list[Shape]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``shapes`` (in order, later on top) onto a copy of ``bg`` (HxWx3 uint8).

    Returns (image HxWx3 uint8, boxes (N, 4) float32 x1y1x2y2 frame pixels, class ids (N,) int32), see
    the module docstring for what a box covers and which objects are left out."""
    t = render_truth(bg, shapes)
    return t.image, t.boxes, t.classes


def render_truth(bg: np.ndarray, shapes: list[Shape]) -> FrameTruth:
    """:func:`render` with each box's identity and colour family (:class:`FrameTruth`)."""
    img = bg.copy()
    h, w = img.shape[:2]
    owner = np.full((h, w), -1, np.int16)  # which shape is visible at each pixel
    drawn = []
    for k, s in enumerate(shapes):
        x0, x1 = max(int(np.floor(s.cx - s.r)), 0), min(int(np.ceil(s.cx + s.r)) + 1, w)
        y0, y1 = max(int(np.floor(s.cy - s.r)), 0), min(int(np.ceil(s.cy + s.r)) + 1, h)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
        m = shape_mask(s, xx, yy)
        if not m.any():
            continue
        img[y0:y1, x0:x1][m] = s.color
        owner[y0:y1, x0:x1][m] = k
        cols, rows = np.flatnonzero(m.any(0)), np.flatnonzero(m.any(1))
        drawn.append((k, s, (x0 + cols[0], y0 + rows[0], x0 + cols[-1] + 1, y0 + rows[-1] + 1)))
    boxes, ids = [], []
    for k, s, (x0, y0, x1, y1) in drawn:
        if (owner[y0:y1, x0:x1] == k).sum() >= MIN_VISIBLE * full_area(s):
            boxes.append((x0, y0, x1, y1))
            ids.append(k)
    return FrameTruth(
        img,
        np.array(boxes, np.float32).reshape(-1, 4),
        np.array([shapes[k].class_id for k in ids], np.int32),
        np.array(ids, np.int32),
        np.array([color_family(shapes[k].color) for k in ids], np.int32),
    )


def full_area(s: Shape) -> float:
    """Area of shape ``s`` in pixels when fully inside the frame (analytic, shoelace for polygons)."""
    poly = _polygon(s.class_id)
    if poly is None:
        return float(np.pi * s.r * s.r)
    x, y = poly[:, 0] * s.r, poly[:, 1] * s.r
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


class Scene:
    """A clip: one background and ``num_objects`` moving shapes, all drawn from ``seed``.

    ``background``: ``"photo"`` (a crop of a shipped photo, the default), ``"procedural"`` or
    ``"mixed"`` (photo 3 times in 4)."""

    def __init__(
        self,
        seed: int,
        width: int = 960,
        height: int = 540,
        num_objects: int = 7,
        background: str = "photo",
    ) -> None:
        rng = np.random.default_rng(seed)
        self.width, self.height = width, height
        if background not in ("photo", "procedural", "mixed"):
            raise ValueError(
                f"background must be 'photo', 'procedural' or 'mixed', not {background!r}"
            )
        use_photo = background == "photo" or (background == "mixed" and rng.random() < 0.75)
        self.bg = (
            photo_background(rng, width, height)
            if use_photo
            else procedural_background(rng, width, height)
        )
        self.shapes = random_shapes(rng, width, height, num_objects)

    def step(self) -> None:
        """Advance one frame: move, spin, bounce off a margin outside the frame (objects may leave partly)."""
        for s in self.shapes:
            s.cx += s.vx
            s.cy += s.vy
            s.angle += s.spin
            m = s.r * 0.6
            if s.cx < -m or s.cx > self.width + m:
                s.vx = -s.vx
            if s.cy < -m or s.cy > self.height + m:
                s.vy = -s.vy

    def render(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The current frame: (image, boxes x1y1x2y2, class ids), see :func:`render`."""
        return render(self.bg, self.shapes)

    def render_truth(self) -> FrameTruth:
        """The current frame with identities and colour families, see :func:`render_truth`."""
        return render_truth(self.bg, self.shapes)

    def frames(self, n: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Yield ``n`` (image, boxes, class_ids) tuples, advancing the scene after each."""
        for _ in range(n):
            yield self.render()
            self.step()
