"""Which device a Postprocess runs on, and the one message when the GPU cannot be used.

CuPy is imported lazily (``pip install 'dsprobe[gpu]'``): nothing here imports it at module level, so
the CPU path never needs it. :func:`resolve_device` decides, once per call of ``Postprocess.to``,
whether ``"cuda"`` can be honoured; when it cannot (no CuPy, no GPU, or a step the GPU backend does
not implement) it says why in one :class:`GpuFallbackWarning` and the CPU path runs instead, with the
same results.
"""

from __future__ import annotations

import warnings
from typing import Any

DEVICES = ("cpu", "cuda")


class GpuFallbackWarning(RuntimeWarning):
    """``Postprocess.to("cuda")`` (or ``device="cuda"``) falls back to the CPU; the message says why."""


def check_device(device: str) -> str:
    """``"cpu"`` or ``"cuda"`` (``"gpu"`` and ``"cuda:0"`` are read as ``"cuda"``); ValueError otherwise."""
    d = str(device).lower()
    if d == "gpu" or d.startswith("cuda"):
        return "cuda"
    if d != "cpu":
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return d


def cupy_or_reason() -> tuple[Any, str]:
    """``(cupy, "")`` when CuPy imports and sees a CUDA device, else ``(None, why not)``."""
    try:
        import cupy
    except ImportError as exc:
        return None, f"CuPy is not installed ({exc}); pip install 'dsprobe[gpu]'"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken: CuPy raises its own runtime errors
        return None, f"CuPy found no usable CUDA device ({type(exc).__name__}: {exc})"
    if n < 1:
        return None, "CuPy found no CUDA device"
    return cupy, ""


def gpu_available() -> bool:
    """True when CuPy imports and a CUDA device is present."""
    return cupy_or_reason()[0] is not None


def fallback(reason: str, stacklevel: int = 3) -> str:
    """Warn (once per call site) that the CPU path runs instead; returns ``"cpu"``."""
    warnings.warn(
        f"dsprobe: running the postprocess on the CPU instead of the GPU: {reason}",
        GpuFallbackWarning,
        stacklevel=stacklevel,
    )
    return "cpu"


def resolve_device(device: str, postprocess: Any = None) -> str:
    """The device a Postprocess will really use for ``device``: ``"cuda"`` when CuPy, a GPU and (given
    ``postprocess``) a GPU implementation of each of its steps are there; otherwise ``"cpu"`` after one
    :class:`GpuFallbackWarning` naming the reason."""
    d = check_device(device)
    if d == "cpu":
        return d
    _, reason = cupy_or_reason()
    if not reason and postprocess is not None:
        from dsprobe.postprocess.gpu.plan import unsupported_reason

        reason = unsupported_reason(postprocess)
    return fallback(reason, stacklevel=4) if reason else "cuda"


def gpu_plan(pp: Any) -> Any:
    """The :class:`~dsprobe.postprocess.gpu.plan.GpuPlan` of ``pp``, or None after one fallback
    warning when a step has no GPU kernel (a spec changed by ``with_params`` / ``set_params`` after
    ``to("cuda")``)."""
    from dsprobe.postprocess.gpu.plan import UnsupportedOnGpu, plan_of

    try:
        return plan_of(pp)
    except UnsupportedOnGpu as exc:
        fallback(f"{pp}: {exc}", stacklevel=4)
        return None
