"""DenseNet-121 for cxr-toolkit: ``cxr-train fit --model densenet121``.

This module only registers the architecture; the network lives in :mod:`cxr_densenet.network`
and is imported only when the training side asks for models, because ``cxr-infer`` loads every
plugin of group ``cxr`` and must never import torch or the training package.
"""

from cxr_infer.hookspecs import hookimpl


@hookimpl
def register_models(register):
    from cxr_densenet.network import densenet121

    register("densenet121", densenet121, target_layer="features", input_size=224)
