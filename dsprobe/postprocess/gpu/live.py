"""EXPERIMENTAL, untested on a real DeepStream device: nvinfer's output buffers on the GPU as CuPy
arrays, without a copy, so the live probe can postprocess on the GPU (and ``disable-output-host-copy=1``
becomes usable: nvinfer then skips the device-to-host copy and only the device buffers are valid).

``NvDsInferTensorMeta.out_buf_ptrs_dev`` is, through pyds, one capsule holding the address of a C
``void*[]`` with one device pointer per output layer (already offset to this frame or object in the
batch, on GPU ``tensor_meta.gpu_id``). :func:`wrap_device_pointer` wraps one such pointer as a CuPy
array over that memory (``cupy.cuda.UnownedMemory`` + ``MemoryPointer``: no allocation, no copy).

Lifetime: the arrays are views of nvinfer's output pool. They are valid only while the probe holds
the GstBuffer: run the postprocess inside the probe (and synchronise before it returns), or copy.
Tested on a GPU machine with CuPy arrays over raw device pointers laid out the way nvinfer lays them
out (tests/test_gpu.py); not on a Jetson or dGPU running DeepStream.
"""

from __future__ import annotations

import ctypes
from typing import Any, Sequence

import numpy as np


def wrap_device_pointer(
    address: int, shape: Sequence[int], dtype: Any, owner: Any = None, device_id: int = 0
) -> Any:
    """A CuPy array of ``shape`` / ``dtype`` over device memory at ``address`` (not owned: the
    caller keeps it alive; ``owner`` is kept referenced by the array)."""
    import cupy

    if not address:
        raise ValueError("device pointer is NULL (nvinferserver gives no device buffers)")
    dt = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize if len(shape) else dt.itemsize
    mem = cupy.cuda.UnownedMemory(int(address), nbytes, owner, device_id)
    return cupy.ndarray(tuple(int(s) for s in shape), dt, cupy.cuda.MemoryPointer(mem, 0))


def device_layers(
    pointer_array_address: int,
    layers: Sequence[tuple[str, Any, Sequence[int]]],
    *,
    device_id: int = 0,
    owner: Any = None,
    names: set[str] | None = None,
) -> dict[str, Any]:
    """``{name: CuPy array}`` for output layer ``i`` = ``layers[i]`` (name, numpy dtype, per-frame
    dims) over the device pointers of the ``void*[]`` at ``pointer_array_address`` (what
    ``pyds.get_ptr(tensor_meta.out_buf_ptrs_dev)`` gives). Each array has a leading batch axis of 1,
    ready for :meth:`Postprocess.run_batch <dsprobe.postprocess.Postprocess.run_batch>`."""
    if not pointer_array_address:
        raise ValueError("out_buf_ptrs_dev is NULL (nvinferserver, or no tensor meta)")
    ptrs = (ctypes.c_void_p * len(layers)).from_address(int(pointer_array_address))
    out = {}
    for i, (name, dtype, dims) in enumerate(layers):
        if names is not None and name not in names:
            continue
        out[name] = wrap_device_pointer(ptrs[i], (1, *dims), dtype, owner, device_id)
    return out
