"""Extract the sample's background photos from scikit-image's bundled data into small JPEGs.

Run once by a maintainer (needs ``pip install scikit-image``); the JPEGs are committed in
``dsprobe/sample/`` and the runtime never imports scikit-image. Every image chosen is public domain
or CC0 (see docs/sample.md for the source of each).

    python tools/extract_backgrounds.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "dsprobe" / "sample"
# skimage.data function -> licence (from its docstring)
IMAGES = {
    "astronaut": "NASA, public domain",
    "coffee": "CC0, Rachel Michetti",
    "chelsea": "CC0, Stefan van der Walt",
    "rocket": "SpaceX, public domain",
    "grass": "CC0 (DeviantArt linolafett, Grass-01)",
    "gravel": "CC0 (CC0Textures Gravel04)",
    "brick": "CC0 (CC0Textures Bricks25)",
}


def main() -> None:  # pragma: no cover - a maintainer tool
    import skimage.data
    from PIL import Image

    for name in IMAGES:
        img = np.asarray(getattr(skimage.data, name)())
        path = OUT / f"bg_{name}.jpg"
        Image.fromarray(img).save(path, quality=85, optimize=True)
        print(f"{path.name}: {img.shape} {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
