"""Analysis: score replayed detections against ground truth, search settings, compare recordings,
export a Postprocess as nvinfer config keys. Needs the core (numpy, pandas, h5py); pycocotools for mAP."""
