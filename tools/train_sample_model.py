"""Train, export and evaluate the bundled sample detector (plain PyTorch; see docs/sample.md).

A tiny anchor-free YOLOv8-style detector for the 4 shape classes of ``dsprobe.sample.scenes``.
Input ``images`` 1x3x320x320 RGB in [0, 1] (nvinfer: net-scale-factor=1/255, maintain-aspect-ratio=1,
symmetric-padding=1, pad 0, nearest resize of the 1280x720 muxer frame). Output ``output0`` (1, 4+nc, 2100),
channels first: cx, cy, w, h in network pixels, then per-class sigmoid scores (no objectness), anchors
of strides 8, 16, 32 (40x40 + 20x20 + 10x10) in row-major order per level -- a raw YOLOv8 export's layout.

Training frames are rendered like the sample videos (960x540 scene -> muxer 1280x720 -> nvinfer's
letterbox, with ``dsprobe.reference.preprocess``) from seeds >= 10,000, disjoint from the sample videos
(1, 2) and the held-out clip (999). The held-out clip is encoded and decoded like a sample video before
it is scored (pycocotools, boxes in source-video pixels).

    python tools/train_sample_model.py train --out out/train --seconds 300   # GPU if available
    python tools/train_sample_model.py export out/train/model.pt dsprobe/sample/model.onnx
    python tools/train_sample_model.py evaluate dsprobe/sample/model.onnx
    python tools/train_sample_model.py backgrounds out/sample_bg.npz   # photos for a machine without Pillow
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsprobe.nvinfer.config import Preprocessing  # noqa: E402
from dsprobe.nvinfer.geometry import crop_to_network, network_to_crop, nvinfer_transform  # noqa: E402
from dsprobe.reference.preprocess import muxer_scale, network_image, preprocess_source  # noqa: E402
from dsprobe.sample import (  # noqa: E402
    HELDOUT_SEED,
    MUXER_SIZE,
    coco_categories,
    make_clip,
    scenes,  # noqa: E402
)

NET = 320
STRIDES = (8, 16, 32)
NC = len(scenes.CLASSES)
PRE = Preprocessing(
    NET, NET, 3, maintain_aspect_ratio=True, symmetric_padding=True, net_scale_factor=1 / 255
)
SOURCE = (960, 540)
# where the picture lies in the letterboxed network input (rows offset_top .. offset_top + dst_height)
LETTERBOX = nvinfer_transform(
    (0, 0, *MUXER_SIZE), (NET, NET), maintain_aspect_ratio=True, symmetric_padding=True
)
TRAIN_SEED0 = 10_000


# ---------------------------------------------------------------- data


def _use_npz_backgrounds(npz: str | None) -> None:
    """Serve the background photos from an .npz (name -> HxWx3 uint8) instead of decoding the JPEGs."""
    if npz:
        arrays = dict(np.load(npz))
        scenes._photo = lambda path: arrays[path.name]


def render_scene(job: tuple[int, int]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``per_scene`` frames (about 3 s apart) of training scene ``seed``, each (picture rows of the
    network input, uint8 (dst_height, 320, 3); boxes x1y1x2y2 in network pixels (N, 4) float32; class ids)."""
    seed, per_scene = job
    rng = np.random.default_rng(seed)
    scene = scenes.Scene(seed, *SOURCE, num_objects=int(rng.integers(3, 12)), background="mixed")
    scale = np.array([MUXER_SIZE[0] / SOURCE[0], MUXER_SIZE[1] / SOURCE[1]] * 2, np.float32)
    out = []
    for k in range(per_scene):
        for _ in range(int(rng.integers(1, 90)) if k else int(rng.integers(0, 30))):
            scene.step()
        img, boxes, classes = scene.render()
        net_img, _ = network_image(
            muxer_scale(img, *MUXER_SIZE), PRE
        )  # nvstreammux stretch, then nvinfer
        net_boxes = crop_to_network(boxes * scale, LETTERBOX).astype(np.float32)
        out.append(
            (
                net_img[LETTERBOX.offset_top : LETTERBOX.offset_top + LETTERBOX.dst_height],
                net_boxes,
                classes,
            )
        )
    return out


def make_dataset(n_scenes: int, per_scene: int, workers: int, npz: str | None):
    jobs = [(TRAIN_SEED0 + s, per_scene) for s in range(n_scenes)]
    with Pool(workers, initializer=_use_npz_backgrounds, initargs=(npz,)) as pool:
        out = [f for frames in pool.imap(render_scene, jobs, chunksize=8) for f in frames]
    return np.stack([o[0] for o in out]), [(o[1], o[2]) for o in out]


# ---------------------------------------------------------------- model


def anchor_points() -> np.ndarray:
    """(2100, 3): anchor centre x, y in network pixels and its stride, in output order."""
    pts = []
    for s in STRIDES:
        n = NET // s
        y, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        pts.append(np.stack([(x.ravel() + 0.5) * s, (y.ravel() + 0.5) * s, np.full(n * n, s)], 1))
    return np.concatenate(pts).astype(np.float32)


def build_model(nc: int = NC):
    """The detector: a small conv backbone (strides 4..32), a top-down FPN to strides 8/16, one head
    per level predicting ``ltrb`` distances (softplus x stride) and class logits."""
    import torch
    from torch import nn

    def conv(c1, c2, s=1):
        return nn.Sequential(nn.Conv2d(c1, c2, 3, s, 1, bias=False), nn.BatchNorm2d(c2), nn.SiLU())

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.s4 = nn.Sequential(conv(3, 16, 2), conv(16, 24, 2), conv(24, 24))
            self.s8 = nn.Sequential(conv(24, 32, 2), conv(32, 32), conv(32, 32))
            self.s16 = nn.Sequential(conv(32, 48, 2), conv(48, 48), conv(48, 48))
            self.s32 = nn.Sequential(conv(48, 64, 2), conv(64, 64), conv(64, 64))
            self.lat16 = conv(64 + 48, 48)
            self.lat8 = conv(48 + 32, 32)
            self.heads = nn.ModuleList(
                [nn.Sequential(conv(c, 32), nn.Conv2d(32, 4 + nc, 1)) for c in (32, 48, 64)]
            )
            for h in self.heads:
                nn.init.constant_(h[-1].bias[4:], -4.0)
            self.register_buffer(
                "anchors", torch.from_numpy(anchor_points()).T.contiguous(), persistent=False
            )

        def raw(self, x):
            p8 = self.s8(self.s4(x))
            p16 = self.s16(p8)
            p32 = self.s32(p16)
            up = nn.functional.interpolate
            f16 = self.lat16(torch.cat([up(p32, scale_factor=2.0, mode="nearest"), p16], 1))
            f8 = self.lat8(torch.cat([up(f16, scale_factor=2.0, mode="nearest"), p8], 1))
            return torch.cat(
                [h(f).flatten(2) for h, f in zip(self.heads, (f8, f16, p32))], 2
            )  # (B, 4+nc, 2100)

        def decode(self, raw):
            """(boxes x1y1x2y2 (B, 4, A) network pixels, class logits (B, nc, A))."""
            ax, ay, stride = self.anchors
            ltrb = nn.functional.softplus(raw[:, :4]) * stride
            return torch.stack(
                [ax - ltrb[:, 0], ay - ltrb[:, 1], ax + ltrb[:, 2], ay + ltrb[:, 3]], 1
            ), raw[:, 4:]

        def forward(self, x):
            b, logits = self.decode(self.raw(x))
            cxcywh = torch.stack(
                [
                    (b[:, 0] + b[:, 2]) / 2,
                    (b[:, 1] + b[:, 3]) / 2,
                    b[:, 2] - b[:, 0],
                    b[:, 3] - b[:, 1],
                ],
                1,
            )
            return torch.cat([cxcywh, logits.sigmoid()], 1)

    return Net()


# ---------------------------------------------------------------- training

LEVEL_RANGES = {
    8: (0.0, 32.0),
    16: (24.0, 64.0),
    32: (48.0, 1e9),
}  # object size max(w, h), network pixels


def assign(anchors: np.ndarray, boxes: np.ndarray, classes: np.ndarray):
    """Which anchor learns which object: anchors inside the box, within 2.5 strides of its centre, on a
    level whose size range holds the object; the smallest object wins an anchor; an object with no such
    anchor gets the nearest stride-8 anchor. Returns (class id per anchor, -1 = background (A,) int64,
    target box x1y1x2y2 (A, 4) float32)."""
    A = anchors.shape[0]
    cls_t = np.full(A, -1, np.int64)
    box_t = np.zeros((A, 4), np.float32)
    best = np.full(A, np.inf)
    ax, ay, stride = anchors.T
    for b, c in sorted(
        zip(boxes, classes), key=lambda bc: -(bc[0][2] - bc[0][0]) * (bc[0][3] - bc[0][1])
    ):
        w, h = b[2] - b[0], b[3] - b[1]
        if w < 1 or h < 1:
            continue
        size = max(w, h)
        level = np.zeros(A, bool)
        for s, (lo, hi) in LEVEL_RANGES.items():
            if lo <= size <= hi:
                level |= stride == s
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        m = (
            (ax > b[0])
            & (ax < b[2])
            & (ay > b[1])
            & (ay < b[3])
            & (np.abs(ax - cx) < 2.5 * stride)
            & (np.abs(ay - cy) < 2.5 * stride)
            & level
        )
        if not m.any():
            d = np.where(stride == 8, (ax - cx) ** 2 + (ay - cy) ** 2, np.inf)
            m = np.zeros(A, bool)
            m[np.argmin(d)] = True
        m &= w * h <= best
        best[m] = w * h
        cls_t[m] = c
        box_t[m] = b
    return cls_t, box_t


def giou(a, b):
    """Generalised IoU of matching rows of two (N, 4) x1y1x2y2 tensors."""
    import torch

    inter = (torch.min(a[:, 2:], b[:, 2:]) - torch.max(a[:, :2], b[:, :2])).clamp(min=0).prod(1)
    union = (
        (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1)
        + (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
        - inter
        + 1e-7
    )
    hull = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).clamp(min=0).prod(
        1
    ) + 1e-7
    return inter / union - (hull - union) / hull


def train(args) -> None:
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    t0 = time.time()
    imgs, targets = make_dataset(args.scenes, args.per_scene, args.workers, args.backgrounds_npz)
    n_obj = sum(len(c) for _, c in targets)
    print(f"dataset {imgs.shape} ({n_obj} objects) in {time.time() - t0:.1f}s on {dev}", flush=True)
    anchors = anchor_points()
    assigned = [assign(anchors, b, c) for b, c in targets]
    cls_all = torch.from_numpy(np.stack([a[0] for a in assigned])).to(dev)
    box_all = torch.from_numpy(np.stack([a[1] for a in assigned])).to(dev)
    x_all = torch.from_numpy(imgs).to(
        dev
    )  # uint8 (N, dst_h, 320, 3): the picture rows of the letterbox
    del imgs
    print(f"assigned in {time.time() - t0:.1f}s", flush=True)
    model = build_model().to(dev).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    n, top, rows = x_all.shape[0], LETTERBOX.offset_top, LETTERBOX.dst_height
    model.train()
    t1, it, progress, log = time.time(), 0, 0.0, []
    while progress < 1:
        progress = max(it / args.iters, (time.time() - t1) / args.seconds)
        lr = args.lr * (
            min(1.0, progress / 0.05) * 0.5 * (1 + np.cos(np.pi * min(progress, 1.0))) + 0.01
        )
        for g in opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(0, n, (args.batch,), device=dev)
        x = torch.zeros(args.batch, 3, NET, NET, device=dev)
        x[:, :, top : top + rows] = x_all[idx].permute(0, 3, 1, 2).float() / 255.0
        if args.noise:
            x[:, :, top : top + rows] += torch.randn_like(x[:, :, top : top + rows]) * (
                args.noise * torch.rand(args.batch, 1, 1, 1, device=dev)
            )
        x = x.contiguous(memory_format=torch.channels_last)
        cls_t, box_t = cls_all[idx], box_all[idx]
        pos = cls_t >= 0
        boxes, logits = model.decode(model.raw(x))
        boxes, logits = boxes.permute(0, 2, 1), logits.permute(0, 2, 1)  # (B, A, 4), (B, A, nc)
        num_pos = pos.sum().clamp(min=1).float()
        iou = giou(boxes[pos], box_t[pos])
        q = torch.zeros_like(logits)  # IoU-aware class target (score ~ box quality)
        q[pos, cls_t[pos]] = iou.detach().clamp(min=0.05)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, q, reduction="none")
        loss_cls = (
            bce * (logits.sigmoid() - q).abs().pow(2.0)
        ).sum() / num_pos  # quality focal loss
        loss_box = (1 - iou).sum() / num_pos
        loss = loss_cls + 2.0 * loss_box
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        if it % 500 == 0:
            log.append(
                (it, round(time.time() - t1, 1), loss.item(), loss_cls.item(), loss_box.item())
            )
            print(
                f"iter {it} lr {lr:.2e} loss {loss.item():.4f} cls {loss_cls.item():.4f} box {loss_box.item():.4f} "
                f"{time.time() - t1:.0f}s",
                flush=True,
            )
        it += 1
    model.eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.cpu().state_dict(), out / "model.pt")
    info = {
        "device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu",
        "torch": torch.__version__,
        "images": int(n),
        "objects": int(n_obj),
        "iters": it,
        "batch": args.batch,
        "lr": args.lr,
        "train_seconds": round(time.time() - t1, 1),
        "total_seconds": round(time.time() - t0, 1),
        "log": log,
    }
    (out / "train.json").write_text(json.dumps(info, indent=1))
    print(json.dumps({k: v for k, v in info.items() if k != "log"}), flush=True)


# ---------------------------------------------------------------- export


def export(weights: str | Path, path: str | Path) -> None:
    """``model.pt`` state dict -> ONNX (opset 17, static 1x3x320x320), checked against torch with ORT."""
    import onnxruntime as ort
    import torch

    model = build_model()
    model.load_state_dict(torch.load(weights, map_location="cpu"))
    model.eval()
    x = torch.rand(1, 3, NET, NET)
    torch.onnx.export(
        model,
        x,
        str(path),
        input_names=["images"],
        output_names=["output0"],
        opset_version=17,
        dynamo=False,
    )
    with torch.no_grad():
        ref = model(x).numpy()
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"images": x.numpy()}
    )[0]
    err = np.abs(got - ref).max()
    print(
        f"{path}: {Path(path).stat().st_size / 1e6:.2f} MB, output {got.shape}, max |ORT - torch| = {err:.2e}"
    )
    if got.shape != (1, 4 + NC, 2100) or err > 1e-3:
        raise SystemExit(
            f"ONNX export of {weights} does not match torch (shape {got.shape}, error {err})"
        )


# ---------------------------------------------------------------- evaluation


def decode(
    output: np.ndarray,
    score_threshold: float = 0.001,
    iou_threshold: float = 0.5,
    max_det: int = 100,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw ``(1, 4+nc, A)`` output -> (boxes x1y1x2y2 network pixels, scores, class ids) after the best
    class per anchor, a score threshold and greedy per-class NMS, best ``max_det`` kept."""
    out = output[0]
    scores_all = out[4:]
    cls = scores_all.argmax(0)
    score = scores_all[cls, np.arange(out.shape[1])]
    keep = score > score_threshold
    cx, cy, w, h = out[:4, keep]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    score, cls = score[keep], cls[keep]
    chosen = []
    for c in np.unique(cls):
        idx = np.flatnonzero(cls == c)
        idx = idx[np.argsort(-score[idx], kind="stable")]
        while idx.size:
            i, idx = idx[0], idx[1:]
            chosen.append(i)
            b = boxes[idx]
            inter = np.clip(
                np.minimum(b[:, 2], boxes[i, 2]) - np.maximum(b[:, 0], boxes[i, 0]), 0, None
            ) * np.clip(
                np.minimum(b[:, 3], boxes[i, 3]) - np.maximum(b[:, 1], boxes[i, 1]), 0, None
            )
            area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
            iou = inter / (
                area + (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1]) - inter + 1e-9
            )
            idx = idx[iou <= iou_threshold]
    chosen = np.array(sorted(chosen, key=lambda i: -score[i])[:max_det], np.intp)
    return boxes[chosen], score[chosen], cls[chosen]


def network_to_source(boxes: np.ndarray, source: tuple[int, int] = SOURCE) -> np.ndarray:
    """x1y1x2y2 network pixels -> source-video pixels (undo the letterbox, then the muxer stretch)."""
    b = network_to_crop(boxes, LETTERBOX)
    return b * np.array([source[0] / MUXER_SIZE[0], source[1] / MUXER_SIZE[1]] * 2)


def detect_video(
    model: str | Path, video: str | Path, score_threshold: float = 0.001
) -> list[dict]:
    """COCO detection results for every frame of ``video`` (image id = frame number, source id 0)."""
    import av
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    results = []
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            x, _ = preprocess_source(frame.to_ndarray(format="rgb24"), MUXER_SIZE, PRE)
            boxes, scores, classes = decode(sess.run(None, {"images": x[None]})[0], score_threshold)
            for b, s, c in zip(
                network_to_source(boxes).tolist(), scores.tolist(), classes.tolist()
            ):
                results.append(
                    {
                        "image_id": i,
                        "category_id": int(c),
                        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                        "score": float(s),
                    }
                )
    return results


def evaluate(
    model: str | Path,
    seed: int = HELDOUT_SEED,
    seconds: float = 20.0,
    workdir: str | Path | None = None,
) -> dict:
    """mAP@0.5 and mAP@0.5:0.95 (pycocotools) of ``model`` on clip ``seed`` encoded as a sample video."""
    import tempfile

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(workdir or tmp)
        coco = {"images": [], "annotations": [], "categories": coco_categories()}
        video = make_clip(work / f"heldout_{seed}.mp4", seed, seconds, coco=coco)
        t = time.time()
        dets = detect_video(model, video)
        infer_s = time.time() - t
        gt = COCO()
        gt.dataset = coco
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        per_class = {}
        for k, c in enumerate(scenes.CLASSES):
            p = ev.eval["precision"][0, :, k, 0, 2]  # IoU 0.5, all areas, 100 dets
            per_class[c] = round(float(p[p > -1].mean()), 4)
    res = {
        "model": str(model),
        "seed": seed,
        "frames": len(coco["images"]),
        "objects": len(coco["annotations"]),
        "map50": round(float(ev.stats[1]), 4),
        "map50_95": round(float(ev.stats[0]), 4),
        "ap50_per_class": per_class,
        "inference_seconds": round(infer_s, 1),
    }
    print(json.dumps(res))
    return res


def save_backgrounds(path: str | Path) -> None:
    """The background photos decoded into one .npz (for a training machine without Pillow)."""
    np.savez_compressed(path, **{p.name: scenes._photo(p) for p in scenes.BACKGROUNDS})


def main() -> None:  # pragma: no cover - a tool
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", required=True)
    t.add_argument("--scenes", type=int, default=4000)
    t.add_argument("--per-scene", type=int, default=4)
    t.add_argument("--iters", type=int, default=20000, help="at most this many steps")
    t.add_argument(
        "--seconds",
        type=float,
        default=300,
        help="at most this long (the lr schedule follows whichever ends first)",
    )
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument(
        "--noise", type=float, default=0.02, help="max std of the Gaussian noise added to inputs"
    )
    t.add_argument("--workers", type=int, default=8)
    t.add_argument(
        "--backgrounds-npz", help="photos from `backgrounds` (when this machine has no Pillow)"
    )
    e = sub.add_parser("export")
    e.add_argument("weights")
    e.add_argument("onnx")
    v = sub.add_parser("evaluate")
    v.add_argument("model")
    v.add_argument("--seed", type=int, default=HELDOUT_SEED)
    v.add_argument("--seconds", type=float, default=20.0)
    v.add_argument("--json", help="also write the result here")
    b = sub.add_parser("backgrounds")
    b.add_argument("npz")
    args = ap.parse_args()
    if args.cmd == "train":
        train(args)
    elif args.cmd == "export":
        export(args.weights, args.onnx)
    elif args.cmd == "evaluate":
        res = evaluate(args.model, args.seed, args.seconds)
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1))
    else:
        save_backgrounds(args.npz)


if __name__ == "__main__":
    main()
