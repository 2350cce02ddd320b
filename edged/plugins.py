"""Plugin manager: heads from the `edged` entry-point group and an optional plugins folder."""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Optional

import pluggy

from . import hookspecs
from .heads import Head, HeadError

log = logging.getLogger(__name__)


def plugin_manager(plugins_dir: Optional[str] = None, extra: tuple = ()) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.load_setuptools_entrypoints(hookspecs.PROJECT)
    if plugins_dir:
        folder = Path(plugins_dir)
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
    """Head plugin module -> where it came from (distribution or file)."""
    out = {}
    for plugin, dist in pm.list_plugin_distinfo():
        out[getattr(plugin, "__name__", str(plugin))] = f"{dist.project_name} {dist.version}"
    for name, plugin in pm.list_name_plugin():
        mod = getattr(plugin, "__name__", name)
        out.setdefault(mod, getattr(plugin, "__file__", "registered in process"))
    return out
