"""The model artifact: feature map, calibration, metrics, the typed manifest, the ONNX
runtime that scores a manifest and the read side of the registry. Ground floor."""
