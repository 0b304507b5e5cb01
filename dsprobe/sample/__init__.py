"""The bundled sample: a tiny trained detector, its nvinfer config and labels, and a generator of
sample videos with COCO ground truth (nothing is downloaded; see docs/sample.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dsprobe.sample.scenes import CLASSES, COLOR_FAMILIES, Scene

HERE = Path(__file__).resolve().parent
MODEL_PATH = HERE / "model.onnx"
CONFIG_PATH = HERE / "config_infer_primary.txt"
LABELS_PATH = HERE / "labels.txt"
LABELS = list(CLASSES)
#: the secondary sample (process-mode=2 on the detector's objects): colour family + 128-d embedding
SECONDARY_MODEL_PATH = HERE / "secondary.onnx"
SECONDARY_CONFIG_PATH = HERE / "config_infer_secondary.txt"
SECONDARY_LABELS = list(COLOR_FAMILIES)
MUXER_SIZE = (1280, 720)
VIDEO_SEEDS = (1, 2)  # the two sample streams
HELDOUT_SEED = 999  # the held-out clip the model's mAP is reported on


@dataclass
class SampleVideos:
    """Paths of generated videos (``paths[k]`` is ``source_id`` k) and their COCO ground truth
    (``gt_json``; boxes in source-video pixels, see :func:`make_clip`)."""

    paths: list[Path]
    gt_json: Path

    @property
    def gt_json_path(self) -> Path:
        """Same as ``gt_json``."""
        return self.gt_json


def coco_categories() -> list[dict]:
    """COCO ``categories``: id = class id = line of ``labels.txt`` (0-based)."""
    return [{"id": i, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASSES)]


def _video_codec() -> str:
    import av  # lazy: pip install dsprobe[onnx]

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def make_clip(
    path: str | Path,
    seed: int,
    seconds: float = 20.0,
    fps: int = 15,
    size: tuple[int, int] = (960, 540),
    source_id: int = 0,
    coco: dict | None = None,
) -> Path:
    """Render scene ``seed`` (:class:`~dsprobe.sample.scenes.Scene`) to a video at ``path`` (H.264 when
    PyAV has libx264, else MPEG-4 Part 2; ``round(seconds * fps)`` frames of ``size`` (width, height)).

    When ``coco`` is given its ground truth is appended: image id ``source_id * 1_000_000 + frame_num``
    (frame_num 0-based, the decode order), ``file_name`` ``"<video name>#<frame_num>"``, category id =
    class id, ``bbox`` ``[x, y, w, h]`` in pixels of the source video (960x540 by default; scale by
    ``muxer / size`` per axis for nvstreammux frames, e.g. 4/3 for 1280x720). Each annotation also
    carries ``track_id`` (the object's identity within this clip, the same on every frame) and
    ``attributes: {"color": <COLOR_FAMILIES name>}`` (what the secondary sample model classifies).
    """
    import av  # lazy: pip install dsprobe[onnx]

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scene = Scene(seed, size[0], size[1])
    n = int(round(seconds * fps))
    codec = _video_codec()
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "20", "preset": "veryfast", "threads": "1"}
        else:
            stream.bit_rate = 4_000_000
        ann_id = len(coco["annotations"]) if coco is not None else 0
        for i in range(n):
            truth = scene.render_truth()
            scene.step()
            frame = av.VideoFrame.from_ndarray(truth.image, format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
            if coco is not None:
                image_id = source_id * 1_000_000 + i
                coco["images"].append(
                    {
                        "id": image_id,
                        "file_name": f"{path.name}#{i}",
                        "width": size[0],
                        "height": size[1],
                        "source_id": source_id,
                        "frame_num": i,
                    }
                )
                for b, c, k, col in zip(
                    truth.boxes.tolist(),
                    truth.classes.tolist(),
                    truth.identities.tolist(),
                    truth.colors.tolist(),
                ):
                    ann_id += 1
                    coco["annotations"].append(
                        {
                            "id": ann_id,
                            "image_id": image_id,
                            "category_id": int(c),
                            "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                            "area": (b[2] - b[0]) * (b[3] - b[1]),
                            "iscrowd": 0,
                            "track_id": int(k),
                            "attributes": {"color": COLOR_FAMILIES[col]},
                        }
                    )
        for packet in stream.encode():
            out.mux(packet)
    return path


def make_videos(
    out_dir: str | Path,
    seconds: float = 20.0,
    fps: int = 15,
    seeds: tuple[int, ...] = VIDEO_SEEDS,
    gt_name: str = "gt.json",
) -> SampleVideos:
    """Generate the sample streams ``stream<k>.mp4`` (scene ``seeds[k]``, ``source_id`` k; deterministic)
    and their COCO ground truth ``gt_name`` into ``out_dir`` (see :func:`make_clip`)."""
    out_dir = Path(out_dir)
    coco: dict = {"images": [], "annotations": [], "categories": coco_categories()}
    paths = [
        make_clip(out_dir / f"stream{k}.mp4", seed, seconds, fps, source_id=k, coco=coco)
        for k, seed in enumerate(seeds)
    ]
    gt = out_dir / gt_name
    gt.write_text(json.dumps(coco))
    return SampleVideos(paths, gt)


def ensure_sample_recording(path: str | Path, seconds: float = 20.0) -> Path:
    """The sample recording at ``path`` (with ``<stem>_gt.json`` beside it), made if missing: sample
    videos through the sample model with the reference recorder (needs ``dsprobe[onnx]``)."""
    from dsprobe.recording.options import RecorderOptions
    from dsprobe.reference.recorder import record_onnx

    path = Path(path)
    gt = path.with_name(f"{path.stem}_gt.json")
    if path.exists() and gt.exists():
        return path
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        v = make_videos(tmp, seconds=seconds)
        path.parent.mkdir(parents=True, exist_ok=True)
        record_onnx(
            v.paths,
            CONFIG_PATH,
            None,
            path,
            muxer=MUXER_SIZE,
            batch=2,
            progress=False,
            recorder=RecorderOptions(overwrite=True),  # a sample without its ground truth is remade
        )
        gt.write_text(v.gt_json.read_text())
    return path


def ensure_secondary_recording(path: str | Path, seconds: float = 4.0) -> Path:
    """The secondary sample recording at ``path`` (with ``<stem>_gt.json`` beside it), made if
    missing: the sample videos (``seconds`` each) through the detector and the secondary sample model
    (``SECONDARY_CONFIG_PATH``) with the reference recorder, object crops stored, no frame images
    (needs ``dsprobe[onnx]``)."""
    from dsprobe.reference.recorder import record_onnx

    path = Path(path)
    gt = path.with_name(f"{path.stem}_gt.json")
    if path.exists() and gt.exists():
        return path
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        v = make_videos(tmp, seconds=seconds)
        path.parent.mkdir(parents=True, exist_ok=True)
        record_onnx(
            v.paths,
            CONFIG_PATH,
            None,
            path,
            muxer=MUXER_SIZE,
            batch=2,
            images=False,
            object_images=True,
            secondary=[SECONDARY_CONFIG_PATH],
            progress=False,
        )
        gt.write_text(v.gt_json.read_text())
    return path


from dsprobe.sample.paths import (  # noqa: E402
    NotebookPaths,
    notebook_paths,
    secondary_notebook_paths,
)

__all__ = [
    "NotebookPaths",
    "notebook_paths",
    "secondary_notebook_paths",
    "ensure_sample_recording",
    "ensure_secondary_recording",
    "MODEL_PATH",
    "CONFIG_PATH",
    "LABELS_PATH",
    "LABELS",
    "SECONDARY_MODEL_PATH",
    "SECONDARY_CONFIG_PATH",
    "SECONDARY_LABELS",
    "COLOR_FAMILIES",
    "MUXER_SIZE",
    "SampleVideos",
    "coco_categories",
    "make_clip",
    "make_videos",
    "VIDEO_SEEDS",
    "HELDOUT_SEED",
]
