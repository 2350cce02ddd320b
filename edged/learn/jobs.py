"""Train and export jobs, run in the TensorFlow worker: heads' trainer modules do the work, versions are committed here."""

from __future__ import annotations

import importlib
import json
import logging

import numpy as np

from ..config import Config
from ..errors import HeadError, TrainingError
from ..files import write_atomic
from ..heads.base import Progress, TrainRequest
from ..heads.options import head_options
from ..heads.registry import head_classes, plugin_manager
from ..state.layout import StateLayout
from ..state.store import Store
from .backbones import build_backbone
from .context import ExportSpec, TrainContext

log = logging.getLogger(__name__)


def _context(cfg: Config, store: Store, head: str, request: TrainRequest, job: str, folder=None) -> TrainContext:
    classes = head_classes(plugin_manager(cfg.plugins_dir))
    if head not in classes:
        raise HeadError(f"{job}.head: unknown head {head!r}; installed: {sorted(classes)}")
    cls = classes[head]
    backbone = build_backbone(cfg.backbone, cfg.state_path)
    return TrainContext(cfg, store, backbone, cls, head_options(cfg.heads, cls), request, folder)


def trainer_module(head_cls, hook: str):
    """The head's Keras training module, checked to define `hook`."""
    if not head_cls.trainer:
        raise TrainingError(f"head {head_cls.name!r} has no training module: nothing to {hook.split('_')[0]} in the worker")
    module = importlib.import_module(head_cls.trainer)
    if not hasattr(module, hook):
        raise TrainingError(f"head {head_cls.name!r}: {head_cls.trainer} defines no {hook}()")
    return module


def run_train(cfg: Config, head: str, request: TrainRequest, progress: Progress = None) -> dict:
    """Train a new version of `head` with its trainer module; commit it as heads/<head>/vN."""
    store = Store(StateLayout(cfg.state_path).store)
    try:
        versions = StateLayout(cfg.state_path).heads(head)
        with versions.draft() as draft:
            context = _context(cfg, store, head, request, "train", draft.folder)
            if not len(context.examples):
                raise HeadError("the store has no examples for this backbone yet: capture some first")
            metrics = trainer_module(context.head, "train").train(context, progress)
            draft.activate = bool(metrics.pop("activate", True))  # a trainer may judge its own result not good enough
        version, activate = draft.version, draft.activate
        result = {"head": head, "version": version, "activated": activate, "metrics": metrics}
        if not activate:
            result["note"] = metrics.get("note") or f"{head} {version} kept but not activated"
        return result
    finally:
        store.close()


def _representative(context: TrainContext, n: int = 300) -> np.ndarray:
    ids = context.examples.ids
    if len(ids) > n:
        ids = np.random.default_rng(0).choice(ids, n, replace=False)
    return context.pixels(ids)


def run_export(cfg: Config, head: str, quantize: str = "float32", force: bool = False, progress: Progress = None) -> dict:
    """Export `head` (backbone + head as one TFLite model) as models/<head>/vN, current only when parity passes."""
    store = Store(StateLayout(cfg.state_path).store)
    try:
        context = _context(cfg, store, head, TrainRequest(), "export")
        if not len(context.examples):
            raise HeadError("the store has no examples: nothing to export")
        spec: ExportSpec = trainer_module(context.head, "export_model").export_model(context)
        check_ids = context.examples.ids if spec.check_ids is None else spec.check_ids
        check = context.pixels(check_ids[:200])
        versions = StateLayout(cfg.state_path).models(head)
        with versions.draft() as draft:
            meta = context.write_model(draft.folder, spec, quantize, check, _representative(context), progress)
            meta["from_version"] = StateLayout(cfg.state_path).heads(head).current()  # the trained version exported
            write_atomic(draft.folder / "metadata.json", json.dumps(meta, indent=2).encode())
            if not meta["parity"]["passed"] and not force:
                raise HeadError(f"parity check failed: {meta['parity']}; the model was not activated (use force to keep it)")
        version = draft.version
        return {"head": head, "model_version": version, "quantization": quantize, "parity": meta["parity"],
                "bytes": meta["bytes"], "path": str(versions.root / version / "model.tflite")}
    finally:
        store.close()
