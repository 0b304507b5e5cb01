"""Train, export and check the bundled secondary sample model (plain PyTorch; see docs/secondary-models.md).

A tiny CNN that runs on the sample detector's object crops (nvinfer process-mode=2) with two outputs:

* ``color`` (B, 8): probabilities (softmax inside the graph, as nvinfer's classifier rule expects) of the
  object's colour family, ``dsprobe.sample.scenes.COLOR_FAMILIES`` (red, yellow, green, cyan, blue,
  magenta, white, black);
* ``embedding`` (B, 128): an L2-normalised re-identification vector: crops of the same object on other
  frames lie close (cosine), other objects far.

Input ``input`` (B, 3, 64, 64) RGB in [0, 1] (net-scale-factor=1/255), the object's rect in the
1280x720 muxer frame stretched to 64x64 with nearest scaling (maintain-aspect-ratio=0, scaling-filter
unset), exactly as ``dsprobe.reference.preprocess`` builds it for the config
``dsprobe/sample/config_infer_secondary.txt``. Dynamic batch axis.

Training crops come from scenes of seeds >= 20,000 (disjoint from the sample videos 1, 2 and the
held-out clip 999): several frames per scene, the ground-truth box jittered like a detector's box
(edges moved by a few percent of the size), so one object gives crops at other positions, rotations,
occlusions and backgrounds. Loss: cross-entropy on the colour logits + a normalised-softmax (CosFace,
scale 16, margin 0.2) over the training identities (scene, object) on the embedding.

    /work/wt/sgie-venv/bin/python tools/train_secondary_model.py train --out out/train2 --seconds 600
    /work/wt/sgie-venv/bin/python tools/train_secondary_model.py export out/train2/model.pt \
        dsprobe/sample/secondary.onnx
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
from dsprobe.reference.preprocess import clip_rect, muxer_scale, network_image  # noqa: E402
from dsprobe.sample import MUXER_SIZE, scenes  # noqa: E402

NET = 64
EMB = 128
NCOLOR = len(scenes.COLOR_FAMILIES)
PRE = Preprocessing(NET, NET, 3, net_scale_factor=1 / 255)  # stretch, nearest, like the config
SOURCE = (960, 540)
TRAIN_SEED0 = 20_000
MIN_SIDE = 16  # nvinfer's input-object-min floor (DeepStream 6.x / 7.x)


# ---------------------------------------------------------------- data


def _use_npz_backgrounds(npz: str | None) -> None:
    """Serve the background photos from an .npz (name -> HxWx3 uint8; ``train_sample_model.py
    backgrounds`` writes it) on a machine without Pillow."""
    if npz:
        arrays = dict(np.load(npz))
        scenes._photo = lambda path: arrays[path.name]


def render_scene(job: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Crops of every visible object on ``frames`` frames of training scene ``seed``: (uint8 (N, 64,
    64, 3) network pictures, colour family (N,), object index in the scene (N,))."""
    seed, frames = job
    rng = np.random.default_rng(seed)
    scene = scenes.Scene(seed, *SOURCE, num_objects=int(rng.integers(3, 12)), background="mixed")
    sx, sy = MUXER_SIZE[0] / SOURCE[0], MUXER_SIZE[1] / SOURCE[1]
    crops, colors, ids = [], [], []
    for k in range(frames):
        for _ in range(int(rng.integers(3, 40)) if k else int(rng.integers(0, 30))):
            scene.step()
        t = scene.render_truth()
        muxer = muxer_scale(t.image, *MUXER_SIZE)
        for (x1, y1, x2, y2), col, ident in zip(t.boxes, t.colors, t.identities):
            w, h = (x2 - x1) * sx, (y2 - y1) * sy
            jx = rng.normal(0, 0.05, 4) * np.array([w, h, w, h])
            rect = (x1 * sx + jx[0], y1 * sy + jx[1], w + jx[2] - jx[0], h + jx[3] - jx[1])
            rect, _ = clip_rect(rect, MUXER_SIZE)
            if rect[2] < MIN_SIDE or rect[3] < MIN_SIDE:
                continue
            img, _ = network_image(muxer, PRE, rect)
            crops.append(img)
            colors.append(col)
            ids.append(ident)
    return (
        np.stack(crops) if crops else np.zeros((0, NET, NET, 3), np.uint8),
        np.array(colors, np.int64),
        np.array(ids, np.int64),
    )


def make_dataset(n_scenes: int, frames: int, workers: int, npz: str | None = None):
    jobs = [(TRAIN_SEED0 + s, frames) for s in range(n_scenes)]
    x, col, ident = [], [], []
    next_id = 0
    with Pool(workers, initializer=_use_npz_backgrounds, initargs=(npz,)) as pool:
        for c, k, i in pool.imap(render_scene, jobs, chunksize=4):
            x.append(c)
            col.append(k)
            ident.append(i + next_id)  # identity = (scene, object): unique over the dataset
            next_id += 16
    ident = np.concatenate(ident)
    _, ident = np.unique(ident, return_inverse=True)
    return np.concatenate(x), np.concatenate(col), ident


# ---------------------------------------------------------------- model


def build_model():
    """conv-BN-ReLU backbone (64 -> 4 px, 16..128 channels, about 9 M multiply-adds per crop), global average + max pooling, a colour
    head (softmax in ``forward``) and a 128-d embedding head (L2-normalised in ``forward``)."""
    import torch
    from torch import nn

    def conv(c1, c2, s=1):
        return nn.Sequential(nn.Conv2d(c1, c2, 3, s, 1, bias=False), nn.BatchNorm2d(c2), nn.ReLU())

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                conv(3, 16, 2),
                conv(16, 32, 2),
                conv(32, 32),
                conv(32, 64, 2),
                conv(64, 64),
                conv(64, 128, 2),
            )
            self.color = nn.Linear(256, NCOLOR)
            self.embed = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, EMB))

        def features(self, x):
            f = self.body(x)
            return torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1)

        def heads(self, x):
            """(colour logits (B, 8), unnormalised embedding (B, 128))."""
            f = self.features(x)
            return self.color(f), self.embed(f)

        def forward(self, x):
            logits, e = self.heads(x)
            return logits.softmax(1), nn.functional.normalize(e, dim=1)

    return Net()


# ---------------------------------------------------------------- training


def augment(x):
    """Per-crop brightness / contrast jitter and noise (H.264-like colour drift)."""
    import torch

    b = x.shape[0]
    gain = 1 + 0.12 * (torch.rand(b, 1, 1, 1, device=x.device) * 2 - 1)
    bias = 0.04 * (torch.rand(b, 3, 1, 1, device=x.device) * 2 - 1)
    noise = torch.randn_like(x) * 0.02
    return (x * gain + bias + noise).clamp(0, 1)


def train(args) -> None:
    import torch

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    imgs, colors, ident = make_dataset(args.scenes, args.frames, args.workers, args.backgrounds_npz)
    n, n_ids = len(imgs), int(ident.max()) + 1
    print(
        f"dataset {imgs.shape} ({n_ids} identities, colours {np.bincount(colors).tolist()}) "
        f"in {time.time() - t0:.1f}s",
        flush=True,
    )
    x_all = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous().to(dev)  # uint8 (N, 3, 64, 64)
    col_all, id_all = torch.from_numpy(colors).to(dev), torch.from_numpy(ident).to(dev)
    model = build_model().to(dev)
    proxies = torch.nn.Parameter(torch.randn(n_ids, EMB, device=dev) * 0.01)
    opt = torch.optim.AdamW(
        [{"params": model.parameters()}, {"params": [proxies], "weight_decay": 0.0}],
        lr=args.lr,
        weight_decay=5e-4,
    )
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
        x = augment(x_all[idx].float() / 255.0)
        logits, e = model.heads(x)
        loss_col = torch.nn.functional.cross_entropy(logits, col_all[idx])
        cos = (
            torch.nn.functional.normalize(e, dim=1)
            @ torch.nn.functional.normalize(proxies, dim=1).T
        )
        target = id_all[idx]
        cos = cos - 0.2 * torch.nn.functional.one_hot(target, n_ids)  # CosFace margin
        loss_id = torch.nn.functional.cross_entropy(16.0 * cos, target)
        loss = loss_col + loss_id
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if it % 200 == 0:
            acc = (logits.argmax(1) == col_all[idx]).float().mean().item()
            log.append((it, round(time.time() - t1, 1), loss_col.item(), loss_id.item(), acc))
            print(
                f"iter {it} lr {lr:.2e} colour {loss_col.item():.3f} (acc {acc:.3f}) "
                f"identity {loss_id.item():.3f} {time.time() - t1:.0f}s",
                flush=True,
            )
        it += 1
    model.eval()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.cpu().state_dict(), out / "model.pt")
    info = {
        "device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu",
        "threads": args.threads,
        "torch": torch.__version__,
        "crops": int(n),
        "identities": n_ids,
        "scenes": args.scenes,
        "frames_per_scene": args.frames,
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
    """``model.pt`` -> ONNX (opset 17, dynamic batch), checked against torch with ONNX Runtime."""
    import onnxruntime as ort
    import torch

    model = build_model()
    model.load_state_dict(torch.load(weights, map_location="cpu"))
    model.eval()
    x = torch.rand(3, 3, NET, NET)
    torch.onnx.export(
        model,
        x,
        str(path),
        input_names=["input"],
        output_names=["color", "embedding"],
        dynamic_axes={"input": {0: "batch"}, "color": {0: "batch"}, "embedding": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    with torch.no_grad():
        ref = [t.numpy() for t in model(x)]
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()}
    )
    err = max(float(np.abs(g - r).max()) for g, r in zip(got, ref))
    shapes = [g.shape for g in got]
    print(
        f"{path}: {Path(path).stat().st_size / 1e6:.2f} MB, outputs {shapes}, max |ORT - torch| = {err:.2e}"
    )
    if shapes != [(3, NCOLOR), (3, EMB)] or err > 1e-4:
        raise SystemExit(f"ONNX export of {weights} does not match torch ({shapes}, error {err})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", default="out/train_secondary")
    t.add_argument("--scenes", type=int, default=1200)
    t.add_argument("--frames", type=int, default=6, help="frames per scene")
    t.add_argument("--workers", type=int, default=2)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--seconds", type=float, default=600)
    t.add_argument("--iters", type=int, default=100_000)
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--backgrounds-npz", help="background photos as .npz (machines without Pillow)")
    e = sub.add_parser("export")
    e.add_argument("weights")
    e.add_argument("onnx")
    args = ap.parse_args(argv)
    if args.cmd == "train":
        train(args)
    else:
        export(args.weights, args.onnx)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
