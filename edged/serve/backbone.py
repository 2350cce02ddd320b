"""The serving backbone: look it up in the cache (building it once in a child process), embed frames, re-embed the store."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from ..config import Config
from ..errors import BackboneError
from ..runtime.engine import Engine, EngineOptions
from ..runtime.speech import SpeechEngine
from ..sources.preprocess import to_pixels
from ..state.backbones import BackboneInfo, backbone_id, lookup_backbone
from ..state.layout import StateLayout
from ..state.store import Store
from .choice import chosen
from .worker_client import tensorflow_available

log = logging.getLogger(__name__)


def build_in_child(cfg: Config) -> None:
    """Convert the Keras backbone in a child process so the serving process never imports TensorFlow. Without
    TensorFlow here, no child is started: it could only fail (on a slow board, after seconds of start-up each)."""
    if not tensorflow_available():
        raise BackboneError(f"backbone {backbone_id(cfg.backbone)} is not converted yet and TensorFlow is not "
                            "installed here to convert it (pip install 'edged[train]')")
    cmd = [sys.executable, "-m", "edged.learn.backbones", "--state-dir", str(cfg.state_path),
           "--backbone-json", cfg.backbone.model_dump_json()]
    log.info("backbone %s is not cached: converting it once in a child process", backbone_id(cfg.backbone))
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if result.returncode != 0:
        said = [line[len("error: "):] for line in result.stderr.splitlines() if line.startswith("error: ")]
        if said:  # the builder's own message names the key
            raise BackboneError(said[-1])
        tail = "\n".join(line for line in result.stderr.strip().splitlines() if "TensorSpec" not in line)[-2000:]
        raise BackboneError(f"building backbone failed:\n{tail}")


def resolve(cfg: Config) -> BackboneInfo:
    info = lookup_backbone(cfg.backbone, cfg.state_path)
    if info is None:
        build_in_child(cfg)
        info = lookup_backbone(cfg.backbone, cfg.state_path)
        if info is None:
            raise BackboneError(f"backbone {backbone_id(cfg.backbone)} was built but is not in {StateLayout(cfg.state_path).backbones}")
    return info


def open_backbone(cfg: Config) -> tuple[BackboneInfo, Engine]:
    """The serving backbone and its interpreter; with `backbone.choose = "auto"`, the one chosen for this machine
    (edged.serve.choice)."""
    cfg, _ = chosen(cfg, resolve)
    info = resolve(cfg)
    if info.family == "speech_embedding":
        return info, SpeechEngine(Path(info.path).parent, cfg.runtime.num_threads, cfg.runtime.interpreter)
    engine = Engine(EngineOptions(
        model_path=info.path, num_threads=cfg.runtime.num_threads, delegate=cfg.runtime.delegate,
        interpreter=cfg.runtime.interpreter, scaling=info.scaling,
    ))
    return info, engine


def embed_image(engine: Engine, image_bgr: np.ndarray) -> np.ndarray:
    return engine.embed(to_pixels(image_bgr, engine.input_size))


def reembed_missing(store: Store, backbone: BackboneInfo, engine: Engine,
                    progress: Optional[Callable[[int, int], None]] = None, batch: int = 100) -> int:
    """Compute embeddings for examples stored under another backbone (frames are kept for this; a speech backbone
    embeds a sound example's kept sound, and skips examples without one).

    Committed every `batch` frames, so work done before a crash is kept; `progress(done, total)` after each.
    """
    missing = store.missing_embeddings(backbone.id)
    if not missing:
        return 0
    log.info("embedding %d stored frames for backbone %s", len(missing), backbone.id)
    pairs, done = [], 0
    for i, (example_id, path) in enumerate(missing, 1):
        if getattr(engine, "hears", False):
            sound = store.load_audio(example_id)
            if sound is None:
                log.warning("example %d has no sound kept: the speech backbone cannot embed it; skipped", example_id)
            else:
                pairs.append((example_id, engine.embed_sound(sound)))
        elif (img := cv2.imread(str(path), cv2.IMREAD_COLOR)) is None:
            log.warning("example %d: frame %s unreadable; skipped", example_id, path)
        else:
            pairs.append((example_id, embed_image(engine, img)))
        if len(pairs) >= batch or i == len(missing):
            store.set_embeddings(backbone.id, pairs)
            done += len(pairs)
            pairs = []
            log.info("  %d/%d", i, len(missing))
            if progress:
                progress(i, len(missing))
    return done
