"""ONNX Runtime session with the checks a DeepStream user needs: the model's input must match the
nvinfer config (infer-dims, network-input-order) and its outputs must include output-blob-names."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dsprobe.nvinfer.config import NvinferConfig

_ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(double)": np.float64,
}


class ModelError(ValueError):
    """The model does not fit the nvinfer config; the message names the file and what was expected."""


def _ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - environment dependent
        raise ImportError(
            "the reference recorder runs models with ONNX Runtime: pip install 'dsprobe[onnx]'"
        ) from exc
    return ort


def default_providers() -> list[str]:
    """CUDA when this ONNX Runtime build has it, then CPU."""
    avail = _ort().get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in avail]


class OnnxModel:
    """A one-input ONNX model run by ONNX Runtime, checked against an nvinfer config.

    * ``network_size``: (width, height, channels) of the network input, from the model (or the
      config's infer-dims where the model leaves them symbolic).
    * ``max_batch``: the model's fixed batch size, or None when the batch axis is dynamic.
    * ``output_names``: every output layer, in the model's order.
    """

    def __init__(
        self,
        path: str | Path,
        config: NvinferConfig,
        providers: Sequence[str] | None = None,
        threads: int = 0,
        spin: bool = False,
    ) -> None:
        ort = _ort()
        self.path = Path(path)
        if not self.path.exists():
            raise ModelError(f"{self.path}: model file not found")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        # ORT's worker threads busy-wait between runs by default; the recorder decodes and the Recorder
        # encodes images on the same cores between runs, so waiting threads must sleep instead
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.providers = list(providers) if providers is not None else default_providers()
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=opts, providers=self.providers
            )
        except Exception as exc:
            raise ModelError(f"{self.path}: ONNX Runtime cannot load the model ({exc})") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(
                f"{self.path}: expected one input (nvinfer feeds one image tensor), the model has "
                f"{[i.name for i in inputs]}"
            )
        self.input = inputs[0]
        self.input_dtype = _ORT_DTYPES.get(self.input.type)
        if self.input_dtype is None:
            raise ModelError(
                f"{self.path}: input {self.input.name!r} has type {self.input.type}; expected a float "
                "or integer tensor"
            )
        self.output_names = [o.name for o in self.session.get_outputs()]
        missing = [n for n in config.output_blob_names if n not in self.output_names]
        if missing:
            raise ModelError(
                f"{self.path}: output-blob-names {missing} of {config.path or 'the config'} are not "
                f"outputs of the model; its outputs are {self.output_names}"
            )
        self.network_size, self.max_batch = self._check_input(config)

    def _check_input(self, config: NvinferConfig) -> tuple[tuple[int, int, int], int | None]:
        pre = config.preprocessing
        shape = list(self.input.shape)
        order = "NHWC" if pre.network_input_order == 1 else "NCHW"
        if len(shape) != 4:
            raise ModelError(
                f"{self.path}: input {self.input.name!r} has shape {shape}; nvinfer needs a 4-D "
                f"{order} image tensor (batch first)"
            )
        h, w, c = shape[1:] if pre.network_input_order == 1 else (shape[2], shape[3], shape[1])
        got = (c, h, w)
        want = (pre.network_channels, pre.network_height, pre.network_width)
        if pre.network_width and any(isinstance(g, int) and g != x for g, x in zip(got, want)):
            raise ModelError(
                f"{self.path}: input {self.input.name!r} is {order} {shape}, but "
                f"{config.path or 'the config'} says infer-dims={want[0]};{want[1]};{want[2]}"
                f" (c;h;w{', network-input-order=1' if pre.network_input_order == 1 else ''})"
            )
        size = tuple(int(g) if isinstance(g, int) else x for g, x in zip(got, want))
        if not all(size):
            raise ModelError(
                f"{self.path}: input {self.input.name!r} has symbolic dims {shape}; set infer-dims "
                f"(c;h;w) in {config.path or 'the config'}"
            )
        want_c = 1 if pre.model_color_format == 2 else 3
        if size[0] != want_c:
            raise ModelError(
                f"{self.path}: input {self.input.name!r} has {size[0]} channels but model-color-format="
                f"{pre.model_color_format} feeds {want_c}"
            )
        batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        return (size[2], size[1], size[0]), batch

    def __call__(self, batch: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Run a ``(B, ...)`` float32 batch; one ``{layer: array without batch axis}`` per item, each
        array with the model's own output dtype."""
        x = batch.astype(self.input_dtype, copy=False)
        step = self.max_batch or len(x)
        out: list[dict[str, np.ndarray]] = []
        for i in range(0, len(x), step):
            chunk = x[i : i + step]
            n = len(chunk)
            if (
                self.max_batch and n < self.max_batch
            ):  # fixed-batch engine: pad the last chunk like nvinfer
                chunk = np.concatenate(
                    [chunk, np.zeros((self.max_batch - n, *chunk.shape[1:]), chunk.dtype)]
                )
            outs = self.session.run(None, {self.input.name: chunk})
            for k in range(n):
                out.append({name: np.array(o[k]) for name, o in zip(self.output_names, outs)})
        return out

    def __repr__(self) -> str:
        w, h, c = self.network_size
        return f"OnnxModel({self.path.name}, input {self.input.name} {w}x{h}x{c}, outputs {self.output_names})"
