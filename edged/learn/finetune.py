"""Generic Keras pieces heads build on: backbone + head as one model, unfreezing the top of the backbone."""

from __future__ import annotations

import keras


def fused_model(backbone: keras.Model, head: keras.Model, name: str = "fused") -> keras.Model:
    """Backbone and head as one model taking scaled images."""
    inputs = keras.Input(backbone.input_shape[1:], name="image")
    return keras.Model(inputs, head(backbone(inputs)), name=name)


def set_trainable_top(backbone: keras.Model, n_layers: int) -> list[str]:
    """Freeze the backbone, then unfreeze its top `n_layers` layers with weights (batch norm stays frozen)."""
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = False
    weighted = [l for l in backbone.layers if l.weights and not isinstance(l, keras.layers.BatchNormalization)]
    opened = weighted[-n_layers:] if n_layers > 0 else []
    for layer in opened:
        layer.trainable = True
    return [l.name for l in opened]
