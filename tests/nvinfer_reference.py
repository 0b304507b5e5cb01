"""A straightforward, loop-by-loop Python transcription of nvinfer's C++ postprocessing, used as the
test oracle (slow and literal on purpose; no vectorisation, no dsprobe code):

* ``DetectPostprocessor::preClusteringThreshold``, the per-class split, ``nonMaximumSuppression`` /
  ``clusterAndFillDetectionOutputNMS``, ``filterTopKOutputs``, ``fillUnclusteredOutput``
  (nvdsinfer_context_impl_output_parsing.cpp);
* the crop / letterbox geometry of ``get_converted_buffer`` (gstnvinfer.cpp);
* ``attach_metadata_detector`` (gstnvinfer_meta_utils.cpp): mapping back, the DS9 clamp, the object
  filters, the SGIE parent offset.

C++ ``float`` is ``np.float32``, ``double`` is Python ``float``; ``guint`` values are Python ints
converted to float where C++ converts them. See docs/nvinfer-semantics.md §1, §3.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

f32 = np.float32


@dataclass(frozen=True)
class Obj:
    """NvDsInferObjectDetectionInfo / NvDsInferObject: float32 rect and confidence."""

    class_id: int
    left: np.float32
    top: np.float32
    width: np.float32
    height: np.float32
    conf: np.float32


def objects_from_boxes(boxes, scores, class_ids) -> list[Obj]:
    """What a C++ parser emits from x1, y1, x2, y2 corners: left = x1, width = x2 - x1 (float)."""
    out = []
    for b, s, c in zip(boxes, scores, class_ids):
        x1, y1, x2, y2 = (f32(v) for v in b)
        out.append(Obj(int(c), x1, y1, f32(x2 - x1), f32(y2 - y1), f32(s)))
    return out


def box_of(o: Obj) -> tuple:
    """The dsprobe box of an nvinfer rect: left, top, left + width, top + height (float32)."""
    return (o.left, o.top, f32(o.left + o.width), f32(o.top + o.height))


# ---------------------------------------------------------------------------------------------- clustering
def pre_clustering_threshold(objects, num_classes, pre):
    return [o for o in objects if not (o.class_id >= num_classes or o.conf < f32(pre[o.class_id]))]


def split_per_class(objects, num_classes):
    lists = [[] for _ in range(num_classes)]
    for o in objects:
        lists[o.class_id].append(o)
    return lists


def overlap1d(x1min, x1max, x2min, x2max):
    if x1min > x2min:
        x1min, x2min = x2min, x1min
        x1max, x2max = x2max, x1max
    return f32(0) if x1max < x2min else f32(min(x1max, x2max) - x2min)


def compute_iou(b1: Obj, b2: Obj):
    overlap_x = overlap1d(b1.left, f32(b1.left + b1.width), b2.left, f32(b2.left + b2.width))
    overlap_y = overlap1d(b1.top, f32(b1.top + b1.height), b2.top, f32(b2.top + b2.height))
    area1 = f32(b1.width * b1.height)
    area2 = f32(b2.width * b2.height)
    overlap2d = f32(overlap_x * overlap_y)
    u = f32(f32(area1 + area2) - overlap2d)
    return f32(0) if u == 0 else f32(overlap2d / u)


def non_maximum_suppression(score_index, bbox, nms_threshold):
    indices = []
    for _, idx in score_index:
        keep = True
        for kept_idx in indices:
            if keep:
                keep = compute_iou(bbox[idx], bbox[kept_idx]) <= f32(nms_threshold)
            else:
                break
        if keep:
            indices.append(idx)
    return indices


def filter_topk(topk, objects):
    if topk < 0:
        return objects
    objects = sorted(objects, key=lambda o: -o.conf)  # std::stable_sort (Python's sort is stable)
    return objects[:topk]


def cluster_nms(per_class_lists, iou, post, topk):
    """clusterAndFillDetectionOutputNMS: per class stable sort, NMS, conf > post, top-k."""
    out = []
    for c, objs in enumerate(per_class_lists):
        if not objs:
            continue
        score_index = sorted([(o.conf, r) for r, o in enumerate(objs)], key=lambda p: -p[0])
        indices = non_maximum_suppression(score_index, objs, iou[c])
        post_nms = [objs[i] for i in indices if objs[i].conf > f32(post[c])]
        out += filter_topk(topk[c], post_nms)
    return out


def fill_unclustered(per_class_lists, topk):
    """fillUnclusteredOutput (cluster-mode 4): top-k per class only."""
    out = []
    for c, objs in enumerate(per_class_lists):
        out += filter_topk(topk[c], objs)
    return out


# ---------------------------------------------------------------------------------------------- geometry
def round_up_2(v: int) -> int:
    return (v + 1) & ~1


def round_down_2(v: int) -> int:
    return v & ~1


def converted_buffer_geometry(
    crop_rect, network_w, network_h, maintain_aspect_ratio, symmetric_padding
):
    """get_converted_buffer: (ratio_x, ratio_y, offset_left, offset_top)."""
    src_width = round_down_2(int(crop_rect[2]))
    src_height = round_down_2(int(crop_rect[3]))
    offset_left = offset_top = 0
    if maintain_aspect_ratio:
        hdest = network_w * src_height / float(src_width)
        wdest = network_h * src_width / float(src_height)
        if hdest <= network_h:
            dest_width, dest_height = network_w, int(hdest)
        else:
            dest_width, dest_height = int(wdest), network_h
        if symmetric_padding:
            offset_left = (network_w - dest_width) // 2
            offset_top = (network_h - dest_height) // 2
    else:
        dest_width, dest_height = network_w, network_h
    return float(dest_width) / src_width, float(dest_height) / src_height, offset_left, offset_top


# ---------------------------------------------------------------------------------------------- attach
@dataclass(frozen=True)
class FilterParams:
    """GstNvInferDetectionFilterParams of one class (guint values)."""

    roi_top_offset: int = 0
    roi_bottom_offset: int = 0
    detection_min_width: int = 0
    detection_min_height: int = 0
    detection_max_width: int = 0
    detection_max_height: int = 0


def attach_metadata_detector(  # noqa: C901 (a line-by-line transcription of the C function)
    objects,
    geometry,
    surface_w,
    surface_h,
    filter_params,
    filter_out_class_ids=(),
    crop_objects_to_roi_boundary=False,
    clamp_negative=False,
    parent_rect=None,
    apply_filters=True,
):
    """attach_metadata_detector: the rects (float32 left, top, width, height) nvinfer attaches.

    ``geometry`` = (ratio_x, ratio_y, offset_left, offset_top); ``filter_params[c]`` a FilterParams;
    ``clamp_negative`` is DS9's "top and left should not be less than 0"; ``parent_rect`` the SGIE
    parent's rect_params (None for a PGIE). ``apply_filters=False`` skips the object checks (which
    nvinfer always runs: with all-zero params they still drop boxes crossing the top or bottom edge),
    for testing the mapping alone."""
    ratio_x, ratio_y, offset_left, offset_top = geometry
    roi_left = roi_top = 0
    out = []
    for obj in objects:
        fp = filter_params[obj.class_id]
        left = f32(float(f32(obj.left - f32(offset_left))) / ratio_x + roi_left)
        top = f32(float(f32(obj.top - f32(offset_top))) / ratio_y + roi_top)
        width = f32(float(obj.width) / ratio_x)
        height = f32(float(obj.height) / ratio_y)
        if clamp_negative:
            if top < 0:
                top = f32(0)
            if left < 0:
                left = f32(0)
        if not apply_filters:
            pass
        elif obj.class_id in filter_out_class_ids:
            continue
        elif width < f32(fp.detection_min_width):
            continue
        elif height < f32(fp.detection_min_height):
            continue
        elif fp.detection_max_width > 0 and width > f32(fp.detection_max_width):
            continue
        elif fp.detection_max_height > 0 and height > f32(fp.detection_max_height):
            continue
        bottom_limit = f32(surface_h - fp.roi_bottom_offset)
        if not apply_filters:
            pass
        elif crop_objects_to_roi_boundary:
            if top < f32(fp.roi_top_offset):
                top = f32(fp.roi_top_offset)
            if f32(left + width) >= f32(surface_w):
                width = f32(f32(surface_w) - left)
            if f32(top + height) > bottom_limit:
                height = f32(bottom_limit - top)
        else:
            if top < f32(fp.roi_top_offset):
                continue
            if f32(top + height) > bottom_limit:
                continue
        if parent_rect is not None:
            left = f32(left + f32(parent_rect[0]))
            top = f32(top + f32(parent_rect[1]))
        out.append(replace(obj, left=left, top=top, width=width, height=height))
    return out
