"""A tiny CenterNet-style detector (a head dsprobe ships no decoder for), its nvinfer config, and a
short video with COCO ground truth, for the custom-decoder walk-through (notebook 05,
docs/custom-decoders.md). Nothing is downloaded or trained: the model is written with the ``onnx``
package from hand-set weights, the video is rendered with numpy and PyAV.

    python tools/make_centernet_example.py OUT_DIR [--seconds 4]

Writes ``OUT_DIR/model.onnx``, ``config_infer_primary.txt``, ``labels.txt``, ``stream0.mp4`` and
``gt.json``.

The scene: red and green squares (classes 0 ``red``, 1 ``green``; 24 to 72 px) drifting over a grey
background, 640x360 at 15 fps. The model (input ``images`` 1x3x256x256, RGB / 255, letterboxed like
nvinfer with ``maintain-aspect-ratio=1``) has CenterNet's two heads at stride 4:

* ``heatmap`` (1, 2, 64, 64): per class, a sigmoid of the colour mask (a 1x1 convolution
  ``channel - mean of the other two``, ReLU) blurred by a Gaussian (sigma 5 px, stride 4): a single
  peak at each square's centre, lower for small squares.
* ``wh`` (1, 2, 64, 64): width and height in network pixels, ``sqrt`` of the coloured area within a
  40x40 window (a square of side ``s`` alone in the window gives ``s``).

No NMS in the model: the decoder picks the heatmap's local maxima (CenterNet's 3x3 max-pool trick).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

NET = 256
STRIDE = 4
LABELS = ("red", "green")
SIZE = (640, 360)
FPS = 15

CONFIG = """\
# nvinfer config of the CenterNet-style example (tools/make_centernet_example.py): no nvinfer
# parser fits its heatmap + wh heads, so network-type=100 and output-tensor-meta=1 hand the tensors
# to dsprobe, where the user's decoder runs (notebook 05).
[property]
gpu-id=0
net-scale-factor=0.0039215697906911373
model-color-format=0
onnx-file=model.onnx
labelfile-path=labels.txt
infer-dims=3;{net};{net}
batch-size=1
network-mode=0
num-detected-classes=2
gie-unique-id=1
process-mode=1
network-type=100
output-tensor-meta=1
cluster-mode=4
maintain-aspect-ratio=1
symmetric-padding=1

[class-attrs-all]
pre-cluster-threshold=0.3
"""


def build_model(path: Path) -> Path:
    """Write the hand-weighted CenterNet-style ONNX model (about 1 KB)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    colour = np.array([[1.0, -0.5, -0.5], [-0.5, 1.0, -0.5]], np.float32).reshape(2, 3, 1, 1)
    colour /= 0.7  # the squares' colours give a mask of about 1
    k_hm, k_wh = 25, 40
    g = np.exp(-0.5 * ((np.arange(k_hm) - k_hm // 2) / 5.0) ** 2)
    gauss = np.outer(g, g) / np.outer(g, g).sum()
    init = [
        numpy_helper.from_array(colour, "colour_w"),
        numpy_helper.from_array(np.stack([gauss[None], gauss[None]]).astype(np.float32), "gauss_w"),
        numpy_helper.from_array(np.float32([8.0]), "gain"),
        numpy_helper.from_array(np.float32([0.2]), "bias"),
        numpy_helper.from_array(np.float32([k_wh * k_wh]), "window_area"),
        numpy_helper.from_array(np.float32([0.0]), "zero"),
    ]
    pad_hm = [10, 10, 14, 14]  # cell i centred on network pixel 4 i + 2, as the wh head
    pad_wh = [(k_wh - STRIDE) // 2] * 4
    nodes = [
        helper.make_node("Conv", ["images", "colour_w"], ["colour"]),
        helper.make_node("Relu", ["colour"], ["mask"]),  # (1, 2, 256, 256): how red / green
        helper.make_node(
            "Conv", ["mask", "gauss_w"], ["cover"], group=2, strides=[STRIDE] * 2, pads=pad_hm
        ),
        helper.make_node("Sub", ["cover", "bias"], ["centred"]),
        helper.make_node("Mul", ["centred", "gain"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["heatmap"]),
        helper.make_node("ReduceMax", ["mask"], ["any"], axes=[1], keepdims=1),
        helper.make_node("Min", ["any", "one"], ["any1"]),
        helper.make_node(
            "AveragePool",
            ["any1"],
            ["area_frac"],
            kernel_shape=[k_wh, k_wh],
            strides=[STRIDE] * 2,
            pads=pad_wh,
            count_include_pad=1,
        ),  # fmt: skip
        helper.make_node("Mul", ["area_frac", "window_area"], ["area"]),
        helper.make_node("Max", ["area", "zero"], ["area0"]),
        helper.make_node("Sqrt", ["area0"], ["side"]),
        helper.make_node("Concat", ["side", "side"], ["wh"], axis=1),
    ]
    init.append(numpy_helper.from_array(np.float32([1.0]), "one"))
    out = NET // STRIDE
    graph = helper.make_graph(
        nodes,
        "centernet_example",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, NET, NET])],
        [
            helper.make_tensor_value_info("heatmap", TensorProto.FLOAT, [1, 2, out, out]),
            helper.make_tensor_value_info("wh", TensorProto.FLOAT, [1, 2, out, out]),
        ],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7  # readable by older ONNX Runtime builds too
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def render_video(path: Path, gt_path: Path, seconds: float, seed: int = 5) -> None:
    """Squares drifting over grey; COCO ground truth (image id = frame_num, source 0)."""
    import av

    rng = np.random.default_rng(seed)
    n = 6
    side = rng.integers(24, 73, n)
    cls = np.arange(n) % 2
    pos = rng.uniform([0, 0], [SIZE[0] - 80, SIZE[1] - 80], (n, 2))
    vel = rng.uniform(-4, 4, (n, 2))
    colours = np.array([[220, 40, 40], [40, 200, 60]], np.uint8)
    coco: dict = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i, "name": n_} for i, n_ in enumerate(LABELS)],
    }
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "veryfast", "threads": "1"}
        else:
            stream.bit_rate = 4_000_000
        for f in range(int(round(seconds * FPS))):
            img = np.full((SIZE[1], SIZE[0], 3), 110, np.uint8)
            coco["images"].append(
                {"id": f, "width": SIZE[0], "height": SIZE[1], "source_id": 0, "frame_num": f}
            )
            for k in range(n):
                x, y = pos[k].astype(int)
                img[y : y + side[k], x : x + side[k]] = colours[cls[k]]
                coco["annotations"].append(
                    {
                        "id": len(coco["annotations"]) + 1,
                        "image_id": f,
                        "category_id": int(cls[k]),
                        "bbox": [int(x), int(y), int(side[k]), int(side[k])],
                        "area": int(side[k]) ** 2,
                        "iscrowd": 0,
                    }
                )
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
            pos += vel
            bounce = (pos < 0) | (pos > np.array(SIZE) - side[:, None])
            vel[bounce] *= -1
            pos = np.clip(pos, 0, np.array(SIZE) - side[:, None])
        for packet in stream.encode():
            out.mux(packet)
    gt_path.write_text(json.dumps(coco))


def make_example(out_dir: str | Path, seconds: float = 4.0) -> Path:
    """Everything into ``out_dir``; returns the nvinfer config's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    build_model(out / "model.onnx")
    (out / "labels.txt").write_text("\n".join(LABELS) + "\n")
    render_video(out / "stream0.mp4", out / "gt.json", seconds)
    cfg = out / "config_infer_primary.txt"
    cfg.write_text(CONFIG.format(net=NET))
    return cfg


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    print(make_example(args.out_dir, args.seconds))
