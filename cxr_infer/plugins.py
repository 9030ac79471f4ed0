"""The plugin manager shared by both packages (pluggy project and entry-point group ``cxr``).

Built-in features are plugins too: they are registered here, through the same hooks as
third-party packages, so the product itself exercises the hook API.

``CXR_PLUGINS`` restricts which third-party plugins load: unset loads all installed ones, a
comma-separated list loads only those entry-point names, and an empty string loads none.
Built-in plugins always load.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from dataclasses import dataclass
from typing import Any, TypeVar

import pluggy

from cxr_infer import __version__, hookspecs

PROJECT = "cxr"
ALLOW_ENV = "CXR_PLUGINS"
BUILTIN_PLUGINS = ("cxr_infer.readers", "cxr_infer.writers")

T = TypeVar("T")
_lock = threading.Lock()
_pm: pluggy.PluginManager | None = None


class PluginError(RuntimeError):
    """A plugin's hook raised; the message names the plugin so the user knows whom to blame."""

    def __init__(self, plugin: str, hook: str, error: BaseException, hint: str = ""):
        message = f"plugin {plugin!r} failed in hook {hook}: {type(error).__name__}: {error}"
        super().__init__(f"{message} ({hint})" if hint else message)
        self.plugin = plugin
        self.hook = hook
        self.error = error


def _allowed() -> set[str] | None:
    value = os.environ.get(ALLOW_ENV)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    allowed = _allowed()
    for ep in entry_points(group=PROJECT):
        if allowed is not None and ep.name not in allowed:
            continue
        if pm.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
        except Exception as error:  # a broken install must name itself, not crash obscurely
            raise PluginError(ep.name, "load", error, hint=f"{ALLOW_ENV} can leave it out") from error
        pm.register(plugin, name=ep.name)


def register_builtins(pm: pluggy.PluginManager, modules: Iterable[str]) -> None:
    """Register built-in plugin modules by import path (idempotent)."""
    for module_name in modules:
        if pm.get_plugin(module_name) is None:
            pm.register(importlib.import_module(module_name), name=module_name)


def get_plugin_manager() -> pluggy.PluginManager:
    """Return the process-wide plugin manager with built-ins and allowed entry points loaded."""
    global _pm
    with _lock:
        if _pm is None:
            pm = pluggy.PluginManager(PROJECT)
            pm.add_hookspecs(hookspecs)
            register_builtins(pm, BUILTIN_PLUGINS)
            _load_entry_points(pm)
            _pm = pm
        return _pm


def reset_plugin_manager() -> None:
    """Forget the manager so the next call re-reads ``CXR_PLUGINS`` and entry points (tests)."""
    global _pm
    with _lock:
        _pm = None


@dataclass(frozen=True)
class Registration:
    """One ``register(...)`` call made by a plugin inside a registration hook."""

    plugin: str
    args: tuple
    kwargs: dict


def _call(impl: pluggy.HookImpl, hook_name: str, **kwargs: Any) -> Any:
    """Call one plugin's implementation on its own, so an exception names the plugin that raised.

    pluggy lets an implementation accept fewer arguments than its spec; pass only those it names.
    """
    try:
        return impl.function(**{name: kwargs[name] for name in impl.argnames})
    except Exception as error:
        raise PluginError(impl.plugin_name, hook_name, error) from error


def _implementations(pm: pluggy.PluginManager, hook_name: str) -> list[pluggy.HookImpl]:
    """Implementations in registration order: built-ins first, then installed plugins."""
    return list(reversed(getattr(pm.hook, hook_name).get_hookimpls()))


def collect(pm: pluggy.PluginManager, hook_name: str) -> list[Registration]:
    """Call one registration hook of every plugin and return what each registered, in order.

    Built-ins come first, so a later plugin registering the same name overrides a built-in.
    """
    records: list[Registration] = []
    for impl in _implementations(pm, hook_name):

        def register(*args: Any, _plugin: str = impl.plugin_name, **kwargs: Any) -> None:
            records.append(Registration(_plugin, args, kwargs))

        _call(impl, hook_name, register=register)
    return records


def process_result(pm: pluggy.PluginManager, result: dict[str, Any]) -> None:
    """Let every ``process_result`` plugin see (and modify) one result row, in registration order.

    Raises :class:`PluginError` naming the first plugin that raised; the caller turns that into
    the row's error so one bad row never stops the batch.
    """
    for impl in _implementations(pm, "process_result"):
        _call(impl, "process_result", result=result)


def build_registry(records: Iterable[Registration], hook_name: str, make: Callable[..., T]) -> dict[str, T]:
    """Turn registrations into ``{name: make(*args, plugin=..., **kwargs)}``.

    A registration with the wrong arguments is the plugin's bug, so it is reported by name.
    """
    registry: dict[str, T] = {}
    for record in records:
        try:
            item = make(*record.args, plugin=record.plugin, **record.kwargs)
        except TypeError as error:
            raise PluginError(record.plugin, hook_name, error) from error
        registry[item.name] = item
    return registry


def describe_plugins(pm: pluggy.PluginManager) -> list[dict[str, Any]]:
    """Name, distribution, version and implemented hooks of every loaded plugin (``plugins`` commands).

    Built-ins report the toolkit's own distribution and version; installed plugins those of the
    package that declared the entry point, so a bug report can name the exact release.
    """
    dists = {ep.name: ep.dist for ep in entry_points(group=PROJECT)}
    rows = []
    for name, plugin in sorted(pm.list_name_plugin(), key=lambda item: item[0]):
        builtin = name.startswith(("cxr_infer.", "cxr_train."))
        dist = dists.get(name)
        if builtin:
            package, version = "cxr-toolkit", __version__
        else:
            package, version = (dist.name, dist.version) if dist is not None else (None, None)
        hooks = sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])
        rows.append({"name": name, "package": package, "version": version, "builtin": builtin, "hooks": hooks})
    return rows
