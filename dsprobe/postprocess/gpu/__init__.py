"""GPU backend of the postprocess (CuPy, imported lazily; ``pip install 'dsprobe[gpu]'``).

``pp.to("cuda")`` runs decode (yolov8, yolov5, yolox, xyxy_score_class, detectnet_v2), the
pre-cluster threshold, nvinfer's cluster-mode 2 NMS (and modes 0 / 4 as the CPU path maps them),
top-k and the nvinfer scaling + object filters on batches of frames on the GPU, with results identical
to the CPU path, bit for bit. ``Reclusterer(..., device="cuda")`` / ``search(..., device="cuda")`` re-cluster cached
candidates there. Without CuPy or a GPU, one :class:`GpuFallbackWarning` and the CPU path. See
``docs/gpu.md``.

Modules: :mod:`~.backend` (device choice, fallback message), :mod:`~.plan` (which chains run here),
:mod:`~.kernels` (CUDA source, ``--fmad=false``), :mod:`~.decode`, :mod:`~.cluster` (threshold, NMS,
top-k, scaling), :mod:`~.runner` (a batch), :mod:`~.replay` (a recording), :mod:`~.recluster` (the
search cache), :mod:`~.live` (nvinfer's device buffers, experimental).
"""

from dsprobe.postprocess.gpu.backend import GpuFallbackWarning, gpu_available
from dsprobe.postprocess.gpu.live import device_layers, wrap_device_pointer
from dsprobe.postprocess.gpu.plan import GPU_DECODERS, UnsupportedOnGpu, unsupported_reason

__all__ = [
    "GPU_DECODERS",
    "GpuFallbackWarning",
    "UnsupportedOnGpu",
    "device_layers",
    "gpu_available",
    "unsupported_reason",
    "wrap_device_pointer",
]
