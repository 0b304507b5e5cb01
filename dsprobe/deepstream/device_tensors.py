"""EXPERIMENTAL, untested on a real DeepStream device: nvinfer's output layers read from its device
buffers (``out_buf_ptrs_dev``) as CuPy arrays, without a copy, for the GPU postprocess
(``docs/gpu.md``). CuPy is imported only when this is called."""

from __future__ import annotations

from typing import Any

from dsprobe.deepstream.meta import DATA_TYPES, MetaError, layer_dims
from dsprobe.postprocess.gpu.live import device_layers


def read_tensor_meta_device(
    pyds: Any, tensor_meta: Any, names: set[str] | None = None
) -> dict[str, Any]:
    """``{layer name: CuPy array (1, *dims)}`` over nvinfer's device buffers of this frame / object
    (on GPU ``tensor_meta.gpu_id``), ready for ``Postprocess.run_batch``. Views of nvinfer's output
    pool: use them inside the probe only. MetaError for an unknown data type or NULL device buffers
    (nvinferserver attaches host buffers only)."""
    layers = []
    for i in range(int(tensor_meta.num_output_layers)):
        info = tensor_meta.output_layers_info(i)
        code = int(info.dataType)
        dtype = DATA_TYPES.get(code)
        if dtype is None:
            raise MetaError(f"layer {str(info.layerName)!r}: unknown NvDsInferDataType {code}")
        layers.append((str(info.layerName), dtype, layer_dims(info)))
    try:
        return device_layers(
            pyds.get_ptr(tensor_meta.out_buf_ptrs_dev),
            layers,
            device_id=int(getattr(tensor_meta, "gpu_id", 0)),
            names=names,
        )
    except ValueError as exc:
        raise MetaError(f"tensor meta of GIE {tensor_meta.unique_id}: {exc}") from None
