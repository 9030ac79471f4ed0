"""Training side of cxr-toolkit: data, models, augmentation, fitting, evaluation and ONNX export."""

from cxr_infer import __version__

__all__ = ["__version__"]
