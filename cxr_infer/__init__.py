"""Torch-free chest X-ray inference: ONNX sessions, Grad-CAM from exported outputs, readers, writers."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``from cxr_infer import Classifier`` without importing onnxruntime for every submodule user."""
    if name in ("Classifier", "Prediction"):
        from cxr_infer import api

        return getattr(api, name)
    raise AttributeError(f"module 'cxr_infer' has no attribute {name!r}")
