"""Postprocess: an ordered, named, JSON-serialisable composition of registered steps.

``decode -> filter(s) -> cluster -> scale -> filter(s)``; each step is ``(kind, name, params)``.
The same object runs in a notebook, in the reference recorder and in the live DeepStream probe:
``pp(frame) -> Detections`` is a pure function of (tensors, frame context, spec).

Steps are chosen by registered name (:mod:`dsprobe.postprocess.registry`) or are the user's own
functions: passed as the function object (saved as ``"module:function"``) or named
``"module:function"`` (imported only with ``allow_import=True``). Params are checked against the
function's signature (names, annotations, defaults) when the Postprocess is built.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from dsprobe.detections import Detections
from dsprobe.nvinfer.config import Preprocessing
from dsprobe.postprocess.filters import object_filters
from dsprobe.postprocess.params import check_params
from dsprobe.postprocess.registry import (
    STEP_KINDS,
    ObjectBatch,
    PostprocessError,
    Step,
    StepContext,
    batch_variant,
    check_output,
    get_step,
    is_builtin,
    one_line,
)
from dsprobe.postprocess.replay import (
    DecodedRecording,
    decode_recording,
    detections_by_row,
    detections_frame,
    is_classifier,
    run_recording,
    tag_parent,
)
from dsprobe.postprocess.scale import nvinfer_attach, nvinfer_attach_objects, scale_nvinfer
from dsprobe.postprocess.spec import SpecFiles
from dsprobe.postprocess.tunable import TunableParams


class Postprocess(SpecFiles, TunableParams):
    """A postprocess spec plus the resolved step functions.

    * ``steps``: list of :class:`Step` (or dicts), exactly one ``decode`` first.
    * ``labels``: class labels; ``num_classes``: num-detected-classes (0 = unknown).
    * ``geometry``: preprocessing geometry used when the context gives none (embedded from the
      nvinfer config so the spec stands alone in the live probe).
    * ``allow_import``: permit ``"module:function"`` steps (user code) to be imported.
    """

    def __init__(
        self,
        steps: Sequence[Step | Mapping[str, Any]],
        *,
        labels: Sequence[str] = (),
        num_classes: int = 0,
        geometry: Preprocessing | None = None,
        allow_import: bool = False,
        functions: Mapping[str, Callable] | None = None,
    ) -> None:
        self._functions = dict(functions or {})
        self.steps = [self._step(i, s) for i, s in enumerate(steps)]
        self.labels = list(labels)
        self.num_classes = num_classes
        self.geometry = geometry
        self.allow_import = allow_import
        if not self.steps or self.steps[0].kind != "decode":
            raise PostprocessError("a Postprocess starts with exactly one 'decode' step")
        if sum(s.kind == "decode" for s in self.steps) != 1:
            raise PostprocessError("a Postprocess has exactly one 'decode' step")
        self._fns = [self._resolve(i, s) for i, s in enumerate(self.steps)]
        self._user = [not is_builtin(fn) for fn in self._fns]  # user code: outputs checked
        #: where batches run: "cpu", or "cuda" after :meth:`to` (not part of the spec)
        self.device = "cpu"

    def _step(self, i: int, s: Step | Mapping[str, Any]) -> Step:
        """A Step from a Step or dict; a function given as ``name`` is kept in ``functions`` under its
        ``"module:qualname"`` (what the saved spec names)."""
        if isinstance(s, Step):
            kind, name, params = s.kind, s.name, dict(s.params)
        elif isinstance(s, Mapping):
            missing = [k for k in ("kind", "name") if k not in s]
            if missing:
                raise PostprocessError(
                    f"step {i}: missing {' and '.join(repr(k) for k in missing)} in {dict(s)!r}"
                )
            kind, name, params = s["kind"], s["name"], s.get("params") or {}
            if not isinstance(params, Mapping):
                raise PostprocessError(
                    f"step {i} ({kind} {name!r}): params must be a mapping, got {params!r}"
                )
            params = dict(params)
        else:
            raise PostprocessError(
                f"step {i}: expected a Step or a dict with kind/name/params, got {s!r}"
            )
        if callable(name):
            fn, name = name, function_ref(name)
            self._functions[name] = fn
        if not isinstance(name, str):
            raise PostprocessError(
                f"step {i} ({kind}): name must be a registered name, 'module:function' or a "
                f"function, got {name!r}"
            )
        return Step(kind, name, params)

    # ------------------------------------------------------------------ construction
    def _resolve(self, i: int, step: Step) -> Callable:
        if step.kind not in STEP_KINDS:
            raise PostprocessError(
                f"step {i} ({step.name!r}): unknown kind {step.kind!r}; "
                f"expected one of {STEP_KINDS}"
            )
        fn = self._functions.get(step.name)
        if fn is None:
            try:
                fn = get_step(step.kind, step.name, allow_import=self.allow_import)  # type: ignore[arg-type]
            except (
                KeyError,
                PermissionError,
                ImportError,
                AttributeError,
                TypeError,
                ValueError,
            ) as exc:
                raise PostprocessError(f"step {i} ({step.kind} {step.name!r}): {exc}") from None
        try:
            check_params(f"step {i} ({step.kind} {step.name!r})", step.params, fn)
        except ValueError as exc:
            raise PostprocessError(str(exc)) from None
        return fn

    def _copy(self, steps: Sequence[Step], device: str | None = None) -> "Postprocess":
        """The one copy path: these steps with this Postprocess's labels, classes, geometry,
        import permission, resolved user functions and device (or ``device``)."""
        pp = Postprocess(
            steps,
            labels=self.labels,
            num_classes=self.num_classes,
            geometry=self.geometry,
            allow_import=self.allow_import,
            functions=self._functions,
        )
        pp.device = self.device if device is None else device
        return pp

    def _step_copies(self) -> list[Step]:
        return [Step(s.kind, s.name, dict(s.params)) for s in self.steps]

    def with_params(self, kind_or_index: str | int, **params: Any) -> "Postprocess":
        """A copy with ``params`` updated in the first step of ``kind`` (or step number ``index``)."""
        idx = (
            kind_or_index
            if isinstance(kind_or_index, int)
            else next((i for i, s in enumerate(self.steps) if s.kind == kind_or_index), None)
        )
        if idx is None:
            raise PostprocessError(f"no {kind_or_index!r} step in this postprocess")
        steps = self._step_copies()
        steps[idx].params.update(params)
        return self._copy(steps)

    def with_step(self, kind: str, name: str | Callable, **params: Any) -> "Postprocess":
        """A copy whose first ``kind`` step is replaced by ``name`` (registered name, function or
        ``"module:function"``) with ``params``."""
        steps = self._step_copies()
        idx = next((i for i, s in enumerate(steps) if s.kind == kind), None)
        if idx is None:
            raise PostprocessError(f"no {kind!r} step in this postprocess")
        steps[idx] = Step(kind, name, dict(params))  # type: ignore[arg-type]
        return self._copy(steps)

    def to(self, device: str) -> "Postprocess":
        """A copy whose batch paths (:meth:`run_batch`, :meth:`run_recording`,
        :meth:`detections_by_row`, :meth:`decode_recording`) run on ``device``: ``"cpu"`` or
        ``"cuda"`` (CuPy, ``pip install 'dsprobe[gpu]'``; ``docs/gpu.md``). Results are identical.

        When CuPy or a GPU is missing, or a step has no GPU kernel, one
        :class:`~dsprobe.postprocess.gpu.backend.GpuFallbackWarning` says why and the copy stays on
        the CPU (``.device`` tells). The device is not part of the saved spec."""
        from dsprobe.postprocess.gpu.backend import resolve_device

        return self._copy(self._step_copies(), resolve_device(device, self))

    def _gpu_plan(self) -> Any:
        """The GPU plan when this Postprocess is on "cuda" and every step has a GPU kernel, else None."""
        if self.device != "cuda":
            return None
        from dsprobe.postprocess.gpu.backend import gpu_plan

        return gpu_plan(self)

    def step(self, kind: str) -> Step:
        for s in self.steps:
            if s.kind == kind:
                return s
        raise PostprocessError(f"no {kind!r} step in this postprocess")

    # ------------------------------------------------------------------ running
    def context(
        self, frame: Any, crop_rect: tuple[float, float, float, float] | None = None
    ) -> StepContext:
        """StepContext for a FrameRecord / recording FrameView (network size from the frame)."""
        nw, nh = frame.network_size[:2]
        if (not nw or not nh) and self.geometry is not None:
            nw, nh = self.geometry.network_size
        fw, fh = frame.frame_size
        return StepContext(
            network_size=(int(nw), int(nh)),
            frame_size=(int(fw), int(fh)),
            crop_rect=crop_rect or (0.0, 0.0, float(fw), float(fh)),
            num_classes=self.num_classes,
            labels=tuple(self.labels),
            geometry=self.geometry,
        )

    def run(
        self,
        layers: Mapping[str, np.ndarray],
        ctx: StepContext,
        *,
        start: int = 0,
        stop: int | None = None,
        dets: Detections | None = None,
    ) -> Detections:
        """Run steps ``start:stop`` (default all) on ``layers`` (or on ``dets`` when start > 0).

        ``scale:nvinfer`` directly followed by ``filter:objects`` runs as one
        :func:`~dsprobe.postprocess.scale.nvinfer_attach`, nvinfer's own sequence on its float32
        rects: the filters see nvinfer's exact widths and, for an SGIE, crop-relative positions."""
        end = len(self.steps) if stop is None else stop
        i = start
        if i > 0 and dets is None:
            raise PostprocessError(
                f"run(start={start}) needs the Detections of step {start - 1} as dets="
            )
        while i < end:
            s, fn = self.steps[i], self._fns[i]
            fused = fn is scale_nvinfer and i + 1 < end and self._fns[i + 1] is object_filters
            try:
                if s.kind == "decode":
                    dets = fn(layers, ctx, **s.params)
                elif fused:
                    filters = self.steps[i + 1].params
                    dets = nvinfer_attach(dets, ctx, **s.params, filters=filters)  # type: ignore[arg-type]
                else:
                    dets = fn(dets, ctx, **s.params)
            except PostprocessError:
                raise
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise PostprocessError(f"{self._where(i, fused)}: {one_line(exc)}") from exc
            except Exception as exc:  # the user's own code may raise anything: name it, one line
                raise PostprocessError(
                    f"{self._where(i, fused)}: {type(exc).__name__}: {one_line(exc)}"
                ) from exc
            if not isinstance(dets, Detections):
                raise PostprocessError(
                    f"{self._where(i, fused)} returned {type(dets).__name__}, expected Detections"
                )
            if self._user[i]:
                check_output(self._where(i), dets)
            i += 2 if fused else 1
        assert dets is not None
        return dets

    def _where(self, i: int, fused: bool = False) -> str:
        s = self.steps[i]
        return (
            f"steps {i}-{i + 1} ({s.kind} {s.name!r} + filter 'objects')"
            if fused
            else f"step {i} ({s.kind} {s.name!r})"
        )

    def run_batch(
        self,
        layers: Mapping[str, Any],
        contexts: Sequence[StepContext],
        *,
        stop: int | None = None,
    ) -> list[Detections]:
        """One Detections per frame of a batch: ``layers`` maps each layer name to an array with the
        frames on its first axis (numpy, or CuPy on the GPU: e.g. nvinfer's device buffers),
        ``contexts`` one StepContext per frame. Equals ``run({n: a[i] ...}, contexts[i])`` per frame;
        on ``device="cuda"`` the whole batch runs on the GPU."""
        plan = self._gpu_plan()
        if plan is not None:
            from dsprobe.postprocess.gpu.runner import run_batch

            return run_batch(self, plan, layers, contexts, stop)
        host = {n: a.get() if hasattr(a, "get") else a for n, a in layers.items()}  # CuPy -> numpy
        return [
            self.run({n: np.asarray(a[i]) for n, a in host.items()}, ctx, stop=stop)
            for i, ctx in enumerate(contexts)
        ]

    @property
    def batches_objects(self) -> bool:
        """Whether the decode step has an object-batched variant
        (:func:`~dsprobe.postprocess.registry.batch_over_objects`): SGIE replay then decodes a block
        of objects at once (:meth:`run_objects`)."""
        return batch_variant(self._fns[0]) is not None

    def run_objects(
        self,
        layers: Mapping[str, np.ndarray],
        objects: ObjectBatch,
        *,
        stop: int | None = None,
    ) -> tuple[Detections, np.ndarray]:
        """Steps ``[0, stop)`` on N objects of one SGIE: ``layers`` maps each layer name to an array
        with the objects on its first axis, ``objects`` gives the shared context and each object's
        rect. Returns ``(Detections, owner)``: the rows of object ``k`` (``owner == k``) are, in order,
        ``run({n: a[k] ...}, objects.object_context(k), stop=stop)``, bit for bit.

        The decode step and the steps after it that have an object-batched variant
        (:func:`~dsprobe.postprocess.registry.batch_over_objects`; ``scale:nvinfer`` followed by
        ``filter:objects`` runs fused, as in :meth:`run`) run once for the block; from the first step
        without one, the rest runs per object. Without a variant for the decode step (or when a
        variant raises: then a RuntimeWarning tells if the per-object run succeeds) every object runs
        on its own; a failing object raises its per-object PostprocessError."""
        n = len(objects)
        end = len(self.steps) if stop is None else stop
        if n and end > 0 and self.batches_objects:
            try:
                dets, owner, i = self._run_batched(layers, objects, end)
            except Exception as exc:  # run per object: the per-object error, or a warning
                result = self._run_each(layers, objects, stop)
                warnings.warn(
                    f"{self._where(0)}: the object-batched path failed ({type(exc).__name__}: "
                    f"{one_line(exc)}); this block of {n} objects ran per object",
                    RuntimeWarning,
                    stacklevel=2,
                )
                return result
            if i >= end:
                return dets, owner
            bounds = np.searchsorted(owner, np.arange(n + 1))
            parts = [
                self.run(
                    {},
                    objects.object_context(k),
                    start=i,
                    stop=stop,
                    dets=dets[int(bounds[k]) : int(bounds[k + 1])],
                )
                for k in range(n)
            ]
            return self._joined(parts)
        return self._run_each(layers, objects, stop)

    def _run_each(
        self, layers: Mapping[str, np.ndarray], objects: ObjectBatch, stop: int | None
    ) -> tuple[Detections, np.ndarray]:
        parts = [
            self.run(
                {name: a[k] for name, a in layers.items()}, objects.object_context(k), stop=stop
            )
            for k in range(len(objects))
        ]
        return self._joined(parts)

    @staticmethod
    def _joined(parts: list[Detections]) -> tuple[Detections, np.ndarray]:
        owner = np.repeat(np.arange(len(parts)), [len(d) for d in parts])
        return (Detections.concatenate(parts) if parts else Detections.empty()), owner

    def _run_batched(
        self, layers: Mapping[str, np.ndarray], objects: ObjectBatch, end: int
    ) -> tuple[Detections, np.ndarray, int]:
        """The batched steps from the decode on: (dets, owner, index of the first step not run)."""
        fn = batch_variant(self._fns[0])
        assert fn is not None
        dets, owner = self._batch_output(0, fn(layers, objects, **self.steps[0].params), objects)
        i = 1
        while i < end:
            s, fn = self.steps[i], self._fns[i]
            fused = fn is scale_nvinfer and i + 1 < end and self._fns[i + 1] is object_filters
            if fused:
                filters = self.steps[i + 1].params
                out = nvinfer_attach_objects(dets, owner, objects, **s.params, filters=filters)
            else:
                batch = batch_variant(fn)
                if batch is None:
                    break
                out = batch(dets, owner, objects, **s.params)
            dets, owner = self._batch_output(i, out, objects)
            i += 2 if fused else 1
        return dets, owner, i

    def _batch_output(
        self, i: int, out: Any, objects: ObjectBatch
    ) -> tuple[Detections, np.ndarray]:
        """A batched step's ``(Detections, owner)`` checked (and stably sorted by owner)."""
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], Detections)):
            raise PostprocessError(
                f"{self._where(i)}: the object-batched variant returned {type(out).__name__}, "
                "expected (Detections, owner)"
            )
        dets, owner = out
        owner = np.asarray(owner)
        if (
            owner.shape != (len(dets),)
            or owner.dtype.kind not in "iu"
            or (len(owner) and (owner.min() < 0 or owner.max() >= len(objects)))
        ):
            raise PostprocessError(
                f"{self._where(i)}: the object-batched variant's owner must be {len(dets)} object "
                f"indices in 0..{len(objects) - 1}"
            )
        owner = owner.astype(np.int64, copy=False)
        if len(owner) > 1 and (np.diff(owner) < 0).any():
            order = np.argsort(owner, kind="stable")
            dets, owner = dets[order], owner[order]
        if self._user[i]:
            check_output(self._where(i), dets)
        return dets, owner

    def __call__(self, frame: Any) -> Detections:
        """Detections in frame pixels for a recording frame view (``rec[i]``) or a FrameRecord.

        PGIE frames (frame-level layers) run once on the whole frame. SGIE frames (tensors per object)
        run once per object with ``crop_rect = object.rect`` and return one Detections for the frame;
        its ``object_ids`` hold each detection's **parent index**: the position of the parent object
        in ``frame.objects`` (for a recording, that object's order within the frame in
        ``rec.object_table("objects")``). The live probe attaches each result under that parent.
        """
        layers = frame.layers if hasattr(frame, "layers") else frame.tensors
        if layers:
            return self.run(layers, self.context(frame))
        parts = [
            tag_parent(self.run(obj.layers, self.context(frame, tuple(obj.rect))), k)
            for k, obj in enumerate(frame.objects)
            if obj.layers
        ]
        return Detections.concatenate(parts) if parts else Detections.empty("frame")

    def run_recording(
        self,
        rec: Any,
        rows: Iterable[int] | None = None,
        *,
        unique_id: int | None = None,
        progress: bool = False,
        batch: int = 32,
    ) -> Any:
        """Detections for many frames of a Recording as one pandas DataFrame: one row per detection with
        the frame ``row`` (index of ``rec.frames``), ``source_id``, ``frame_num``, ``x1 .. y2`` (frame
        pixels), ``width``, ``height``, ``score``, ``class_id`` (+ ``label``; ``object_id`` = parent
        index for SGIE frames). Default rows: every frame with tensors (of ``unique_id`` if given).
        Per-frame Detections: :meth:`detections_by_row` (same arguments); the DataFrame is built
        once from flat arrays as the blocks run (:class:`~dsprobe.postprocess.replay.DetectionTable`)."""
        if self._gpu_plan() is None:
            return run_recording(
                self, rec, rows, unique_id=unique_id, progress=progress, batch=batch
            )
        per_frame = self.detections_by_row(
            rec, rows, unique_id=unique_id, progress=progress, batch=batch
        )
        return detections_frame(rec, per_frame, self.labels, is_classifier(self))

    def detections_by_row(
        self,
        rec: Any,
        rows: Iterable[int] | None = None,
        *,
        unique_id: int | None = None,
        progress: bool = False,
        batch: int = 32,
        stop: int | None = None,
    ) -> dict[int, Detections]:
        """``{frame row: Detections}`` for a Recording, identical to ``pp(rec[row])`` per row; ``stop``
        runs only steps ``[0, stop)``. Layers are read in blocks (:mod:`dsprobe.postprocess.replay`);
        on ``device="cuda"`` each block runs as one GPU batch (``batch`` frames, at least 256)."""
        if self._gpu_plan() is not None:
            from dsprobe.postprocess.gpu.replay import GPU_BATCH
            from dsprobe.postprocess.gpu.replay import detections_by_row as on_gpu

            return on_gpu(
                self,
                rec,
                rows,
                unique_id=unique_id,
                progress=progress,
                batch=max(batch, GPU_BATCH),
                stop=stop,
            )
        return detections_by_row(
            self, rec, rows, unique_id=unique_id, progress=progress, batch=batch, stop=stop
        )

    def decode_recording(
        self, rec: Any, rows: Iterable[int] | None = None, **kw: Any
    ) -> DecodedRecording:
        """Decode once for many PGIE frames and cache the candidates (network pixels), so thresholds,
        clustering and scaling can be swept cheaply: ``dec.run(pp.with_params(...))`` re-runs only the
        steps after the decoder (:mod:`dsprobe.analysis.search` adds exact cached re-clustering on top)."""
        return decode_recording(self, rec, rows, **kw)

    def __repr__(self) -> str:
        on = "" if self.device == "cpu" else f", device={self.device!r}"
        return "Postprocess(" + " -> ".join(f"{s.kind}:{s.name}" for s in self.steps) + on + ")"


def function_ref(fn: Callable) -> str:
    """``"module:qualname"`` of a function (how a spec names the user's own step)."""
    module, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not module or not qual:
        raise PostprocessError(
            f"cannot name step function {fn!r}: it has no __module__/__qualname__"
        )
    return f"{module}:{qual}"
