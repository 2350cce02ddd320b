"""Truncated Keras backbones: MobileNet v1/v2/v3-small or a .keras file, cut at a named layer, pooled."""

from __future__ import annotations

import logging

import keras
import numpy as np
import tensorflow as tf  # noqa: F401  (fails fast with ImportError when the train extra is missing)

from ..config import BackboneConfig
from ..errors import BackboneError
from ..runtime.scaling import SCALING_BY_FAMILY, Scaling
from ..sources.preprocess import to_pixels
from ..sources.synthetic import scene_at
from ..state.backbones import cut_layer

log = logging.getLogger(__name__)

_APPS = {
    "mobilenet_v1": lambda **kw: keras.applications.MobileNet(**kw),
    "mobilenet_v2": lambda **kw: keras.applications.MobileNetV2(**kw),
    "mobilenet_v3_small": lambda **kw: keras.applications.MobileNetV3Small(**kw),
}


def base_model(cfg: BackboneConfig) -> keras.Model:
    """The full pretrained (or random) network before cutting."""
    if cfg.family == "keras":
        return keras.models.load_model(cfg.path, compile=False)
    if cfg.family not in _APPS:
        raise BackboneError(f"backbone.family {cfg.family!r} cannot be built with Keras")
    shape = (cfg.input_size, cfg.input_size, 3)
    kwargs = dict(input_shape=shape, alpha=cfg.alpha, include_top=False)
    if cfg.weights == "imagenet":
        try:
            return _APPS[cfg.family](weights="imagenet", **kwargs)
        except Exception as e:
            raise BackboneError(f"backbone.weights = 'imagenet': getting Keras' ImageNet weights failed "
                                f"({type(e).__name__}: {str(e)[:200]}); offline, set backbone.weights to a local "
                                f".weights.h5 file, or 'none' for random weights") from None
    keras.utils.set_random_seed(cfg.seed)
    model = _APPS[cfg.family](weights=None, **kwargs)
    if cfg.weights == "none":
        calibrate_batchnorm(model, cfg)
    else:
        try:
            model.load_weights(cfg.weights)
        except Exception as e:
            raise BackboneError(f"backbone.weights: cannot load {cfg.weights} into {cfg.family} alpha={cfg.alpha}: {e}") from e
    return model


def calibrate_batchnorm(model: keras.Model, cfg: BackboneConfig, samples: int = 32) -> None:
    """Give a randomly initialised network usable features.

    With random convolutions and unit batch-norm statistics the activations shrink layer
    by layer until the embedding is ~1e-16. Setting each batch-norm layer's moving
    mean/variance to the statistics it actually sees (on synthetic scenes) keeps every
    layer at unit scale: a data-dependent initialisation, good for plumbing and demos.
    """
    scaling = SCALING_BY_FAMILY.get(cfg.family, Scaling())
    images = np.stack([
        to_pixels(scene_at(cfg.seed, i, cfg.input_size, cfg.input_size, clutter=4).image, cfg.input_size)
        for i in range(samples)
    ]).astype("float32") * scaling.scale + scaling.offset
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        probe = keras.Model(model.inputs, layer.input)
        x = np.asarray(probe(images, training=False))
        axes = tuple(range(x.ndim - 1))
        gamma, beta, _, _ = layer.get_weights()
        layer.set_weights([gamma, beta, x.mean(axis=axes), x.var(axis=axes) + 1e-3])


def truncate(model: keras.Model, layer_name: str | None, pooling: str) -> keras.Model:
    if layer_name:
        try:
            features = model.get_layer(layer_name).output
        except ValueError:
            names = [layer.name for layer in model.layers]
            hint = ", ".join(n for n in names if n.endswith("relu"))[-300:] or ", ".join(names[-10:])
            raise BackboneError(f"backbone.cut_layer: no layer {layer_name!r}; candidates: {hint}") from None
    else:
        features = model.output
    if len(features.shape) == 4:
        pool = keras.layers.GlobalAveragePooling2D(name="embedding_pool") if pooling == "avg" else keras.layers.Flatten(name="embedding_flatten")
        features = pool(features)
    return keras.Model(model.inputs, features, name="backbone")


def build(cfg: BackboneConfig) -> keras.Model:
    return truncate(base_model(cfg), cut_layer(cfg), cfg.pooling)


def feature_map(cfg: BackboneConfig, stride: int = 0) -> keras.Model:
    """The backbone cut at its layer, without pooling: (H, W, C) features for box heads.

    With `stride`, the cut is instead the deepest layer whose map is 1/stride of the input.
    """
    model = base_model(cfg)
    name = layer_at_stride(model, stride) if stride else cut_layer(cfg)
    out = model.get_layer(name).output if name else model.output
    return keras.Model(model.inputs, out, name="feature_map")


def feature_map_at(cfg: BackboneConfig, layer: str | None) -> keras.Model:
    """Feature map for a head's `feature_layer` option: None is the configured cut; "auto" is the
    deepest layer at 1/16 of the input, a grid fine enough to place boxes (conv_pw_11 in MobileNet v1)."""
    if layer == "auto":
        return feature_map(cfg, stride=16)
    return feature_map(cfg.model_copy(update={"cut_layer": layer}) if layer else cfg)


def layer_at_stride(model: keras.Model, stride: int) -> str:
    size = model.input_shape[1]
    found = [layer.name for layer in model.layers if len(layer.output.shape) == 4 and layer.output.shape[1] == size // stride]
    if not found:
        raise ValueError(f"{model.name} has no layer at 1/{stride} of its {size}px input")
    return found[-1]
