"""A straightforward, loop-by-loop Python transcription of nvinfer's C++ clustering and box mapping
(nvdsinfer_context_impl_output_parsing.cpp / gstnvinfer_meta_utils.cpp as described in
shared/reference/nvinfer_semantics.md §1.6, §3.3). Test oracle only: slow and literal on purpose."""

from __future__ import annotations

import numpy as np

f32 = np.float32


def overlap1d(x1min, x1max, x2min, x2max):
    if x1min > x2min:
        x1min, x2min = x2min, x1min
        x1max, x2max = x2max, x1max
    return f32(0) if x1max < x2min else f32(min(x1max, x2max) - x2min)


def compute_iou(a, b):
    """a, b: (left, top, right, bottom) float32 tuples."""
    ox = overlap1d(a[0], a[2], b[0], b[2])
    oy = overlap1d(a[1], a[3], b[1], b[3])
    area1 = f32((a[2] - a[0]) * (a[3] - a[1]))
    area2 = f32((b[2] - b[0]) * (b[3] - b[1]))
    overlap2d = f32(ox * oy)
    u = f32(area1 + area2 - overlap2d)
    return f32(0) if u == 0 else f32(overlap2d / u)


def cluster_nms(objects, num_classes, iou, post, topk):
    """objects: list of (class_id, box(4 float32), conf float32) in parser order."""
    out = []
    for c in range(num_classes):
        cls = [o for o in objects if o[0] == c]
        if not cls:
            continue
        order = sorted(range(len(cls)), key=lambda i: -cls[i][2])  # Python sort is stable
        kept = []
        for i in order:
            keep = True
            for k in kept:
                if keep:
                    keep = compute_iou(cls[i][1], cls[k][1]) <= f32(iou[c])
            if keep:
                kept.append(i)
        res = [cls[i] for i in kept if cls[i][2] > f32(post[c])]
        if topk[c] >= 0:
            res = sorted(res, key=lambda o: -o[2])[:topk[c]]
        out += res
    return out


def map_back(box, offset_left, offset_top, ratio_x, ratio_y, roi_left, roi_top):
    left = (float(box[0]) - offset_left) / ratio_x + roi_left
    top = (float(box[1]) - offset_top) / ratio_y + roi_top
    width = (float(box[2]) - float(box[0])) / ratio_x
    height = (float(box[3]) - float(box[1])) / ratio_y
    return left, top, width, height
