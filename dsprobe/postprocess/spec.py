"""A Postprocess as data (the :class:`SpecFiles` part of
:class:`~dsprobe.postprocess.pipeline.Postprocess`): built from an nvinfer config through the key table,
to / from a JSON-able dict, saved as a spec file, exported as a bundle with the user's code
(:mod:`dsprobe.postprocess.bundle`) and loaded back, with consent for user code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from dsprobe.nvinfer.config import NvinferConfig, Preprocessing
from dsprobe.postprocess.bundle import BundleError, bundle_functions, read_spec, write_bundle
from dsprobe.postprocess.nvinfer_params import steps_from_config
from dsprobe.postprocess.registry import PostprocessError
from dsprobe.postprocess.spec_check import check_spec

SPEC_FORMAT = "dsprobe-postprocess"
SPEC_VERSION = 1


P = TypeVar("P", bound="SpecFiles")  # the Postprocess this is mixed into


class SpecFiles:
    """Spec in and out; mixed into Postprocess (``cls(steps, labels=..., ...)`` builds one)."""

    @classmethod
    def from_nvinfer_config(
        cls: type[P],
        cfg: NvinferConfig,
        decoder: str | Callable = "yolov8",
        decoder_params: Mapping | None = None,
        *,
        deepstream_version: float = 7.1,
        opencv_build: bool = False,
        labels: Sequence[str] | None = None,
        allow_import: bool = False,
        functions: Mapping[str, Callable] | None = None,
        **more_decoder_params: Any,
    ) -> P:
        """The spec equivalent to an nvinfer config, with ``decoder`` (registered name, function or
        ``"module:function"``) in place of nvinfer's parser and ``decoder_params`` /
        ``**more_decoder_params`` as its params:

        ``decode -> filter:threshold`` (pre-cluster-threshold, num-detected-classes) ``-> cluster``
        (cluster-mode 2 ``nms``; 0 ``group_rectangles`` (NMS(0.5, top-20) unless ``opencv_build``);
        4 ``none``; 1/3 ``dbscan`` (approximation)) ``-> scale:nvinfer`` (maintain-aspect-ratio,
        symmetric-padding, ``deepstream_version``) ``-> filter:objects`` (filter-out-class-ids,
        detected-min/max-w/h, roi-top/bottom-offset, crop-objects-to-roi-boundary; only when set).
        Keys and params map through one table (:mod:`dsprobe.postprocess.nvinfer_params`).
        Per-class values become lists indexed by class id (a scalar when all classes agree). The
        config's geometry and labels go into the spec."""
        decode = {
            "kind": "decode",
            "name": decoder,
            "params": {**dict(decoder_params or {}), **more_decoder_params},
        }
        try:
            steps = steps_from_config(
                cfg, decode, deepstream_version=deepstream_version, opencv_build=opencv_build
            )
        except ValueError as exc:
            raise PostprocessError(str(exc)) from None
        return cls(
            steps,
            labels=labels if labels is not None else cfg.labels(),
            num_classes=cfg.num_detected_classes,
            geometry=cfg.preprocessing,
            allow_import=allow_import,
            functions=functions,
        )

    # ------------------------------------------------------------------ spec
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": SPEC_FORMAT,
            "version": SPEC_VERSION,
            "labels": self.labels,
            "num_classes": self.num_classes,
            "geometry": None
            if self.geometry is None
            else {
                "network_width": self.geometry.network_width,
                "network_height": self.geometry.network_height,
                "network_channels": self.geometry.network_channels,
                "maintain_aspect_ratio": self.geometry.maintain_aspect_ratio,
                "symmetric_padding": self.geometry.symmetric_padding,
            },
            "steps": [s.to_dict() for s in self.steps],
        }

    @classmethod
    def from_dict(
        cls: type[P],
        d: Mapping[str, Any],
        *,
        allow_import: bool = False,
        functions: Mapping[str, Callable] | None = None,
    ) -> P:
        fmt = d.get("format") if isinstance(d, Mapping) else type(d).__name__
        if fmt != SPEC_FORMAT:
            raise PostprocessError(f"not a dsprobe postprocess spec (format={fmt!r})")
        check_spec(d)  # shape, sizes and every value's range, naming step and param
        if int(d.get("version", 0)) > SPEC_VERSION:
            raise PostprocessError(
                f"postprocess spec version {d['version']} is newer than this dsprobe "
                f"({SPEC_VERSION}); upgrade dsprobe"
            )
        g = d.get("geometry")
        return cls(
            d["steps"],
            labels=d.get("labels") or (),  # null: no labels (spec_check allows it)
            num_classes=int(d.get("num_classes", 0)),
            geometry=Preprocessing(**g) if g else None,
            allow_import=allow_import,
            functions=functions,
        )

    def save(self, path: str | Path) -> Path:
        """Write the JSON spec (user functions are named ``"module:function"``; to carry their
        source, :meth:`export` a bundle)."""
        p = Path(path)
        p.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return p

    def export(self, directory: str | Path) -> Path:
        """Write a self-contained bundle into ``directory``: ``postprocess.json`` and, when a step is
        your own function, ``user_steps.py`` with its source and the helpers and imports it needs
        (its SHA-256 in the spec). Refuses (:class:`~dsprobe.postprocess.bundle.BundleError`, naming
        the object and why) a lambda, a closure over local variables or an object that is neither
        importable nor a plain constant. Load it with ``Postprocess.load(directory, trust=True)``
        or ``dsprobe.deepstream.attach_postprocess(pgie, directory, trust=True)``."""
        user = {s.name: fn for s, fn, u in zip(self.steps, self._fns, self._user) if u}
        return write_bundle(directory, self.to_dict(), user)

    @classmethod
    def load(
        cls: type[P],
        path: str | Path,
        *,
        allow_import: bool = False,
        functions: Mapping[str, Callable] | None = None,
        trust: bool = False,
    ) -> P:
        """A Postprocess from a spec file or an exported bundle folder. A bundle with user code is
        imported only with ``trust=True`` (your consent to run it) and only if its module's SHA-256
        is the recorded one; without consent nothing runs and the error says how to give it."""
        p, d = read_spec(path)
        try:
            fns = {**bundle_functions(p, d, trust), **dict(functions or {})}
            return cls.from_dict(d, allow_import=allow_import, functions=fns)
        except BundleError:
            raise
        except PostprocessError as exc:
            raise PostprocessError(f"{p}: {exc}") from None
