"""Bundled models (ONNX files and their model cards), installed as ``cxr_infer.exported``."""
