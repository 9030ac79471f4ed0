"""Training-side view of the shared plugin manager: adds model and augmentation hooks."""

from __future__ import annotations

import pluggy

from cxr_infer import plugins as infer_plugins
from cxr_train import hookspecs

BUILTIN_PLUGINS = ("cxr_train.models", "cxr_train.augment")


def get_plugin_manager() -> pluggy.PluginManager:
    """The shared manager, with the training hookspecs and built-in models/augmentations added."""
    pm = infer_plugins.get_plugin_manager()
    caller = getattr(pm.hook, "register_models", None)
    if caller is None or caller.spec is None:  # a plugin's impl may have created it unspecified
        pm.add_hookspecs(hookspecs)
    infer_plugins.register_builtins(pm, BUILTIN_PLUGINS)
    return pm
