"""Shared wiring for the daemon and the CLI: backbone + engine, re-embedding, the set of heads."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from typing import Optional

import cv2
import numpy as np

from .backbone import BackboneError, BackboneInfo, backbone_id, resolve_backbone, write_atomic
from .fused import FusedModel
from .models import VersionError, Versions
from .config import Config
from .heads import Head, HeadError, Prediction, head_options
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
    """The heads a device has, which of them predict, which serve from exported models; swaps under one lock.

    The serving choice (active heads, heads served by an exported model) set by commands is kept in
    `state_dir/serving.json` so that it survives a restart.
    """

    def __init__(self, cfg: Config, store: Store, backbone: BackboneInfo, pm=None):
        self.cfg = cfg
        self.store = store
        self.backbone = backbone
        self.folder = cfg.state_path / "heads"
        self.serving_file = cfg.state_path / "serving.json"
        self.pm = pm or plugin_manager(cfg.plugins_dir)
        self.classes = head_classes(self.pm)
        self._lock = threading.Lock()
        self.instances: dict[str, Head] = {}
        self.models: dict[str, FusedModel] = {}
        self._worker = None
        saved = self._load_serving()
        active = saved.get("active", cfg.heads.active)
        unknown = [h for h in active if h not in self.classes]
        if unknown:
            raise HeadError(f"heads.active: unknown head(s) {unknown}; installed: {sorted(self.classes)}")
        self.active = list(active)
        for name in self.active:
            self.instances[name] = self._open(name)
        for name in saved.get("models", []):
            try:
                self.models[name] = self._open_model(name)
            except HeadError as e:
                log.error("exported model for %s not served: %s", name, e)

    def _load_serving(self) -> dict:
        try:
            return json.loads(self.serving_file.read_text())
        except (OSError, ValueError):
            return {}

    def _save_serving(self) -> None:
        write_atomic(self.serving_file, json.dumps({"active": self.active, "models": sorted(self.models)}).encode())

    def _options(self, name: str):
        return head_options(self.cfg, self.classes[name])

    def _open(self, name: str) -> Head:
        head = self.classes[name](self._options(name))
        if head.incremental:
            head.fit(self.store.examples(self.backbone.id))
        else:
            head.load(Versions(self.folder / name).current_path())
        return head

    def _open_model(self, name: str) -> FusedModel:
        path = Versions(self.cfg.state_path / "models" / name).current_path()
        if path is None:
            raise HeadError(f"no exported model for {name!r}: export it first")
        model = FusedModel(path, self.cfg.runtime.num_threads, self.cfg.runtime.interpreter, self.cfg.runtime.delegate)
        if model.input_size != self.backbone.input_size:
            model.close()
            raise HeadError(f"model {path} takes {model.input_size}px frames; the backbone serves {self.backbone.input_size}px")
        return model

    def describe(self) -> dict:
        out = {}
        with self._lock:
            instances, models = dict(self.instances), dict(self.models)
        for name, cls in sorted(self.classes.items()):
            head = instances.get(name)
            model = models.get(name)
            entry = {"kind": cls.kind, "active": name in self.active,
                     "ready": bool(model or (head and head.ready)),
                     "classes": model.labels if model else (head.classes if head else [])}
            versions = Versions(self.folder / name)
            if versions.current():
                entry["version"] = versions.current()
            if model:
                entry["model"] = {"version": model.folder.name, "quantization": model.meta.get("quantization"),
                                  "sha256": model.sha[:16]}
            out[name] = entry
        return out

    @property
    def needs_embedding(self) -> bool:
        with self._lock:
            return any(n not in self.models and not getattr(self.instances.get(n), "takes_pixels", False) for n in self.active)

    def predict(self, embedding: Optional[np.ndarray], pixels: np.ndarray) -> list[tuple[str, Prediction]]:
        with self._lock:
            plan = [(n, self.models.get(n), self.instances.get(n)) for n in self.active]
        out = []
        for name, model, head in plan:
            if model is not None:
                out.append((name, model.predict(pixels)))
            elif head is not None and head.ready:
                out.append((name, head.predict_pixels(pixels) if head.takes_pixels else head.predict(embedding)))
        return out

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

    def _swap(self, name: str, head: Head) -> None:
        with self._lock:
            old = self.instances.get(name)
            self.instances[name] = head
        if old is not None and old is not head:
            old.close()

    def activate(self, names: list[str]) -> None:
        unknown = [n for n in names if n not in self.classes]
        if unknown:
            raise HeadError(f"activate.heads: unknown head(s) {unknown}; installed: {sorted(self.classes)}")
        opened = {n: self.instances.get(n) or self._open(n) for n in names}
        with self._lock:
            self.instances.update(opened)
            self.active = list(names)
        self._save_serving()

    @property
    def worker(self):
        """The TensorFlow worker process for train/export jobs (started on first use)."""
        if self._worker is None:
            from .adapt import TrainerWorker

            self._worker = TrainerWorker(self.cfg.trainer.idle_exit_s)
        return self._worker

    def train(self, name: str, progress=None, stop=None, **params) -> dict:
        """Fit a new version off the frame loop (TensorFlow heads in a child process), then swap it in."""
        if name not in self.classes:
            raise HeadError(f"train.head: unknown head {name!r}; installed: {sorted(self.classes)}")
        cls = self.classes[name]
        if cls.needs_tensorflow:
            result = self.worker.run(self.cfg, "train", name, params, progress, stop)
            head = cls(self._options(name))
            if not head.load(Versions(self.folder / name).current_path()):
                raise HeadError(f"trained {name!r} but its new version could not be loaded")
            self._swap(name, head)
            return result
        head = cls(self._options(name))
        examples = self.store.examples(self.backbone.id)
        if not len(examples):
            raise HeadError("the store has no examples yet: capture some first")
        metrics = head.fit(examples, progress=progress)
        self._swap(name, head)
        return {"head": name, "metrics": metrics}

    def export(self, name: str, quantize: str, force: bool = False, progress=None, stop=None) -> dict:
        """Export a fused model; when a model already serves this head, the new one replaces it."""
        result = self.worker.run(self.cfg, "export", name, {"quantize": quantize, "force": force}, progress, stop)
        if name in self.models:
            self.use_model(name)
        return result

    def use_model(self, name: str, version: Optional[str] = None) -> dict:
        versions = Versions(self.cfg.state_path / "models" / name)
        previous = versions.current()
        if version:
            try:
                versions.activate(version)
            except VersionError as e:
                raise HeadError(str(e)) from None
        try:
            model = self._open_model(name)
        except HeadError:
            if version and previous:
                versions.activate(previous)  # the refused version does not stay current
            raise
        with self._lock:
            old = self.models.get(name)
            self.models[name] = model
            if name not in self.active:
                self.active.append(name)
        if old is not None:
            old.close()
        self._save_serving()
        return {"model": name, "version": model.folder.name, "sha256": model.sha[:16],
                "quantization": model.meta.get("quantization")}

    def rollback_model(self, name: str) -> dict:
        versions = Versions(self.cfg.state_path / "models" / name)
        try:
            previous = versions.rollback()
        except VersionError as e:
            raise HeadError(str(e)) from None
        return self.use_model(name, previous)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
        with self._lock:
            for head in self.instances.values():
                head.close()
            for model in self.models.values():
                model.close()
            self.instances.clear()
            self.models.clear()
