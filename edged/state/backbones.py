"""Backbone identity and the converted-TFLite cache (`state_dir/backbones/<id>/`). Looks up; never builds.

Building a missing entry imports TensorFlow, so it happens in `edged.learn.backbones`, run as a
child process by the serving side (`edged.serve.backbone`).
"""

from __future__ import annotations

import hashlib
import json
import os
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import BackboneConfig
from ..errors import BackboneError
from ..files import file_sha256, write_atomic
from ..runtime.engine import Engine, EngineOptions
from ..runtime.scaling import SCALING_BY_FAMILY, Scaling
from ..runtime.speech import EMBEDDING_FILE, MEL_FILE, SpeechEmbedder, speech_models_folder
from .layout import StateLayout

log = logging.getLogger(__name__)

DEFAULT_CUT = {
    "mobilenet_v1": "conv_pw_13_relu",
    "mobilenet_v2": "out_relu",
    "mobilenet_v3_small": None,  # the model's last feature layer
    "keras": None,
}


@dataclass
class BackboneInfo:
    id: str
    path: str  # TFLite file producing the embedding
    family: str
    input_size: int
    output_dim: int
    scale: float
    offset: float
    description: str

    @property
    def scaling(self) -> Scaling:
        return Scaling(self.scale, self.offset)


def _weights_token(cfg: BackboneConfig) -> str:
    if cfg.family == "speech_embedding":
        folder = speech_models_folder(cfg.path)
        return "sha256:" + file_sha256(folder / MEL_FILE)[:32] + file_sha256(folder / EMBEDDING_FILE)[:32]
    if cfg.family in ("keras", "tflite"):
        if not cfg.path:
            raise BackboneError(f"backbone.path is required for family {cfg.family!r}")
        if not Path(cfg.path).is_file():
            raise BackboneError(f"backbone.path: file not found: {cfg.path}")
        return "sha256:" + file_sha256(cfg.path)
    if cfg.weights == "imagenet":
        return "imagenet"
    if cfg.weights == "none":
        return f"random:{cfg.seed}"
    if not Path(cfg.weights).is_file():
        raise BackboneError(f"backbone.weights: file not found: {cfg.weights}")
    return "sha256:" + file_sha256(cfg.weights)


def weights_folders() -> list[Path]:
    """Where ImageNet weight files and TFLite extractors are looked for before Keras would download them:
    $EDGED_WEIGHTS_DIR when it is set (only there), else the workspace's shared models folder beside a checkout."""
    if os.environ.get("EDGED_WEIGHTS_DIR"):
        return [Path(os.environ["EDGED_WEIGHTS_DIR"])]
    return [Path(__file__).resolve().parents[3] / "shared" / "models"]


TFLITE_EXTRACTOR_MARKS = ("extractor", "embedding", "no_top")  # what a feature extractor's file name says it is


def local_tflite_extractors() -> list[Path]:
    """TFLite feature extractors on this disk (`*extractor*.tflite`, `*embedding*.tflite`, `*no_top*.tflite` in the
    weights folders): backbones a board without TensorFlow can serve as they are, e.g. the uint8 MobileNet v1
    1.0/224 `mobilenet_v1_1.0_224_quant_embedding_extractor.tflite`."""
    found = []
    for folder in weights_folders():
        if folder.is_dir():
            found += sorted(f for f in folder.glob("*.tflite")
                            if f.is_file() and any(mark in f.name.lower() for mark in TFLITE_EXTRACTOR_MARKS))
    return found


def local_imagenet_weights(alpha: float, size: int) -> Path | None:
    """A MobileNet v1 ImageNet weights file for (alpha, size) on this disk (`mobilenet_v1_<alpha>_<size>_imagenet_no_top
    .weights.h5`), or None."""
    name = f"mobilenet_v1_{float(alpha)}_{size}_imagenet_no_top.weights.h5"
    for folder in weights_folders():
        if (folder / name).is_file():
            return folder / name
    return None


def cut_layer(cfg: BackboneConfig) -> str | None:
    return cfg.cut_layer or DEFAULT_CUT.get(cfg.family)


def backbone_id(cfg: BackboneConfig) -> str:
    """Stable id of the embedding function: family, alpha, size, cut, pooling, weights checksum."""
    spec = {
        "family": cfg.family,
        "alpha": cfg.alpha,
        "input_size": cfg.input_size,
        "cut": cut_layer(cfg),
        "pooling": cfg.pooling,
        "weights": _weights_token(cfg),
    }
    if cfg.family in ("tflite", "speech_embedding"):
        spec = {"family": cfg.family, "weights": spec["weights"]}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    short = {"mobilenet_v1": "mnv1", "mobilenet_v2": "mnv2", "mobilenet_v3_small": "mnv3s",
             "speech_embedding": "speech"}.get(cfg.family, cfg.family)
    if cfg.family.startswith("mobilenet"):
        short += f"-{cfg.alpha:g}-{cfg.input_size}"
    return f"{short}-{digest}"


FAMILY_NAMES = {"mobilenet_v1": "MobileNet v1", "mobilenet_v2": "MobileNet v2", "mobilenet_v3_small": "MobileNet v3 small"}


def short_name(cfg: BackboneConfig) -> str:
    """What a person reads as the backbone (Home Assistant's device model): no folder of this machine in it."""
    if cfg.family in FAMILY_NAMES:
        return f"{FAMILY_NAMES[cfg.family]} {cfg.alpha:g}/{cfg.input_size}"
    if cfg.family == "speech_embedding":
        return "speech embedding"
    return f"{cfg.family} {Path(cfg.path).name}" if cfg.path else cfg.family


def describe(cfg: BackboneConfig) -> str:
    if cfg.family == "speech_embedding":
        return f"speech embedding (Google; the loudest windows' mean and max), {speech_models_folder(cfg.path)}"
    return (f"{cfg.family} alpha={cfg.alpha:g} {cfg.input_size}px cut at {cut_layer(cfg)} ({cfg.pooling}), "
            f"weights {cfg.weights}")


def cache_folder(cfg: BackboneConfig, state_dir: Path) -> Path:
    return StateLayout(state_dir).backbones / backbone_id(cfg)


def _tflite_info(cfg: BackboneConfig, bid: str) -> BackboneInfo:
    engine = Engine(EngineOptions(model_path=cfg.path))
    try:
        scaling = SCALING_BY_FAMILY["mobilenet_v1"]
        return BackboneInfo(
            bid, str(cfg.path), "tflite", engine.input_size, engine.output_dim, scaling.scale, scaling.offset,
            f"TFLite feature extractor {Path(cfg.path).name}",
        )
    finally:
        engine.close()


def lookup_backbone(cfg: BackboneConfig, state_dir: Path) -> BackboneInfo | None:
    """The cached TFLite backbone for `cfg` (or the configured TFLite extractor); None when not built yet."""
    bid = backbone_id(cfg)
    if cfg.family == "tflite":
        return _tflite_info(cfg, bid)
    if cfg.family == "speech_embedding":  # served as shipped: nothing to convert or cache
        folder = speech_models_folder(cfg.path)
        return BackboneInfo(bid, str(folder / EMBEDDING_FILE), cfg.family, 128, SpeechEmbedder.dim, 1.0, 0.0,
                            describe(cfg))
    folder = StateLayout(state_dir).backbones / bid
    meta_path = folder / "backbone.json"
    if meta_path.is_file() and (folder / "backbone.tflite").is_file():
        info = BackboneInfo(**json.loads(meta_path.read_text()))
        info.path = str(folder / "backbone.tflite")  # the folder may have been moved or copied
        return info
    return None


INT8_FILE = "backbone-int8.tflite"


def int8_path(info: BackboneInfo) -> Path:
    """Where the full-integer twin of a float backbone lives (beside it, in its cache folder)."""
    return Path(info.path).with_name(INT8_FILE)


def store_backbone(cfg: BackboneConfig, state_dir: Path, tflite: bytes, output_dim: int) -> BackboneInfo:
    """Write a converted backbone into the cache (model first, then the metadata that makes it visible)."""
    folder = cache_folder(cfg, state_dir)
    write_atomic(folder / "backbone.tflite", tflite)
    scaling = SCALING_BY_FAMILY.get(cfg.family, Scaling())
    info = BackboneInfo(backbone_id(cfg), str(folder / "backbone.tflite"), cfg.family, cfg.input_size, output_dim,
                        scaling.scale, scaling.offset, describe(cfg))
    write_atomic(folder / "backbone.json", json.dumps(asdict(info), indent=2).encode())
    return info
