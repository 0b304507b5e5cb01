"""The widgets' frame pictures, drawn straight into the recorded image's pixels with Pillow (no
matplotlib on the interactive path: a redraw costs a few milliseconds on a 5,000-frame recording).

:class:`FrameCanvas` draws panels (detections in frame pixels, mapped onto the recorded image through
its ``image_rect``) side by side: boxes in class colours or per-box colours (true / false positive),
highlighted boxes thick yellow, ground truth dashed white, missed objects thick dashed orange,
labels kept inside the picture and off each other. The picture is at the recorded resolution (one
pixel per recorded pixel; A/B puts two side by side)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from dsprobe.detections import Detections
from dsprobe.notebook.figures import HIGHLIGHT, color, label_of

#: box colours when detections are judged against ground truth
OUTCOME_COLORS = {"tp": "#2ecc40", "fp": "#ff4136", "missed": "#ff851b", "gt": "#ffffff"}
_GAP = 4  # px between A/B panels


@dataclass
class Panel:
    """One panel of a :class:`FrameCanvas`: detections (frame px), an optional highlight mask (thick
    yellow), a title (shown by the widget as text), optional per-box colours and ground-truth boxes
    to draw as missed (orange)."""

    dets: Detections
    highlight: np.ndarray | None = None
    title: str = ""
    colors: Sequence[str] | None = None
    missed: Detections | None = None


@dataclass
class DrawnBox:
    """A box as drawn: picture pixels (x1, y1, x2, y2), outline colour, line width."""

    box: tuple[float, float, float, float]
    color: str
    width: int


@lru_cache(maxsize=4)
def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        import matplotlib

        path = f"{matplotlib.get_data_path()}/fonts/ttf/DejaVuSans.ttf"
        return ImageFont.truetype(path, size)
    except (ImportError, OSError):  # pragma: no cover - matplotlib is in the same extra
        return ImageFont.load_default()


def _picture(frame: Any) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The recorded image (a grey picture when none was recorded) and the frame rectangle it covers."""
    fw, fh = frame.frame_size
    img = frame.image
    if img is None:
        h = max(int(round(360 * fh / max(fw, 1))), 1)
        return np.full((h, 360 if fw else 1, 3), 48, np.uint8), (0.0, 0.0, float(fw), float(fh))
    rect = frame.image_rect if frame.image_rect is not None else (0, 0, fw, fh)
    return np.ascontiguousarray(img[..., :3]), tuple(float(v) for v in rect)


class _Painter:
    """Draws on one panel of the picture: frame px -> picture px, labels placed off each other."""

    def __init__(self, draw: Any, offset: int, rect: tuple, size: tuple[int, int]) -> None:
        self.draw, self.offset = draw, offset
        left, top, w, h = rect
        self.sx, self.sy = size[0] / max(w, 1e-9), size[1] / max(h, 1e-9)
        self.left, self.top, self.size = left, top, size
        self.font = _font(max(9, min(14, size[1] // 30)))
        self.taken: list[tuple[float, float, float, float]] = []

    def px(self, b: Sequence[float]) -> tuple[float, float, float, float]:
        x1 = (b[0] - self.left) * self.sx + self.offset
        x2 = (b[2] - self.left) * self.sx + self.offset
        return x1, (b[1] - self.top) * self.sy, x2, (b[3] - self.top) * self.sy

    def rect(self, b: tuple, col: str, width: int, dashed: bool = False) -> None:
        if not dashed:
            self.draw.rectangle(b, outline=col, width=width)
            return
        x1, y1, x2, y2 = b
        for a, c in (
            ((x1, y1), (x2, y1)),
            ((x2, y1), (x2, y2)),
            ((x2, y2), (x1, y2)),
            ((x1, y2), (x1, y1)),
        ):
            n = max(int(np.hypot(c[0] - a[0], c[1] - a[1]) // 6), 1)
            for k in range(0, n, 2):
                t0, t1 = k / n, min((k + 1) / n, 1.0)
                self.draw.line(
                    [
                        (a[0] + (c[0] - a[0]) * t0, a[1] + (c[1] - a[1]) * t0),
                        (a[0] + (c[0] - a[0]) * t1, a[1] + (c[1] - a[1]) * t1),
                    ],
                    fill=col,
                    width=width,
                )

    def label(self, b: tuple, text: str, col: str) -> None:
        x1, y1 = b[0], b[1]
        lf, t, r, bt = self.draw.textbbox((0, 0), text, font=self.font)
        w, h = r - lf + 4, bt - t + 3
        x = min(max(x1, self.offset), self.offset + self.size[0] - w)
        y = y1 - h if y1 - h >= 0 else max(y1, 0)
        for _ in range(6):
            if not any(
                x < a + aw and a < x + w and y < c + ch and c < y + h for a, c, aw, ch in self.taken
            ):
                break
            y += h
        self.taken.append((x, y, w, h))
        self.draw.rectangle((x, y, x + w, y + h), fill=col)
        dark = col.lower() in (HIGHLIGHT.lower(), OUTCOME_COLORS["tp"], "#ffffff")
        self.draw.text(
            (x + 2 - lf, y + 1 - t), text, fill="black" if dark else "white", font=self.font
        )


class FrameCanvas:
    """Reused picture of ``ncols`` panels for the widgets (see the module doc)."""

    def __init__(self, ncols: int = 1) -> None:
        self.ncols = ncols
        self.size: tuple[int, int] = (0, 0)  # the whole picture (width, height)
        self.image: Any = None
        self.full_draws = 0  # how often a new frame's picture was set up
        self._key: Any = None
        self._base: np.ndarray | None = None

    @property
    def width(self) -> int:
        return self.size[0]

    def draw(
        self,
        frame: Any,
        panels: Sequence[Panel],
        labels: Sequence[str] = (),
        gt: Detections | None = None,
    ) -> list[list[DrawnBox]]:
        """Draw ``panels`` on ``frame`` (ground truth ``gt`` dashed white on each); returns each
        panel's boxes as drawn, one per detection (highlighted ones last)."""
        from PIL import Image, ImageDraw

        key = (getattr(frame, "row", None), frame.source_id, frame.frame_num, id(frame.image))
        if key != self._key:
            img, self._rect = _picture(frame)
            h, w = img.shape[:2]
            base = np.zeros((h, w * self.ncols + _GAP * (self.ncols - 1), 3), np.uint8)
            base[:] = 255
            for k in range(self.ncols):
                base[:, k * (w + _GAP) : k * (w + _GAP) + w] = img
            self._base, self._panel, self._key = base, (w, h), key
            self.size = (base.shape[1], h)
            self.full_draws += 1
        im = Image.fromarray(self._base.copy())
        d = ImageDraw.Draw(im)
        drawn = []
        for k, p in enumerate(panels[: self.ncols]):
            painter = _Painter(d, k * (self._panel[0] + _GAP), self._rect, self._panel)
            if gt is not None:
                for b in gt.boxes.tolist():
                    painter.rect(painter.px(b), OUTCOME_COLORS["gt"], 1, dashed=True)
            if p.missed is not None:
                for b in p.missed.boxes.tolist():
                    painter.rect(painter.px(b), OUTCOME_COLORS["missed"], 3, dashed=True)
            drawn.append(self._boxes(painter, p, labels))
        self.image = im
        return drawn

    def _boxes(self, painter: _Painter, p: Panel, labels: Sequence[str]) -> list[DrawnBox]:
        dets = p.dets
        hl = np.zeros(len(dets), bool) if p.highlight is None else np.asarray(p.highlight, bool)
        out = []
        order = list(np.flatnonzero(~hl)) + list(np.flatnonzero(hl))
        boxes, scores, classes = dets.boxes.tolist(), dets.scores.tolist(), dets.class_ids.tolist()
        for i in order:
            col = (
                HIGHLIGHT if hl[i] else (p.colors[i] if p.colors is not None else color(classes[i]))
            )
            width = 4 if hl[i] else 2
            b = painter.px(boxes[i])
            painter.rect(b, col, width)
            if dets.keypoints is not None:
                for x, y, v in dets.keypoints[i].tolist():
                    if v > 0.5:
                        q = painter.px((x, y, x, y))
                        painter.draw.ellipse((q[0] - 2, q[1] - 2, q[0] + 2, q[1] + 2), fill=col)
            painter.label(b, f"{label_of(classes[i], labels)} {scores[i]:.2f}", col)
            out.append(DrawnBox(b, col, width))
        return out

    def rgb(self) -> np.ndarray:
        """The current picture, HxWx3 uint8."""
        return np.asarray(self.image)

    def jpeg(self, quality: int = 90) -> bytes:
        buf = io.BytesIO()
        self.image.save(buf, format="JPEG", quality=quality)
        return buf.getvalue()
