"""Generic Keras pieces heads build on: a trained model's weights kept and read back, unfreezing the top of the
backbone.

A trained model is kept as its weights alone (`fused.weights.h5`): reading it back builds the architecture from
this code and loads arrays into it, so a version folder that came from another machine can never name code to
run (a `.keras` archive can, through a Lambda layer or a custom object).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import keras

FUSED_WEIGHTS = "fused.weights.h5"
LEGACY_FUSED = "fused.keras"  # versions trained before weights-only files: only their weights are read


def save_fused(model: keras.Model, folder: Path) -> None:
    model.save_weights(Path(folder) / FUSED_WEIGHTS)


def fused_weights(folder: Path) -> Optional[Path]:
    """The trained weights a version holds, if any."""
    for name in (FUSED_WEIGHTS, LEGACY_FUSED):
        if (Path(folder) / name).is_file():
            return Path(folder) / name
    return None


def load_fused(model: keras.Model, folder: Path) -> keras.Model:
    """`model` (built here, from this code) with the version's trained weights; its architecture is never read."""
    path = fused_weights(folder)
    if path is None:
        raise FileNotFoundError(f"{folder} holds no trained weights")
    model.load_weights(path)  # a .keras archive is read for its weights file only (keras' load_weights_only)
    return model



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
