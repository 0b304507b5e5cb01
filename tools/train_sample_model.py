"""Train the bundled sample detector (plain PyTorch) and export it to ONNX.

A tiny anchor-free YOLOv8-style detector for the 4 synthetic shape classes of ``dsprobe.sample.scenes``.
Input ``images`` 1x3x320x320 RGB in [0, 1] (nvinfer: net-scale-factor=1/255, maintain-aspect-ratio=1,
symmetric-padding=1, nearest resize from the 1280x720 muxer frame). Output ``output0`` (1, 4+nc, 2100),
channels first: cx, cy, w, h in network pixels, then per-class sigmoid scores (no objectness) — the
layout of a raw YOLOv8 export, so the library's ``yolov8`` decoder reads it.

Training frames are rendered exactly like the sample videos (960x540 -> muxer 1280x720 -> nvinfer
letterbox), from seeds disjoint from the sample videos (1, 2) and the held-out clip (999).

    python tools/train_sample_model.py --out /tmp/sample_model      # GPU if available, else CPU
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

from dsprobe.geometry import crop_to_network  # noqa: E402
from dsprobe.nvinfer_config import Preprocessing  # noqa: E402
from dsprobe.reference.preprocess import muxer_scale, network_image  # noqa: E402
from dsprobe.sample.scenes import CLASSES, Scene  # noqa: E402

NET = 320
MUXER = (1280, 720)
PRE = Preprocessing(NET, NET, 3, maintain_aspect_ratio=True, symmetric_padding=True, net_scale_factor=1 / 255)
STRIDES = (8, 16, 32)


def render_sample(args: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(network uint8 image HxWx3, boxes in network px (N,4), classes) for frame ``step`` of scene ``seed``."""
    seed, steps = args
    scene = Scene(seed, num_objects=int(np.random.default_rng(seed).integers(3, 11)))
    for _ in range(steps):
        scene.step()
    (img, boxes, classes), = scene.frames(1)
    frame = muxer_scale(img, *MUXER)
    net_img, t = network_image(frame, PRE)
    sx, sy = MUXER[0] / img.shape[1], MUXER[1] / img.shape[0]
    net_boxes = crop_to_network(boxes * np.array([sx, sy, sx, sy], np.float32), t).astype(np.float32)
    return net_img, net_boxes, classes


def make_dataset(n_scenes: int, per_scene: int, seed0: int, workers: int):
    jobs = [(seed0 + s, k * 17 + s % 13) for s in range(n_scenes) for k in range(per_scene)]
    with Pool(workers) as pool:
        out = pool.map(render_sample, jobs, chunksize=32)
    imgs = np.stack([o[0] for o in out])
    targets = [(o[1], o[2]) for o in out]
    return imgs, targets


def build_model(nc: int):
    import torch
    from torch import nn

    def conv(c1, c2, s=1, k=3):
        return nn.Sequential(nn.Conv2d(c1, c2, k, s, k // 2, bias=False), nn.BatchNorm2d(c2), nn.SiLU())

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.nc = nc
            self.s4 = nn.Sequential(conv(3, 16, 2), conv(16, 32, 2), conv(32, 32))
            self.s8 = nn.Sequential(conv(32, 64, 2), conv(64, 64))
            self.s16 = nn.Sequential(conv(64, 96, 2), conv(96, 96))
            self.s32 = nn.Sequential(conv(96, 128, 2), conv(128, 128))
            self.lat16 = conv(128 + 96, 96)
            self.lat8 = conv(96 + 64, 64)
            self.heads = nn.ModuleList([nn.Sequential(conv(c, 64), nn.Conv2d(64, 4 + nc, 1)) for c in (64, 96, 128)])
            for h in self.heads:
                nn.init.constant_(h[-1].bias[4:], -4.0)
            self.register_buffer("anchors", self._anchors(), persistent=False)

        @staticmethod
        def _anchors():
            pts = []
            for s in STRIDES:
                n = NET // s
                y, x = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
                pts.append(torch.stack([(x.flatten() + 0.5) * s, (y.flatten() + 0.5) * s,
                                        torch.full((n * n,), float(s))], 1))
            return torch.cat(pts)  # (2100, 3): ax, ay, stride

        def raw(self, x):
            p8 = self.s8(self.s4(x))
            p16 = self.s16(p8)
            p32 = self.s32(p16)
            up = nn.functional.interpolate
            f16 = self.lat16(torch.cat([up(p32, scale_factor=2.0, mode="nearest"), p16], 1))
            f8 = self.lat8(torch.cat([up(f16, scale_factor=2.0, mode="nearest"), p8], 1))
            outs = [h(f).flatten(2) for h, f in zip(self.heads, (f8, f16, p32))]
            return torch.cat(outs, 2)  # (B, 4+nc, 2100)

        def decode(self, raw):
            a = self.anchors.T  # (3, 2100)
            ltrb = nn.functional.softplus(raw[:, :4]) * a[2]
            x1, y1 = a[0] - ltrb[:, 0], a[1] - ltrb[:, 1]
            x2, y2 = a[0] + ltrb[:, 2], a[1] + ltrb[:, 3]
            return torch.stack([x1, y1, x2, y2], 1), raw[:, 4:]

        def forward(self, x):
            boxes, logits = self.decode(self.raw(x))
            cxcywh = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                                  boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1)
            return torch.cat([cxcywh, logits.sigmoid()], 1)

    return Net()


def assign(anchors: np.ndarray, boxes: np.ndarray, classes: np.ndarray, nc: int):
    """FCOS-style assignment with centre sampling and a size range per stride.

    Returns (cls_target (A, nc) float32, box_target (A, 4), positive mask (A,))."""
    A = anchors.shape[0]
    cls_t = np.zeros((A, nc), np.float32)
    box_t = np.zeros((A, 4), np.float32)
    best_area = np.full(A, np.inf)
    for b, c in zip(boxes, classes):
        w, h = b[2] - b[0], b[3] - b[1]
        if w < 2 or h < 2:
            continue
        size = max(w, h)
        ranges = {8: (0, 64), 16: (32, 128), 32: (96, 1e9)}
        ok_level = np.zeros(A, bool)
        for s, (a, z) in ranges.items():
            if a <= size <= z:
                ok_level |= anchors[:, 2] == s
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        r = 2.5 * anchors[:, 2]
        inside = (anchors[:, 0] > b[0]) & (anchors[:, 0] < b[2]) & (anchors[:, 1] > b[1]) & (anchors[:, 1] < b[3])
        central = (np.abs(anchors[:, 0] - cx) < r) & (np.abs(anchors[:, 1] - cy) < r)
        m = inside & central & ok_level & (w * h < best_area)
        best_area[m] = w * h
        cls_t[m] = 0
        cls_t[m, c] = 1
        box_t[m] = b
    return cls_t, box_t, np.isfinite(best_area)


def train(args) -> None:
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    nc = len(CLASSES)
    t0 = time.time()
    imgs, targets = make_dataset(args.scenes, args.per_scene, 10_000, args.workers)
    print(f"dataset {imgs.shape} in {time.time() - t0:.1f}s on {dev}", flush=True)
    model = build_model(nc).to(dev)
    anchors = model.anchors.cpu().numpy()
    assigned = [assign(anchors, b, c, nc) for b, c in targets]
    cls_all = torch.from_numpy(np.stack([a[0] for a in assigned])).to(dev)
    box_all = torch.from_numpy(np.stack([a[1] for a in assigned])).to(dev)
    pos_all = torch.from_numpy(np.stack([a[2] for a in assigned])).to(dev)
    x_all = torch.from_numpy(imgs).to(dev)  # uint8 NHWC
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.iters, pct_start=0.1)
    n = x_all.shape[0]
    model.train()
    t0 = time.time()
    for it in range(args.iters):
        idx = torch.randint(0, n, (args.batch,), device=dev)
        x = x_all[idx].permute(0, 3, 1, 2).float() / 255.0
        cls_t, box_t, pos = cls_all[idx], box_all[idx], pos_all[idx]
        boxes, logits = model.decode(model.raw(x))
        boxes = boxes.permute(0, 2, 1)   # (B, A, 4)
        logits = logits.permute(0, 2, 1)  # (B, A, nc)
        num_pos = pos.sum().clamp(min=1).float()
        iou = giou(boxes[pos], box_t[pos])
        # IoU-aware classification target (score ~ box quality, as YOLOv8's TAL targets)
        q = torch.zeros_like(cls_t)
        q[pos] = cls_t[pos] * iou.detach().clamp(min=0.05).unsqueeze(1)
        p = logits.sigmoid()
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, q, reduction="none")
        weight = (p - q).abs().pow(2.0)  # quality focal loss
        loss_cls = (bce * weight).sum() / num_pos
        loss_box = (1 - iou).sum() / num_pos
        loss = loss_cls + 2.0 * loss_box
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if it % 250 == 0 or it == args.iters - 1:
            print(f"iter {it} loss {loss.item():.4f} cls {loss_cls.item():.4f} box {loss_box.item():.4f} "
                  f"{time.time() - t0:.0f}s", flush=True)
    model.eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "model.pt")
    export(model.cpu(), out / "model.onnx")
    (out / "train.json").write_text(json.dumps({"iters": args.iters, "batch": args.batch, "images": int(n),
                                                "device": dev, "seconds": time.time() - t0}))


def giou(a, b):
    """Generalised IoU of matching rows of two (N, 4) x1y1x2y2 tensors."""
    import torch
    lt = torch.max(a[:, :2], b[:, :2])
    rb = torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    union = area_a + area_b - inter + 1e-7
    iou = inter / union
    clt = torch.min(a[:, :2], b[:, :2])
    crb = torch.max(a[:, 2:], b[:, 2:])
    carea = (crb - clt).clamp(min=0).prod(1) + 1e-7
    return iou - (carea - union) / carea


def export(model, path: Path) -> None:
    import torch
    dummy = torch.zeros(1, 3, NET, NET)
    kwargs = dict(input_names=["images"], output_names=["output0"], opset_version=17)
    try:
        torch.onnx.export(model, dummy, str(path), dynamo=False, **kwargs)
    except TypeError:
        torch.onnx.export(model, dummy, str(path), **kwargs)


def main() -> None:  # pragma: no cover - a tool
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--scenes", type=int, default=3000)
    ap.add_argument("--per-scene", type=int, default=4)
    ap.add_argument("--iters", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--workers", type=int, default=8)
    args = ap.parse_args()
    train(args)


if __name__ == "__main__":
    main()
