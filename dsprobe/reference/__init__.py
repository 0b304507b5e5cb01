"""Reference recorder: video files + ONNX Runtime with nvinfer's preprocessing, no DeepStream needed.

* :func:`dsprobe.reference.recorder.record_onnx` (``dsprobe record-onnx``): record videos through a
  PGIE (and optional SGIEs) into the probe's recording format.
* ``preprocess``: nvinfer's crop / letterbox / resize / normalisation in numpy; ``video``: PyAV
  decoding interleaved like nvstreammux; ``runner``: the ONNX Runtime session checked against the
  config; ``sgie``: which objects a secondary GIE infers on.

onnxruntime, PyAV, Pillow and tqdm are imported only when used (``pip install 'dsprobe[onnx]'``).
See docs/reference-recorder.md.
"""
