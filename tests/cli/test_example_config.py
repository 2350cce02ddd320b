"""The example config installed to /etc/edged says what the code does: every value it sets is the default, but the
few it sets on purpose (issue 33, 13: it said hop_s = 0.25 where the code and README say 0.125)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from edged.config import load_config
from edged.heads.options import head_options
from edged.heads.registry import head_classes, plugin_manager
from edged.state.backbones import cut_layer

EXAMPLE = Path(__file__).resolve().parents[2] / "edged" / "cli" / "systemd" / "edged.example.toml"
ON_PURPOSE = {"device", "state_dir", "source.uri", "serve.max_fps"}  # a device's own, and a Pi's frame-rate cap


def _leaves(table: dict, path: str = ""):
    for key, value in table.items():
        where = f"{path}.{key}" if path else key
        if isinstance(value, dict):
            yield from _leaves(value, where)
        else:
            yield where, value


def test_every_value_in_the_example_config_is_the_default():
    example = tomllib.loads(EXAMPLE.read_text())
    defaults = load_config(None, []).model_dump()
    classes = head_classes(plugin_manager())
    cfg = load_config(None, [])
    checked = 0
    for where, value in _leaves(example):
        if where in ON_PURPOSE:
            continue
        parts = where.split(".")
        if parts[0] == "heads" and len(parts) == 3:
            default = getattr(head_options(cfg.heads, classes[parts[1]]), parts[2])
        elif where == "backbone.cut_layer":
            default = cut_layer(cfg.backbone)
        else:
            default = defaults
            for part in parts:
                default = default[part]
        assert value == default, f"{where} = {value!r} in the example config; the default is {default!r}"
        checked += 1
    assert checked > 60
