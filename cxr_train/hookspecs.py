"""Hook specifications of the training side (pluggy project ``cxr``).

Built-in models and augmentations are registered through these same hooks.
"""

from cxr_infer.hookspecs import hookimpl, hookspec

__all__ = ["hookimpl", "hookspec", "register_models", "register_augmentations"]


@hookspec
def register_models(register):
    """Register model architectures.

    Call ``register(name, factory, target_layer, input_size=224)`` where
    ``factory(num_classes: int, pretrained: bool) -> torch.nn.Module`` builds the network
    (input (N, 1, H, W) in [0, 1], output logits (N, K)), and ``target_layer`` is the dotted
    module name whose output Grad-CAM explains (normally the last convolutional block).
    """


@hookspec
def register_augmentations(register):
    """Register training-time augmentations.

    Call ``register(name, factory, params)`` where ``params`` maps each parameter name to its
    default and ``factory(**params)`` returns ``augment(batch, generator) -> batch`` working on a
    float tensor (N, 1, H, W) in [0, 1] and keeping that range.
    """
