"""Plugin manager: the built-in heads, the `edged` entry-point group, and an optional plugins folder."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Optional

import pluggy

from ..errors import HeadError
from . import hookspecs
from .base import Head

log = logging.getLogger(__name__)

# Registered explicitly, exactly as a third-party plugin module is; other heads come from the
# `edged` entry-point group or `plugins_dir`.
DEFAULT_PLUGINS = {
    "knn": "edged_plugins.knn",
    "classifier": "edged_plugins.classifier",
    "boxes": "edged_plugins.boxes",
    "objects": "edged_plugins.objects",
}


def _load_folder(pm: pluggy.PluginManager, folder: Path) -> None:
    if not folder.is_dir():
        raise HeadError(f"plugins_dir: not a folder: {folder}")
    for path in sorted(folder.glob("*.py")):
        name = f"edged_local_plugins.{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            raise HeadError(f"plugin {path}: {type(e).__name__}: {e}") from e
        pm.register(module, name=name)


def plugin_manager(plugins_dir: Optional[str] = None, extra: tuple = ()) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name, module in DEFAULT_PLUGINS.items():
        pm.register(importlib.import_module(module), name=name)
    pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    if plugins_dir:
        _load_folder(pm, Path(plugins_dir))
    for plugin in extra:
        pm.register(plugin)
    pm.check_pending()
    return pm


def head_classes(pm: pluggy.PluginManager) -> dict[str, type[Head]]:
    found: dict[str, type[Head]] = {}

    def register(cls) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Head)) or not cls.name:
            raise HeadError(f"register_heads got {cls!r}: expected a Head subclass with a name")
        if cls.name in found and found[cls.name] is not cls:
            raise HeadError(f"two plugins register a head named {cls.name!r}")
        found[cls.name] = cls

    pm.hook.register_heads(register=register)
    return found


def plugin_sources(pm: pluggy.PluginManager) -> dict[str, str]:
    """Head plugin module -> where it came from (built in, a distribution, or a file)."""
    out = {module: "built in" for module in DEFAULT_PLUGINS.values()}
    for plugin, dist in pm.list_plugin_distinfo():
        out.setdefault(getattr(plugin, "__name__", str(plugin)), f"{dist.project_name} {dist.version}")
    for name, plugin in pm.list_name_plugin():
        mod = getattr(plugin, "__name__", name)
        out.setdefault(mod, getattr(plugin, "__file__", "registered in process"))
    return out
