"""Registry of named postprocess steps, so a Postprocess spec is data (names + JSON params).

Step kinds and their call signatures (all pure functions on numpy data):

* ``decode``:  ``fn(layers: Mapping[str, np.ndarray], ctx: StepContext, **params) -> Detections``
  (candidates in **network pixels**; layers may carry a leading batch axis of 1)
* ``filter``:  ``fn(dets: Detections, ctx: StepContext, **params) -> Detections``
* ``cluster``: ``fn(dets: Detections, ctx: StepContext, **params) -> Detections``
* ``scale``:   ``fn(dets: Detections, ctx: StepContext, **params) -> Detections`` (usually to frame pixels)

A user's own function is referenced as ``"package.module:function"`` and imported only when the
caller passes ``allow_import=True``.

Batched over objects (SGIE replay): a step may declare an *object-batched variant* with
:func:`batch_over_objects`; replaying a recording then runs it once per block of objects instead of
once per object, with the same result (see :class:`ObjectBatch` for the signatures). A step without
one runs per object, as always.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Literal

import numpy as np

StepKind = Literal["decode", "filter", "cluster", "scale"]
STEP_KINDS: tuple[str, ...] = ("decode", "filter", "cluster", "scale")

_REGISTRY: dict[str, dict[str, Callable]] = {kind: {} for kind in STEP_KINDS}


@dataclass(frozen=True)
class StepContext:
    """What a step may need besides its params, all taken from the recording/frame.

    * ``network_size``: network input ``(width, height)`` in pixels.
    * ``frame_size``: nvstreammux output ``(width, height)`` in pixels.
    * ``crop_rect``: the rectangle nvinfer cropped, ``(left, top, width, height)`` in frame pixels,
      unrounded floats: the full frame for a PGIE, the parent object's rect for an SGIE.
    * ``num_classes``: ``num-detected-classes`` from the config (0 = unknown).
    * ``labels``: class labels (may be empty).
    * ``geometry``: preprocessing geometry (:class:`dsprobe.nvinfer.config.Preprocessing`) or None.
    """

    network_size: tuple[int, int]
    frame_size: tuple[int, int] = (0, 0)
    crop_rect: tuple[float, float, float, float] | None = None
    num_classes: int = 0
    labels: tuple[str, ...] = ()
    geometry: object | None = None


@dataclass(frozen=True)
class ObjectBatch:
    """N objects of one SGIE that share a frame context, as an object-batched step variant sees them.

    * ``context``: what every object's :class:`StepContext` shares (network and frame size, classes,
      labels, geometry); its ``crop_rect`` is None: the objects' rects are in ``crop_rects``.
    * ``crop_rects``: ``(N, 4)`` float64 ``left, top, width, height`` in frame pixels, unrounded: the
      rect nvinfer cropped for each object (its ``StepContext.crop_rect`` on the per-object path).

    Signatures of the variants declared with :func:`batch_over_objects` (``params`` as the step's):

    * decode: ``batch(layers, objects, **params) -> (Detections, owner)``: ``layers`` maps each layer
      name to an array with the N objects on its first axis (``layers[name][k]`` is what the
      per-object call gets for object ``k``);
    * filter / cluster / scale: ``batch(dets, owner, objects, **params) -> (Detections, owner)``.

    ``owner``: ``(M,)`` integer array, the object (0 .. N-1) each row of ``dets`` belongs to. The rows of
    object ``k``, in order, must equal the per-object call ``fn(..., objects.object_context(k))``
    bit for bit; rows are grouped by object in ascending order (they are stably sorted by owner
    otherwise)."""

    context: StepContext
    crop_rects: np.ndarray

    def __len__(self) -> int:
        return int(self.crop_rects.shape[0])

    def object_context(self, k: int) -> StepContext:
        """The StepContext the per-object path gives object ``k`` (its rect as ``crop_rect``)."""
        return replace(self.context, crop_rect=tuple(self.crop_rects[k]))


#: the attribute :func:`batch_over_objects` sets on a step function
BATCH_ATTRIBUTE = "batch_over_objects"


def batch_over_objects(batch: Callable) -> Callable[[Callable], Callable]:
    """Decorator: declare ``batch`` the object-batched variant of the decorated step (signatures:
    :class:`ObjectBatch`). The step function itself is returned unchanged (it stays the per-object
    path: the live probe, ``pp(frame)``, exported bundles)::

        def my_head_batch(layers, objects, *, scale: float = 1.0): ...  # -> (Detections, owner)

        @batch_over_objects(my_head_batch)
        def my_head(layers, ctx, *, scale: float = 1.0): ...  # -> Detections

    When the variant raises, the block of objects runs per object instead (errors then name the
    object's step as usual)."""
    if not callable(batch):
        raise TypeError(f"batch_over_objects: {batch!r} is not callable")

    def deco(fn: Callable) -> Callable:
        setattr(fn, BATCH_ATTRIBUTE, batch)
        return fn

    return deco


def batch_variant(fn: Callable) -> Callable | None:
    """The object-batched variant declared for step function ``fn``, or None."""
    batch = getattr(fn, BATCH_ATTRIBUTE, None)
    return batch if callable(batch) else None


@dataclass
class Step:
    """One step: ``kind`` in decode/filter/cluster/scale, registered ``name`` (or "module:function")."""

    kind: str
    name: str
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "params": dict(self.params)}


class PostprocessError(ValueError):
    """A bad spec or a step that failed; the message names the step and what was expected."""


class UnknownStepError(KeyError):
    """A step name that is not registered (message lists the registered ones)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def register(kind: StepKind, name: str) -> Callable[[Callable], Callable]:
    """Decorator: register ``fn`` as step ``name`` of ``kind``."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown step kind {kind!r}; expected one of {STEP_KINDS}")

    def deco(fn: Callable) -> Callable:
        existing = _REGISTRY[kind].get(name)
        if existing is not None and existing is not fn:
            raise ValueError(f"{kind} step {name!r} is already registered ({existing.__module__})")
        _REGISTRY[kind][name] = fn
        return fn

    return deco


def get_step(kind: StepKind, name: str, *, allow_import: bool = False) -> Callable:
    """The function for ``kind``/``name``; ``"module:function"`` names need ``allow_import``."""
    _load_builtin_steps()
    if kind not in _REGISTRY:
        raise ValueError(f"unknown step kind {kind!r}; expected one of {STEP_KINDS}")
    if name in _REGISTRY[kind]:
        return _REGISTRY[kind][name]
    if ":" in name:
        if not allow_import:
            raise PermissionError(
                f"{kind} step {name!r} refers to user code; pass allow_import=True to import it"
            )
        return import_function(name)
    raise UnknownStepError(
        f"unknown {kind} step {name!r}; registered {kind} steps: {', '.join(sorted(_REGISTRY[kind])) or '(none)'}"
    )


def is_builtin(fn: Callable) -> bool:
    """Whether ``fn`` is one of dsprobe's own registered steps (anything else is the user's code:
    its output is checked, and an exported bundle carries its source)."""
    _load_builtin_steps()
    module = getattr(fn, "__module__", "") or ""
    return module.startswith("dsprobe.") and any(
        fn is f for r in _REGISTRY.values() for f in r.values()
    )


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its first)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)


def check_output(where: str, dets: Any) -> None:
    """A user step's result must have finite boxes and scores: PostprocessError naming ``where``."""
    bad = ~(np.isfinite(dets.boxes).all(axis=1) & np.isfinite(dets.scores))
    if bad.any():
        raise PostprocessError(
            f"{where} returned {int(bad.sum())} of {len(bad)} boxes with NaN/inf corners or scores"
        )


def step_names(kind: StepKind) -> list[str]:
    _load_builtin_steps()
    return sorted(_REGISTRY[kind])


def import_function(ref: str) -> Callable:
    """Import ``"package.module:function"`` (dots allowed after the colon for attributes)."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{ref!r} is not of the form 'package.module:function'")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"cannot import module {module_name!r} for step {ref!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AttributeError(
                f"module {module_name!r} has no attribute {attr!r} (step {ref!r})"
            ) from None
    if not callable(obj):
        raise TypeError(f"step {ref!r} is not callable")
    return obj


_BUILTIN_MODULES = (
    "dsprobe.postprocess.decoders",
    "dsprobe.postprocess.filters",
    "dsprobe.postprocess.cluster",
    "dsprobe.postprocess.scale",
)
_loaded = False


def _load_builtin_steps() -> None:
    """Import the modules that register the built-in steps (once)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)
