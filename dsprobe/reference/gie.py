"""The GIEs of a reference recording: :class:`Gie` (one nvinfer element: parsed config, ONNX model,
mean-file), :func:`load_gies` (the primary and secondary GIEs, checked as nvinfer would) and
:func:`detections_to_objects` (a postprocess's detections as the NvDsObjectMeta a probe would see)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dsprobe.nvinfer.config import NvinferConfig, as_nvinfer_config
from dsprobe.records import ObjectRecord
from dsprobe.reference.preprocess import (
    FILTER_NAMES,
    exact_filter,
    load_mean_file,
    preprocess,
    preprocess_source,
)
from dsprobe.reference.runner import ModelError, OnnxModel

GieSpec = Any  # config path / text / NvinferConfig, or (config, model path)


class Gie:
    """One nvinfer element: its parsed config, the ONNX model and the mean-file (if any)."""

    def __init__(
        self,
        config: str | Path | NvinferConfig,
        model: str | Path | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        self.config = as_nvinfer_config(config)
        base = Path(self.config.path).parent if self.config.path else Path(".")
        if model is None:
            if not self.config.onnx_file:
                raise ModelError(
                    f"{self.config.path or 'config'}: no model given and no onnx-file in the config"
                )
            model = base / self.config.onnx_file
        self.model = OnnxModel(model, self.config, providers)
        w, h, _ = self.model.network_size
        pre = self.config.preprocessing
        self.mean = load_mean_file(base / pre.mean_file, w, h) if pre.mean_file else None

    @property
    def unique_id(self) -> int:
        return self.config.gie_unique_id

    @property
    def network_size(self) -> tuple[int, int, int]:
        return self.model.network_size

    def tensor(
        self, frame: np.ndarray, crop_rect: tuple[float, float, float, float] | None = None
    ) -> np.ndarray:
        """The network input nvinfer builds from ``frame`` (muxer size) or a crop of it."""
        w, h, _ = self.network_size
        return preprocess(frame, self.config.preprocessing, crop_rect, (w, h), self.mean)[0]

    def source_tensor(
        self,
        source: np.ndarray,
        muxer: tuple[int, int],
        keep_aspect: bool = False,
        muxer_filter: int = 0,
    ) -> np.ndarray:
        """The network input built from a decoded frame that nvstreammux scales to ``muxer`` first."""
        w, h, _ = self.network_size
        return preprocess_source(
            source,
            muxer,
            self.config.preprocessing,
            keep_aspect=keep_aspect,
            muxer_filter=muxer_filter,
            network_size=(w, h),
            mean=self.mean,
        )[0]

    def infer(self, tensors: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        return self.model(np.stack(tensors)) if tensors else []


def load_gies(
    config: GieSpec,
    model: str | Path | None,
    secondary: Sequence[GieSpec],
    providers: Sequence[str] | None,
) -> tuple[Gie, list[Gie]]:
    """The primary GIE and the secondary ones (process-mode=2, distinct gie-unique-ids); warns where a
    ``scaling-filter`` has no public definition."""
    pgie = Gie(config, model, providers)
    sgies = [Gie(*(s if isinstance(s, tuple) else (s,)), providers=providers) for s in secondary]
    for s in sgies:
        if s.config.process_mode != 2:
            raise ValueError(
                f"{s.config.path or 'secondary config'}: process-mode={s.config.process_mode}; a "
                "secondary GIE needs process-mode=2"
            )
    uids = [pgie.unique_id] + [s.unique_id for s in sgies]
    if len(set(uids)) != len(uids):
        raise ValueError(f"gie-unique-id values {uids} must differ between the GIEs")
    for g in [pgie] + sgies:
        f = g.config.preprocessing.scaling_filter
        if not exact_filter(f):
            warnings.warn(
                f"{g.config.path or 'config'}: scaling-filter={f} ({FILTER_NAMES.get(f, 'unknown')}) "
                "has no public definition; the reference recorder resizes with bilinear instead",
                stacklevel=3,
            )
    return pgie, sgies


def detections_to_objects(dets: Any, unique_id: int, labels: Sequence[str]) -> list[ObjectRecord]:
    """Frame-pixel Detections as the NvDsObjectMeta a live probe would add (rect, class, label)."""
    out = []
    for (x1, y1, x2, y2), s, c in zip(
        dets.boxes.tolist(), dets.scores.tolist(), dets.class_ids.tolist()
    ):
        out.append(
            ObjectRecord(
                rect=(x1, y1, x2 - x1, y2 - y1),
                class_id=int(c),
                confidence=float(s),
                unique_component_id=unique_id,
                label=labels[c] if 0 <= c < len(labels) else str(c),
            )
        )
    return out
