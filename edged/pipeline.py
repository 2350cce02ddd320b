"""Shared wiring for the daemon and the CLI: backbone + engine, re-embedding, the set of heads."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np

from .backbone import BackboneError, BackboneInfo, backbone_id, resolve_backbone
from .config import Config
from .heads import Head, HeadError, Prediction, build_options
from .plugins import head_classes, plugin_manager
from .preprocess import to_pixels
from .runtime import Engine, EngineOptions
from .store import Store

log = logging.getLogger(__name__)


def build_backbone_subprocess(cfg: Config) -> None:
    """Convert the Keras backbone in a child process so the serving process never imports TensorFlow."""
    cmd = [sys.executable, "-m", "edged.keras_backbone", "--state-dir", str(cfg.state_path),
           "--backbone-json", cfg.backbone.model_dump_json()]
    log.info("backbone %s is not cached: converting it once in a child process", backbone_id(cfg.backbone))
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        tail = "\n".join(line for line in result.stderr.strip().splitlines() if "TensorSpec" not in line)[-2000:]
        raise BackboneError(f"building backbone failed:\n{tail}")


def open_backbone(cfg: Config) -> tuple[BackboneInfo, Engine]:
    try:
        info = resolve_backbone(cfg.backbone, cfg.state_path, build=False)
    except BackboneError as e:
        if "not cached" not in str(e):
            raise
        build_backbone_subprocess(cfg)
        info = resolve_backbone(cfg.backbone, cfg.state_path, build=False)
    engine = Engine(EngineOptions(
        model_path=info.path, num_threads=cfg.runtime.num_threads, delegate=cfg.runtime.delegate,
        interpreter=cfg.runtime.interpreter, scaling=info.scaling,
    ))
    return info, engine


def embed_image(engine: Engine, image_bgr: np.ndarray) -> np.ndarray:
    return engine.embed(to_pixels(image_bgr, engine.input_size))


def reembed_missing(store: Store, backbone: BackboneInfo, engine: Engine) -> int:
    """Compute embeddings for examples stored under another backbone (frames are kept for this)."""
    missing = store.missing_embeddings(backbone.id)
    if not missing:
        return 0
    log.info("embedding %d stored frames for backbone %s", len(missing), backbone.id)
    pairs = []
    for i, (example_id, path) in enumerate(missing, 1):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            log.warning("example %d: frame %s unreadable; skipped", example_id, path)
            continue
        pairs.append((example_id, embed_image(engine, img)))
        if i % 100 == 0:
            log.info("  %d/%d", i, len(missing))
    store.set_embeddings(backbone.id, pairs)
    return len(pairs)


class HeadSet:
    """The heads a device has, which of them predict, and live swaps under one lock."""

    def __init__(self, cfg: Config, store: Store, backbone: BackboneInfo, pm=None):
        self.cfg = cfg
        self.store = store
        self.backbone = backbone
        self.folder = cfg.state_path / "heads"
        self.pm = pm or plugin_manager(cfg.plugins_dir)
        self.classes = head_classes(self.pm)
        self._lock = threading.Lock()
        self.instances: dict[str, Head] = {}
        unknown = [h for h in cfg.heads.active if h not in self.classes]
        if unknown:
            raise HeadError(f"heads.active: unknown head(s) {unknown}; installed: {sorted(self.classes)}")
        self.active = list(cfg.heads.active)
        for name in self.active:
            self.instances[name] = self._open(name)

    def _options(self, name: str):
        cls = self.classes[name]
        values = getattr(self.cfg.heads, name).model_dump() if hasattr(self.cfg.heads, name) and name != "options" \
            else self.cfg.heads.options.get(name, {})
        where = f"heads.{name}" if hasattr(self.cfg.heads, name) else f"heads.options.{name}"
        return build_options(cls, values, where)

    def _open(self, name: str) -> Head:
        head = self.classes[name](self._options(name))
        if head.incremental:
            head.fit(self.store.examples(self.backbone.id))
        else:
            head.load(self.folder / name)
        return head

    def describe(self) -> dict:
        out = {}
        for name, cls in sorted(self.classes.items()):
            head = self.instances.get(name)
            out[name] = {"kind": cls.kind, "active": name in self.active,
                         "ready": bool(head and head.ready), "classes": head.classes if head else []}
        return out

    def predict(self, embedding: np.ndarray) -> list[tuple[str, Prediction]]:
        with self._lock:
            heads = [(n, self.instances[n]) for n in self.active]
        return [(name, head.predict(embedding)) for name, head in heads if head.ready]

    def learned(self, embedding: np.ndarray, label: str, box=None) -> None:
        """A capture stored an example: incremental heads learn it now."""
        with self._lock:
            heads = list(self.instances.values())
        for head in heads:
            if head.incremental:
                head.add(embedding, label, box)

    def forget(self, label: str) -> None:
        with self._lock:
            heads = list(self.instances.values())
        for head in heads:
            head.forget(label)

    def refit_incremental(self) -> None:
        examples = self.store.examples(self.backbone.id)
        with self._lock:
            heads = list(self.instances.values())
        for head in heads:
            if head.incremental:
                head.fit(examples)

    def activate(self, names: list[str]) -> None:
        unknown = [n for n in names if n not in self.classes]
        if unknown:
            raise HeadError(f"activate.heads: unknown head(s) {unknown}; installed: {sorted(self.classes)}")
        opened = {n: self.instances.get(n) or self._open(n) for n in names}
        with self._lock:
            self.instances.update(opened)
            self.active = list(names)

    def train(self, name: str, progress=None, **kwargs) -> dict:
        """Fit a fresh instance off the frame loop, then swap it in."""
        if name not in self.classes:
            raise HeadError(f"train.head: unknown head {name!r}; installed: {sorted(self.classes)}")
        head = self.classes[name](self._options(name))
        examples = self.store.examples(self.backbone.id)
        if not len(examples):
            raise HeadError("the store has no examples yet: capture some first")
        metrics = head.fit(examples, progress=progress, **kwargs) if not head.incremental else head.fit(examples)
        head.save(self.folder / name)
        with self._lock:
            old = self.instances.get(name)
            self.instances[name] = head
        if old is not None:
            old.close()
        return metrics

    def close(self) -> None:
        with self._lock:
            for head in self.instances.values():
                head.close()
            self.instances.clear()
