"""The serving stack without a camera, MQTT or a frame loop: store, backbone, heads (and learning).

The daemon, the CLI's offline commands (predict, train, export) and the benches build it the same way.
"""

from __future__ import annotations

from typing import Callable, Optional

from ..config import Config
from ..heads.registry import head_classes, plugin_manager
from ..state.layout import StateLayout
from ..state.store import Store
from .backbone import open_backbone, reembed_missing, resolve
from .choice import chosen
from .headset import HeadSet
from .learning import Learning, RemoteJobs


class ServingStack:
    def __init__(self, cfg: Config, reembed_progress: Optional[Callable[[int, int], None]] = None,
                 choice_progress: Optional[Callable[[str], None]] = None,
                 fleet: Callable[[], dict[str, dict]] = lambda: {},
                 fleet_backbones: Callable[[dict], dict[str, str]] = lambda wanted: {}):
        # the backbone chosen for this machine (edged.serve.choice; `fleet()` the other devices' statuses, whose
        # backbone a new member adopts; `fleet_backbones(wanted)` the backbones fleet machines built, for a board that
        # can convert none): everything built here, and the TensorFlow worker, are given the concrete one
        self.cfg, self.choice = chosen(cfg, resolve, choice_progress, fleet=fleet, fleet_backbones=fleet_backbones)
        cfg = self.cfg
        self.store = Store(StateLayout(cfg.state_path).store)
        try:
            self.backbone, self.engine = open_backbone(cfg)
            reembed_missing(self.store, self.backbone, self.engine, reembed_progress)
            self.heads = HeadSet(cfg.heads, cfg.runtime, StateLayout(cfg.state_path), self.store, self.backbone,
                                 head_classes(plugin_manager(cfg.plugins_dir)))
        except BaseException:
            self.store.close()
            raise
        self.learning: Optional[Learning] = None

    def with_learning(self, remote: Optional[RemoteJobs] = None) -> "ServingStack":
        self.learning = Learning(self.cfg, self.store, self.backbone, self.heads, remote)
        return self

    def close(self) -> None:
        """In reverse order of opening."""
        if self.learning is not None:
            self.learning.close()
        self.heads.close()
        self.engine.close()
        self.store.close()
