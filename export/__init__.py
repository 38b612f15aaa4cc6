"""Model export for alosmap (``alosmap.export``): ONNX and TensorRT."""
