"""Torch-free chest X-ray inference: ONNX sessions, Grad-CAM from exported outputs, readers, writers."""

__version__ = "0.1.0"
