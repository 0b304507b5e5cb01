"""``attach_postprocess``: run a tuned Postprocess in the pipeline and add its output as metadata.

For each frame (PGIE tensor meta) or object (SGIE tensor meta) of the chosen GIE, the SAME
:class:`dsprobe.Postprocess` the notebook used turns the copied tensors into frame-pixel results,
which are added from the meta pools (see :mod:`dsprobe.deepstream.addmeta` for the fields):

* ``output="objects"`` (detectors): NvDsObjectMeta per detection (the parent object for SGIE
  detections), ``unique_component_id`` for a downstream SGIE's ``operate-on-gie-id``, and
  ``frame_meta.bInferDone = True`` on every frame the GIE's tensors were processed (as nvinfer, the
  Python ssd-parser sample and every C detector do; nvtracker reads it). Optional keypoints as
  display-meta circles, and per-object vectors (embeddings) as user meta.
* ``output="classifier"`` (SGIE classifiers): one NvDsClassifierMeta with an NvDsLabelInfo per
  attribute on the object the SGIE ran on, as nvinfer's own classifier output; read it downstream
  from ``obj_meta.classifier_meta_list`` like any SGIE classification.
* ``output="embedding"`` (SGIE embedding / re-id heads): the vector of each object (decode
  ``embedding``) as user meta on the object the SGIE ran on (``{int32 dim; float32 v[dim]}``,
  :func:`read_vector_user_meta`), see docs/secondary-models.md.

The tensors are copied and the postprocess runs before the batch-meta lock is taken; the lock is
held only while metas are added.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable

from dsprobe.deepstream.addmeta import (
    ObjectStyle,
    VectorUserMeta,
    add_classifier_meta,
    add_object,
    classifier_results,
    draw_circles,
)
from dsprobe.deepstream.base import PadProbe, ProbeHandle, ProbeStats, attach
from dsprobe.deepstream.meta import network_size, object_metas, read_tensor_meta, rect_of
from dsprobe.deepstream.sizes import FrameSizes
from dsprobe.deepstream.tensors import TensorMetaReader
from dsprobe.detections import Detections

OUTPUTS = ("objects", "classifier", "embedding")


@dataclass(frozen=True)
class PostprocessProbeOptions:
    """Options of :func:`attach_postprocess` (all optional).

    * ``unique_id``: gie-unique-id whose tensors to use. None: the first GIE whose tensor meta the
      probe sees (logged); pass it whenever several GIEs attach tensor meta.
    * ``output``: ``"objects"`` (NvDsObjectMeta per detection), ``"classifier"``
      (NvDsClassifierMeta on the object an SGIE classifier ran on) or ``"embedding"`` (the vector as
      user meta on the object an SGIE embedding head ran on).
    * ``component_id``: ``unique_component_id`` of what is added (default: the GIE's id, which is
      what a downstream SGIE's ``operate-on-gie-id`` names).
    * ``muxer_size``: (width, height) of the nvstreammux output; found from the pipeline when None.
    * ``labels``: class labels (default: the postprocess's); for ``"classifier"`` one line per
      attribute with classes separated by ``;`` (nvinfer's classifier label file).
    * ``style``: :class:`ObjectStyle` (border, font, text background; ``draw=False`` hides them).
    * ``keypoints``: draw keypoints (confidence > 0.5) as circles.
    * ``vectors``: attach each detection's vector as user meta (takes pyds' single process-wide
      user-meta callback slot; see :class:`dsprobe.deepstream.addmeta.VectorUserMeta`).
    """

    unique_id: int | None = None
    output: str = "objects"
    component_id: int | None = None
    muxer_size: tuple[int, int] | None = None
    labels: tuple[str, ...] | None = None
    style: ObjectStyle = ObjectStyle()
    keypoints: bool = False
    vectors: bool = False

    def __post_init__(self) -> None:
        if self.output not in OUTPUTS:
            raise ValueError(
                f"attach_postprocess: output={self.output!r}; expected one of {OUTPUTS}"
            )
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))


def postprocess_options(
    options: PostprocessProbeOptions | None, overrides: dict
) -> PostprocessProbeOptions:
    """``options`` with keyword ``overrides`` applied (``draw=False`` is ``style.draw``)."""
    opts = options or PostprocessProbeOptions()
    if "draw" in overrides:
        overrides = dict(overrides)
        overrides["style"] = dataclasses.replace(
            overrides.get("style", opts.style), draw=bool(overrides.pop("draw"))
        )
    return dataclasses.replace(opts, **overrides) if overrides else opts


class _Frame:
    """What Postprocess.context needs for one frame (network size from the tensor meta)."""

    def __init__(self, net: tuple[int, int, int], frame_size: tuple[int, int]) -> None:
        self.network_size = net
        self.frame_size = frame_size


class PostprocessProbe(PadProbe):
    """The live postprocess pad-probe callback (testable without GStreamer)."""

    def __init__(
        self,
        postprocess: Any,
        options: PostprocessProbeOptions | None = None,
        *,
        trust: bool = False,
        **kw,
    ) -> None:
        if not hasattr(postprocess, "run"):  # a spec file or an exported bundle folder
            from dsprobe.postprocess import Postprocess

            postprocess = Postprocess.load(postprocess, trust=trust)
        self.pp = postprocess
        self.options = opts = postprocess_options(options, kw)
        self.unique_id = opts.unique_id
        self.labels = list(opts.labels) if opts.labels is not None else list(postprocess.labels)
        self.stats = ProbeStats()
        self.sizes = FrameSizes(opts.muxer_size, self.stats)
        self.tensors = TensorMetaReader(self.stats)
        self.objects_added = 0
        self.classifier_metas_added = 0
        self.vectors_added = 0
        self._vectors: VectorUserMeta | None = None

    def _batch_meta(self, pyds: Any, buf_hash: int, batch_meta: Any) -> None:
        """Postprocess every frame first (no lock), then add the metas under the meta lock."""
        work = []
        for fm in self.frames(pyds, batch_meta):
            try:
                work.append((fm, self._compute(pyds, batch_meta, fm)))
            except Exception as exc:
                self.stats.error(f"frame:{type(exc).__name__}", exc)
        if not any(items for _, items in work):
            return
        pyds.nvds_acquire_meta_lock(batch_meta)
        try:
            for fm, items in work:
                try:
                    self._add(pyds, batch_meta, fm, items)
                except Exception as exc:
                    self.stats.error(f"frame:{type(exc).__name__}", exc)
        finally:
            pyds.nvds_release_meta_lock(batch_meta)

    def _compute(self, pyds: Any, batch_meta: Any, fm: Any) -> list:
        """[(parent object or None, gie id, Detections, frame size)] for the chosen GIE's tensor
        metas of ``fm``."""
        size = self.sizes.frame_size(fm)
        items = []
        for tm in self._metas(pyds, batch_meta, fm.frame_user_meta_list):
            ctx = self.pp.context(_Frame(network_size(tm), size))
            items.append((None, int(tm.unique_id), self._run(pyds, tm, ctx), size))
        for om in list(object_metas(pyds, fm)):
            for tm in self._metas(pyds, batch_meta, om.obj_user_meta_list):
                ctx = self.pp.context(_Frame(network_size(tm), size), crop_rect=rect_of(om))
                items.append((om, int(tm.unique_id), self._run(pyds, tm, ctx), size))
        return items

    def _metas(self, pyds: Any, batch_meta: Any, user_meta_list: Any) -> Iterable[Any]:
        for tm in self.tensors.metas(pyds, batch_meta, user_meta_list):
            if self.unique_id is None:
                self.unique_id = int(tm.unique_id)
                self.stats.warn_once(
                    "unique-id-default",
                    f"attach_postprocess without unique_id: using gie-unique-id {self.unique_id}, "
                    "the first GIE seen; pass unique_id= to choose",
                )
            if int(tm.unique_id) == self.unique_id:
                self.stats.tensor_metas += 1
                yield tm

    def _run(self, pyds: Any, tm: Any, ctx: Any) -> Detections:
        return self.pp.run(read_tensor_meta(pyds, tm, check=self.tensors.check), ctx)

    def _add(self, pyds: Any, batch_meta: Any, fm: Any, items: list) -> None:
        opts = self.options
        for parent, gie_id, dets, size in items:
            comp = opts.component_id if opts.component_id is not None else gie_id
            if opts.output != "objects" and parent is None:
                raise ValueError(
                    f'output="{opts.output}" needs SGIE tensor meta (per object); got frame-level '
                    f"tensor meta of gie-unique-id {gie_id}"
                )
            if opts.output == "embedding":
                self._attach_vectors(pyds, batch_meta, parent, dets)
                continue
            if opts.output == "classifier":
                results = classifier_results(dets, self.labels)
                if add_classifier_meta(pyds, batch_meta, parent, results, component_id=comp):
                    self.classifier_metas_added += 1
                continue
            self._add_objects(pyds, batch_meta, fm, dets, parent, comp, size)
            fm.bInferDone = True  # a detector ran on this frame (also with 0 detections)

    def _attach_vectors(self, pyds: Any, batch_meta: Any, obj_meta: Any, dets: Detections) -> None:
        """Each row's vector (an embedding postprocess gives one) as user meta on ``obj_meta``."""
        if dets.vectors is None:
            return
        if self._vectors is None:
            self._vectors = VectorUserMeta(pyds, self.stats.error)
        for v in dets.vectors:
            self._vectors.attach(batch_meta, obj_meta, v)
            self.vectors_added += 1

    def _add_objects(self, pyds, batch_meta, fm, dets, parent, comp, size) -> None:
        opts = self.options
        circles = []
        for i in range(len(dets)):
            x1, y1, x2, y2 = (float(v) for v in dets.boxes[i])
            c = int(dets.class_ids[i])
            label = self.labels[c] if 0 <= c < len(self.labels) else str(c)
            om = add_object(
                pyds,
                batch_meta,
                fm,
                (x1, y1, x2 - x1, y2 - y1),
                c,
                float(dets.scores[i]),
                label,
                component_id=comp,
                parent=parent,
                style=opts.style,
            )
            self.objects_added += 1
            if opts.vectors and dets.vectors is not None:
                if self._vectors is None:
                    self._vectors = VectorUserMeta(pyds, self.stats.error)
                self._vectors.attach(batch_meta, om, dets.vectors[i])
            if opts.keypoints and dets.keypoints is not None:
                circles += [(float(x), float(y)) for x, y, v in dets.keypoints[i] if v > 0.5]
        if circles:
            draw_circles(pyds, batch_meta, fm, circles, size)


def attach_postprocess(
    target: Any,
    postprocess: Any,
    options: PostprocessProbeOptions | None = None,
    *,
    trust: bool = False,
    **overrides: Any,
) -> ProbeHandle:
    """Run ``postprocess`` (a Postprocess, a spec path or an exported bundle folder) on the tensor
    meta upstream of ``target``. A bundle holding your own functions (``pp.export("tuned/")``) is
    imported only with ``trust=True``, and only if its module is unchanged since the export
    (SHA-256 in its spec); without consent it raises before anything runs.

    ``target``: the nvinfer element (probe on its src pad; put it upstream of the tracker and of any
    SGIE that should see the objects) or a Gst.Pad. ``options``: a :class:`PostprocessProbeOptions`, or
    its fields as keywords (``unique_id``, ``output``, ``component_id``, ``muxer_size``, ``labels``,
    ``style``, ``draw``, ``keypoints``, ``vectors``). ``muxer_size`` is read from the pipeline's
    nvstreammux when not given. Call ``pyds.unset_callback_funcs()`` before exit when
    ``vectors=True`` (pyds requirement).

    Classifier SGIE, e.g. a tuned ``decode classifier`` postprocess on an SGIE with
    ``network-type=100``, ``output-tensor-meta=1``, ``classifier-async-mode=0``::

        attach_postprocess(sgie, "tuned_classifier.json", unique_id=2, output="classifier")
    """
    from dsprobe.deepstream.attach_checks import check_postprocess_attach

    probe = PostprocessProbe(postprocess, postprocess_options(options, overrides), trust=trust)
    check_postprocess_attach(probe, target)
    return attach(target, probe)
