"""Reference recorder: video files + ONNX Runtime with nvinfer's preprocessing, no DeepStream needed."""
