"""ONNX Runtime session with the checks a DeepStream user needs (input matches the nvinfer config)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from dsprobe.nvinfer_config import Preprocessing

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
               "tensor(int8)": np.int8, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
               "tensor(double)": np.float64}


class ModelError(ValueError):
    """The model does not fit the nvinfer config; the message names the file and what was expected."""


class OnnxModel:
    """One-input ONNX model run by ONNX Runtime (CUDA provider when present, else CPU)."""

    def __init__(self, path: str | Path, pre: Preprocessing, providers: Sequence[str] | None = None,
                 threads: int = 0) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover
            raise ImportError("the reference recorder runs models with ONNX Runtime: pip install 'dsprobe[onnx]'") from exc
        self.path = Path(path)
        if not self.path.exists():
            raise ModelError(f"{self.path}: model file not found")
        avail = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=list(providers))
        except Exception as exc:
            raise ModelError(f"{self.path}: ONNX Runtime cannot load the model ({exc})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{self.path}: expected one input, the model has {[i.name for i in inputs]}")
        self.input = inputs[0]
        self.input_dtype = _ORT_DTYPES.get(self.input.type, np.float32)
        self.output_names = [o.name for o in self.session.get_outputs()]
        shape = list(self.input.shape)
        if len(shape) != 4:
            raise ModelError(f"{self.path}: input {self.input.name!r} has shape {shape}, expected 4-D (batch, ...)")
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        if pre.network_input_order == 1:
            h, w, c = shape[1:]
        else:
            c, h, w = shape[1:]
        want = (pre.network_channels, pre.network_height, pre.network_width)
        got = (c, h, w)
        if pre.network_width and any(isinstance(g, int) and g != x for g, x in zip(got, want)):
            raise ModelError(f"{self.path}: input {self.input.name!r} is {'NHWC' if pre.network_input_order else 'NCHW'}"
                             f" {shape}, but the nvinfer config says infer-dims={want[0]};{want[1]};{want[2]}")
        self.network_size = (int(w) if isinstance(w, int) else pre.network_width,
                             int(h) if isinstance(h, int) else pre.network_height,
                             int(c) if isinstance(c, int) else pre.network_channels)

    def __call__(self, batch: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Run a (B, ...) float32 batch; returns one ``{layer: array without batch axis}`` per item."""
        x = batch.astype(self.input_dtype, copy=False)
        if self.fixed_batch is not None and self.fixed_batch != len(x):
            per = [self.session.run(None, {self.input.name: x[i:i + 1]}) for i in range(len(x))]
            return [{n: np.ascontiguousarray(o[0]) for n, o in zip(self.output_names, outs)} for outs in per]
        outs = self.session.run(None, {self.input.name: x})
        return [{n: np.ascontiguousarray(o[i]) for n, o in zip(self.output_names, outs)} for i in range(len(x))]
