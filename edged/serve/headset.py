"""The heads a device serves: which predict, from a head instance or a TFLite model; swapped under one lock.

It only holds, swaps and predicts. Training and model versions are `edged.serve.learning`'s job;
the serving choice (active heads, heads served by an exported model) is kept in `serving.json`.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import Config, HeadsConfig, RuntimeConfig
from ..errors import EdgedError, HeadError
from ..heads.base import Head, Prediction
from ..heads.options import head_options
from ..runtime.fused import FusedModel
from ..sources.preprocess import FrameView
from ..state.backbones import BackboneInfo
from ..state.layout import StateLayout
from ..state.serving import ServingChoice
from ..state.store import Store

log = logging.getLogger(__name__)


class HeadSet:
    def __init__(self, heads: HeadsConfig, runtime: RuntimeConfig, layout: StateLayout, store: Store,
                 backbone: BackboneInfo, classes: dict[str, type[Head]]):
        self.heads_cfg, self.runtime, self.layout = heads, runtime, layout
        self.store = store
        self.backbone = backbone
        self.classes = classes
        self.choice = ServingChoice(layout.serving)
        self._lock = threading.Lock()
        self.instances: dict[str, Head] = {}  # heads answering from embeddings
        self.fused: dict[str, FusedModel] = {}  # trained versions that are one TFLite model (fine-tuned, boxes)
        self.models: dict[str, FusedModel] = {}  # exported models chosen with `activate {"model": ...}`
        self.errors: dict[str, str] = {}
        active = self.choice.active(heads.active)
        unknown = [h for h in active if h not in self.classes]
        if unknown:
            raise HeadError(f"heads.active: unknown head(s) {unknown}; installed: {sorted(self.classes)}")
        self.active = list(active)
        for name in self.active:
            self.options(name)  # bad options are a config error: refuse to start, naming the key
        for name in self.active:
            self._install(name)
        for name in self.choice.models():
            if name not in self.classes:
                log.error("serving.json names an exported model for unknown head %r; ignored", name)
                continue
            try:
                self.models[name] = self.open_model(self.layout.models(name).current_path(), name)
            except EdgedError as e:
                log.error("exported model for %s not served: %s", name, e)

    @classmethod
    def for_config(cls, cfg: Config, store: Store, backbone: BackboneInfo,
                   classes: dict[str, type[Head]]) -> "HeadSet":
        """The head set of a whole config: its [heads], [runtime] and state folder."""
        return cls(cfg.heads, cfg.runtime, StateLayout(cfg.state_path), store, backbone, classes)

    # -- opening -----------------------------------------------------------------------------
    def options(self, name: str):
        return head_options(self.heads_cfg, self.classes[name])

    def open_model(self, folder: Optional[Path], name: str) -> FusedModel:
        """A TFLite model folder for head `name`, checked against the serving backbone's input size."""
        if folder is None:
            raise HeadError(f"no exported model for {name!r}: export it first")
        rt = self.runtime
        model = FusedModel(folder, self.classes[name].decode, rt.num_threads, rt.interpreter, rt.delegate)
        if model.input_size != self.backbone.input_size:
            model.close()
            raise HeadError(f"model {folder} takes {model.input_size}px frames; the backbone serves {self.backbone.input_size}px")
        return model

    def open_head(self, name: str, folder: Optional[Path] = None) -> tuple[Head, Optional[FusedModel]]:
        """A head instance for `name` in the state of `folder` (default: its current version)."""
        head = self.classes[name](self.options(name))
        if head.incremental:
            head.fit(self.store.examples(self.backbone.id))
            return head, None
        folder = folder or self.layout.heads(name).current_path()
        if folder is not None and (folder / "model.tflite").is_file():
            return head, self.open_model(folder, name)
        head.load(folder)
        return head, None

    def _install(self, name: str) -> None:
        try:
            head, fused = self.open_head(name)
        except EdgedError as e:
            log.error("head %s not ready: %s", name, e)
            self.errors[name] = str(e)
            return
        self.swap(name, head, fused)

    # -- swapping ----------------------------------------------------------------------------
    def swap(self, name: str, head: Head, fused: Optional[FusedModel] = None) -> None:
        with self._lock:
            old_head, old_fused = self.instances.get(name), self.fused.get(name)
            self.instances[name] = head
            if fused is None:
                self.fused.pop(name, None)
            else:
                self.fused[name] = fused
            self.errors.pop(name, None)
        if old_head is not None and old_head is not head:
            old_head.close()
        if old_fused is not None and old_fused is not fused:
            old_fused.close()

    def serve_model(self, name: str, model: FusedModel) -> None:
        with self._lock:
            old = self.models.get(name)
            self.models[name] = model
            if name not in self.active:
                self.active.append(name)
        if old is not None and old is not model:
            old.close()
        self.save()

    def stop_serving_model(self, name: str) -> Optional[str]:
        """Predict with head `name` itself again instead of its exported model; the model version that served."""
        with self._lock:
            model = self.models.pop(name, None)
        if model is None:
            return None
        version = Path(model.folder).name
        model.close()
        self.save()
        return version

    def activate(self, names: list[str], persist: bool = True) -> None:
        unknown = [n for n in names if n not in self.classes]
        if unknown:
            raise HeadError(f"activate.heads: unknown head(s) {unknown}; installed: {sorted(self.classes)}")
        for n in names:
            if n not in self.instances:
                head, fused = self.open_head(n)
                self.swap(n, head, fused)
        with self._lock:
            self.active = list(dict.fromkeys(names))
        if persist:
            self.save()

    def save(self) -> None:
        self.choice.save(self.active, list(self.models))

    # -- serving -----------------------------------------------------------------------------
    def embedding_heads(self) -> dict[str, Head]:
        """Active heads that answer from the backbone's embedding (not from a TFLite model of their own)."""
        return {n: h for n, model, h in self._plan() if model is None and h is not None and h.ready}

    def _plan(self):
        with self._lock:
            return [(n, self.models.get(n) or self.fused.get(n), self.instances.get(n)) for n in self.active]

    @property
    def needs_embedding(self) -> bool:
        return any(model is None and head is not None for _, model, head in self._plan())

    def predict(self, embedding: Optional[np.ndarray], view: FrameView,
                only: Optional[tuple[str, ...]] = None) -> list[tuple[str, Prediction]]:
        """Predictions of the active heads (those of them in `only`); boxes in the view's coordinates."""
        out = []
        for name, model, head in self._plan():
            if only is not None and name not in only:
                continue
            if model is not None:
                out.append((name, model.predict(*view.fitted(model.fit, model.input_size))))
            elif head is not None and head.ready:
                out.append((name, head.predict(embedding)))
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

    def ready(self, name: str) -> bool:
        with self._lock:
            head = self.instances.get(name)
            return name in self.models or name in self.fused or bool(head is not None and head.ready)

    def describe(self) -> dict:
        out = {}
        with self._lock:
            instances, fused, models = dict(self.instances), dict(self.fused), dict(self.models)
            errors = dict(self.errors)
        for name, cls in sorted(self.classes.items()):
            head, model = instances.get(name), models.get(name) or fused.get(name)
            entry = {"kind": cls.kind, "active": name in self.active,
                     "ready": bool(model or (head and head.ready)),
                     "classes": model.labels if model else (head.classes if head else [])}
            current = self.layout.heads(name).current()
            if current:
                entry["version"] = current
            if name in models:
                m = models[name]
                entry["model"] = {"version": m.folder.name, "quantization": m.meta.get("quantization"), "sha256": m.sha[:16]}
            if name in errors:
                entry["error"] = errors[name]
            quality = head.quality() if head is not None else {}
            if quality:
                entry["quality"] = quality
            out[name] = entry
        return out

    def close(self) -> None:
        with self._lock:
            for head in self.instances.values():
                head.close()
            for model in list(self.fused.values()) + list(self.models.values()):
                model.close()
            self.instances.clear()
            self.fused.clear()
            self.models.clear()
