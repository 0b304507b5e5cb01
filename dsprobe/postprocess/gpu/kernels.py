"""CUDA kernels of the GPU backend, compiled by NVRTC through CuPy with ``--fmad=false``.

Every float operation here is one IEEE float32 (or float64) operation rounded to nearest, exactly as
numpy does it on the CPU: no fused multiply-add contraction (``--fmad=false``), IEEE division and
square root (``--prec-div=true``, ``--prec-sqrt=true``), denormals kept (``--ftz=false``). numpy's
``minimum`` / ``where`` semantics for NaN are spelled out (``np_min``), since CUDA's ``fminf`` drops a
NaN where numpy propagates it. Inputs are float32 or float16 (``IN_T``; half values widen exactly).

Kernels (one thread per slot unless noted):

* ``decode_yolo``: one Ultralytics / YOLOv5 anchor -> box, score, class, keep flag
* ``decode_xyxy``: one ``(N, 6)`` row (DeepStream-Yolo / NMS-free heads)
* ``decode_detectnet``: one DetectNet_v2 grid cell of one class
* ``sort_keys``: the ``(segment, descending score)`` sort key of a candidate
* ``nms_segments``: one warp per (frame, class) run: nvinfer's greedy loop, IoU as ``iou_edges``
* ``scale_nvinfer``: ``attach_metadata_detector``'s mapping and object checks for one box
"""

from __future__ import annotations

from typing import Any

SOURCE = r"""
#ifdef HALF_IN
typedef unsigned short IN_T;
__device__ __forceinline__ float ld(const IN_T* p, long long i) {
    float f; unsigned short h = p[i];
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
#else
typedef float IN_T;
__device__ __forceinline__ float ld(const IN_T* p, long long i) { return p[i]; }
#endif

__device__ __forceinline__ bool isnan_(float v) { return v != v; }
/* numpy.minimum: NaN if either is NaN */
__device__ __forceinline__ float np_min(float a, float b) {
    return (isnan_(a) || isnan_(b)) ? __int_as_float(0x7fc00000) : (a < b ? a : b);
}
/* numpy.clip(v, lo, hi) = minimum(maximum(v, lo), hi), NaN propagated */
__device__ __forceinline__ float np_clip(float v, float lo, float hi) {
    if (isnan_(v)) return v;
    float m = v > lo ? v : lo;
    return m < hi ? m : hi;
}
/* float32 -> int32 as numpy's astype on x86 (cvttss2si): out of range and NaN -> INT_MIN */
__device__ __forceinline__ int np_to_int(float v) {
    return (v >= -2147483648.0f && v < 2147483648.0f) ? (int)v : (int)0x80000000;
}

/* max over n values with numpy's NaN propagation, and the first argmax (numpy: the first NaN) */
__device__ __forceinline__ void best_of(const IN_T* p, long long base, long long stride, int n,
                                        float gate, bool product, float* best, int* arg) {
    float b = 0.f; int a = 0; bool nan = false;
    for (int c = 0; c < n && !nan; ++c) {
        float s = ld(p, base + c * stride);
        if (product) s = s * gate;
        if (isnan_(s)) { nan = true; a = c; }
        else if (c == 0 || s > b) { b = s; a = c; }
    }
    *best = nan ? __int_as_float(0x7fc00000) : b;
    *arg = a;
}

/* mode 0: yolov8 (class scores from channel 4); 1: yolov5 objectness x class; 2: yolov5 objectness.
   box_fmt 0: cxcywh, 1: xyxy. Layer viewed as (B, anchors, channels) through strides. */
extern "C" __global__ void decode_yolo(
    const IN_T* v, long long total, int anchors, long long fs, long long as, long long cs,
    int nc, int mode, int box_fmt, float thr,
    float* boxes, float* scores, int* classes, unsigned char* keep)
{
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= total) return;
    long long b = t / anchors, a = t - b * anchors;
    long long base = b * fs + a * as;
    float score; int cls; bool ok;
    if (mode == 0) {
        best_of(v, base + 4 * cs, cs, nc, 1.f, false, &score, &cls);
        ok = score >= thr;
    } else {
        float obj = ld(v, base + 4 * cs);
        ok = obj >= thr;
        if (mode == 1) {
            best_of(v, base + 5 * cs, cs, nc, obj, true, &score, &cls);
            ok = ok && score >= thr;
        } else {
            float dummy;
            best_of(v, base + 5 * cs, cs, nc, 1.f, false, &dummy, &cls);
            score = obj;
        }
    }
    keep[t] = ok;
    scores[t] = score;
    classes[t] = cls;
    float c0 = ld(v, base), c1 = ld(v, base + cs), c2 = ld(v, base + 2 * cs), c3 = ld(v, base + 3 * cs);
    if (box_fmt == 0) {
        float hw = c2 * 0.5f, hh = c3 * 0.5f;
        boxes[4 * t] = c0 - hw; boxes[4 * t + 1] = c1 - hh;
        boxes[4 * t + 2] = c0 + hw; boxes[4 * t + 3] = c1 + hh;
    } else {
        boxes[4 * t] = c0; boxes[4 * t + 1] = c1; boxes[4 * t + 2] = c2; boxes[4 * t + 3] = c3;
    }
}

/* (B, N, 6) rows viewed through strides: x1 y1 x2 y2 score class. parser 1 = DeepStream-Yolo clamp. */
extern "C" __global__ void decode_xyxy(
    const IN_T* v, long long total, int rows, long long fs, long long rs, long long cs,
    float thr, int parser, float w, float h,
    float* boxes, float* scores, int* classes, unsigned char* keep)
{
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= total) return;
    long long b = t / rows, r = t - b * rows;
    long long base = b * fs + r * rs;
    float x1 = ld(v, base), y1 = ld(v, base + cs), x2 = ld(v, base + 2 * cs), y2 = ld(v, base + 3 * cs);
    float s = ld(v, base + 4 * cs);
    bool ok = s >= thr;
    if (parser == 1) {
        x1 = np_clip(x1, 0.f, w); y1 = np_clip(y1, 0.f, h);
        x2 = np_clip(x2, 0.f, w); y2 = np_clip(y2, 0.f, h);
        ok = ok && (x2 - x1 >= 1.f) && (y2 - y1 >= 1.f);
    }
    keep[t] = ok; scores[t] = s; classes[t] = np_to_int(ld(v, base + 5 * cs));
    boxes[4 * t] = x1; boxes[4 * t + 1] = y1; boxes[4 * t + 2] = x2; boxes[4 * t + 3] = y2;
}

/* cov (B, C, gh, gw), bbox (B, 4C, gh, gw), contiguous; slots (B, ncls, gh, gw). parser 1 = custom_resnet */
extern "C" __global__ void decode_detectnet(
    const IN_T* cov, const IN_T* bbox, long long total, int ncls, int cn, int gh, int gw,
    const float* thr, const float* gx, const float* gy, float norm, int parser, float w, float h,
    float* boxes, float* scores, int* classes, unsigned char* keep)
{
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= total) return;
    long long cell = (long long)gh * gw;
    long long per = (long long)ncls * cell;
    long long b = t / per, r = t - b * per;
    int c = (int)(r / cell); long long ji = r - (long long)c * cell;
    int j = (int)(ji / gw), i = (int)(ji - (long long)j * gw);
    float conf = ld(cov, b * cn * cell + c * cell + ji);
    long long ob = b * 4 * cn * cell + (long long)c * 4 * cell + ji;
    float o0 = ld(bbox, ob), o1 = ld(bbox, ob + cell), o2 = ld(bbox, ob + 2 * cell), o3 = ld(bbox, ob + 3 * cell);
    float x1 = (o0 - gx[i]) * -norm, y1 = (o1 - gy[j]) * -norm;
    float x2 = (o2 + gx[i]) * norm, y2 = (o3 + gy[j]) * norm;
    bool ok = conf >= thr[c];
    if (parser == 1) {
        x1 = np_clip(x1, 0.f, w - 1.f); x2 = np_clip(x2, 0.f, w - 1.f) + 1.f;
        y1 = np_clip(y1, 0.f, h - 1.f); y2 = np_clip(y2, 0.f, h - 1.f) + 1.f;
    } else {
        x1 = x1 >= w ? w - 1.f : x1; x2 = x2 >= w ? w - 1.f : x2;
        y1 = y1 >= h ? h - 1.f : y1; y2 = y2 >= h ? h - 1.f : y2;
        x1 = x1 < 0.f ? 0.f : x1; x2 = x2 < 0.f ? 0.f : x2;
        y1 = y1 < 0.f ? 0.f : y1; y2 = y2 < 0.f ? 0.f : y2;
        ok = ok && (x2 - x1 >= 0.f) && (y2 - y1 >= 0.f);
    }
    keep[t] = ok; scores[t] = conf; classes[t] = c;
    boxes[4 * t] = x1; boxes[4 * t + 1] = y1; boxes[4 * t + 2] = x2; boxes[4 * t + 3] = y2;
}

/* key = segment << 32 | rank of the score in descending order (-0 ties 0, NaN last) */
extern "C" __global__ void sort_keys(const float* scores, const long long* segment, long long n,
                                     unsigned long long* key)
{
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    float s = scores[t] + 0.0f;                 /* -0.0 -> 0.0 */
    unsigned int d;
    if (isnan_(s)) d = 0xffffffffu;
    else {
        int bits = __float_as_int(s);
        int mono = bits ^ ((bits >> 31) & 0x7fffffff);      /* int order = float order */
        unsigned int u = (unsigned int)mono ^ 0x80000000u;   /* unsigned, ascending */
        d = 0xfffffffeu - u;                                 /* descending, below NaN */
    }
    key[t] = ((unsigned long long)segment[t] << 32) | d;
}

/* nvinfer's box view, structure of arrays (5, n): left, top, left + width, top + height, width * height */
extern "C" __global__ void box_edges(const float* boxes, long long n, float* e)
{
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    float x1 = boxes[4 * t], y1 = boxes[4 * t + 1], x2 = boxes[4 * t + 2], y2 = boxes[4 * t + 3];
    float w = x2 - x1, hh = y2 - y1;
    e[t] = x1; e[n + t] = y1; e[2 * n + t] = w + x1; e[3 * n + t] = hh + y1; e[4 * n + t] = w * hh;
}

/* nvinfer's overlap1D: the pair ordered by left edge; 0 when the first ends before the second starts */
__device__ __forceinline__ float overlap(float a0, float a1, float b0, float b1) {
    bool swap = a0 > b0;
    float lo1 = swap ? b1 : a1, hi0 = swap ? a0 : b0;
    return lo1 < hi0 ? 0.f : np_min(a1, b1) - hi0;
}

/* One warp per segment (a (frame, class) run sorted by descending score): box i, still alive when the
   sweep reaches it, is kept and suppresses every later alive box j with !(IoU(i, j) <= thr). */
extern "C" __global__ void nms_segments(const float* e, long long n, const int* seg_start,
                                        const int* seg_len, const float* seg_thr, int nseg,
                                        unsigned char* alive_)
{
    int warp = (int)(((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5);
    int lane = threadIdx.x & 31;
    if (warp >= nseg) return;
    volatile unsigned char* alive = alive_;
    const int s = seg_start[warp], m = seg_len[warp];
    const float thr = seg_thr[warp];
    for (int i = 0; i < m - 1; ++i) {
        __syncwarp();
        if (!alive[s + i]) continue;
        const long long p = s + i;
        const float a0 = e[p], a1 = e[n + p], a2 = e[2 * n + p], a3 = e[3 * n + p], a4 = e[4 * n + p];
        for (int j = i + 1 + lane; j < m; j += 32) {
            const long long q = s + j;
            if (!alive[q]) continue;
            float inter = overlap(a0, a2, e[q], e[2 * n + q]) * overlap(a1, a3, e[n + q], e[3 * n + q]);
            float uni = (a4 + e[4 * n + q]) - inter;
            float iou = uni == 0.f ? 0.f : inter / uni;
            if (!(iou <= thr)) alive[q] = 0;
        }
    }
}

/* attach_metadata_detector for one box (network px -> frame px), per-frame mapping f, per-class
   filter values (index pc; 0 when the params are scalars). filters: 0 none, 1 checks, 2 crop to ROI. */
extern "C" __global__ void scale_nvinfer(
    const float* boxes, const int* frame, const int* pc, long long n,
    const float* off, const double* ratio, const float* origin, const int* surface,
    int clamp, int filters, const float* min_w, const float* min_h, const float* max_w,
    const float* max_h, const float* top_off, const long long* bottom_off,
    float* out, unsigned char* keep)
{
    long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n) return;
    int f = frame[t], k = pc[t];
    float x1 = boxes[4 * t], y1 = boxes[4 * t + 1], x2 = boxes[4 * t + 2], y2 = boxes[4 * t + 3];
    double rx = ratio[2 * f], ry = ratio[2 * f + 1];
    float l = (float)((double)(x1 - off[2 * f]) / rx);
    float tp = (float)((double)(y1 - off[2 * f + 1]) / ry);
    float w = (float)((double)(x2 - x1) / rx);
    float h = (float)((double)(y2 - y1) / ry);
    if (clamp) { l = l < 0.f ? 0.f : l; tp = tp < 0.f ? 0.f : tp; }
    bool ok = true;
    if (filters) {
        ok = !((w < min_w[k]) || (h < min_h[k]) || (max_w[k] > 0.f && w > max_w[k])
               || (max_h[k] > 0.f && h > max_h[k]));
        float bottom = (float)((long long)surface[2 * f + 1] - bottom_off[k]);
        float to = top_off[k];
        if (filters == 2) {
            float sw = (float)surface[2 * f];
            tp = tp < to ? to : tp;
            w = (l + w >= sw) ? sw - l : w;
            h = (tp + h > bottom) ? bottom - tp : h;
        } else {
            ok = ok && !((tp < to) || (tp + h > bottom));
        }
    }
    keep[t] = ok;
    float ox = l + origin[2 * f], oy = tp + origin[2 * f + 1];
    out[4 * t] = ox; out[4 * t + 1] = oy; out[4 * t + 2] = ox + w; out[4 * t + 3] = oy + h;
}
"""

#: NVRTC options: IEEE float32 arithmetic as numpy does it, one rounding per operation
OPTIONS = ("--fmad=false", "--prec-div=true", "--prec-sqrt=true", "--ftz=false", "-std=c++14")

_MODULES: dict[bool, Any] = {}


def module(half: bool = False) -> Any:
    """The compiled ``cupy.RawModule`` (float32 inputs, or float16 with ``half=True``), built once."""
    mod = _MODULES.get(half)
    if mod is None:
        import cupy

        opts = OPTIONS + (("-DHALF_IN",) if half else ())
        mod = _MODULES[half] = cupy.RawModule(code=SOURCE, options=opts)
    return mod


def launch(name: str, n: int, args: tuple, half: bool = False, block: int = 256) -> None:
    """Run kernel ``name`` over ``n`` threads (nothing when ``n`` is 0)."""
    if n <= 0:
        return
    fn = module(half).get_function(name)
    fn(((n + block - 1) // block,), (block,), args)
