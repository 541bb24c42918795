"""The ONNX model store and runtime, and shadow execution."""
