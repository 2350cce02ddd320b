"""Backbone identity and the converted-TFLite cache. Importing this module never imports TensorFlow."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import BackboneConfig
from .preprocess import SCALING_BY_FAMILY, Scaling

log = logging.getLogger(__name__)

DEFAULT_CUT = {
    "mobilenet_v1": "conv_pw_13_relu",
    "mobilenet_v2": "out_relu",
    "mobilenet_v3_small": None,  # the model's last feature layer
    "keras": None,
}


class BackboneError(Exception):
    """A backbone that cannot be resolved, built or loaded."""


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


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _weights_token(cfg: BackboneConfig) -> str:
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
    if cfg.family == "tflite":
        spec = {"family": "tflite", "weights": spec["weights"]}
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    short = {"mobilenet_v1": "mnv1", "mobilenet_v2": "mnv2", "mobilenet_v3_small": "mnv3s"}.get(cfg.family, cfg.family)
    if cfg.family.startswith("mobilenet"):
        short += f"-{cfg.alpha:g}-{cfg.input_size}"
    return f"{short}-{digest}"


def _tflite_info(cfg: BackboneConfig, bid: str) -> BackboneInfo:
    from .runtime import Engine, EngineOptions

    engine = Engine(EngineOptions(model_path=cfg.path))
    try:
        scaling = SCALING_BY_FAMILY["mobilenet_v1"]
        return BackboneInfo(
            bid, str(cfg.path), "tflite", engine.input_size, engine.output_dim, scaling.scale, scaling.offset,
            f"TFLite feature extractor {Path(cfg.path).name}",
        )
    finally:
        engine.close()


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def resolve_backbone(cfg: BackboneConfig, state_dir: Path, build: bool = True) -> BackboneInfo:
    """Find the cached TFLite backbone for `cfg`, converting it with Keras once if missing."""
    bid = backbone_id(cfg)
    if cfg.family == "tflite":
        return _tflite_info(cfg, bid)
    folder = Path(state_dir) / "backbones" / bid
    meta_path = folder / "backbone.json"
    if meta_path.is_file() and (folder / "backbone.tflite").is_file():
        return BackboneInfo(**json.loads(meta_path.read_text()))
    if not build:
        raise BackboneError(f"backbone {bid} is not cached in {folder} and building it was not allowed")
    log.info("converting backbone %s to TFLite (once; later starts reuse it)", bid)
    try:
        from . import keras_backbone
    except ImportError as e:
        raise BackboneError(
            f"backbone {bid} must be built once with TensorFlow, which is not installed "
            f"(pip install 'edged[train]'), or point backbone.family='tflite' at a TFLite extractor: {e}"
        ) from e
    model = keras_backbone.build(cfg)
    tflite_bytes = keras_backbone.to_tflite(model)
    write_atomic(folder / "backbone.tflite", tflite_bytes)
    scaling = SCALING_BY_FAMILY.get(cfg.family, Scaling())
    info = BackboneInfo(
        bid, str(folder / "backbone.tflite"), cfg.family, cfg.input_size, int(model.output_shape[-1]),
        scaling.scale, scaling.offset,
        f"{cfg.family} alpha={cfg.alpha:g} {cfg.input_size}px cut at {cut_layer(cfg)} ({cfg.pooling}), weights {cfg.weights}",
    )
    write_atomic(meta_path, json.dumps(asdict(info), indent=2).encode())
    return info
