"""Generic Keras pieces heads build on: a trained model's weights kept and read back, unfreezing the top of the
backbone.

A trained model is kept as its weights alone (`fused.weights.h5`): reading it back builds the architecture from
this code and loads arrays into it, so a version folder that came from another machine can never name code to
run (a `.keras` archive can, through a Lambda layer or a custom object).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import h5py
import keras
import numpy as np

from ..state.arrays import ArraysError

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
    """`model` (built here, from this code) with the version's trained weights; its architecture is never read, and
    the file's arrays are read only when they unpack to about what the model holds."""
    path = fused_weights(folder)
    if path is None:
        raise FileNotFoundError(f"{folder} holds no trained weights")
    if path.name == FUSED_WEIGHTS:
        expected = sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights)
        weights_bytes(path, 2 * expected + (1 << 20))
    model.load_weights(path)  # a .keras archive is read for its weights file only (keras' load_weights_only)
    return model


def weights_bytes(path: Path, max_bytes: int) -> int:
    """The bytes every dataset of a weights file unpacks to (shape × dtype, from its metadata alone); ArraysError
    past `max_bytes`: 13.6 KB of gzip chunks took a worker to 4.66 GB before."""
    total = 0

    def visit(name, item):
        nonlocal total
        if isinstance(item, h5py.Dataset):
            if item.dtype.hasobject:
                raise ArraysError(f"{path.name}: {name} is an object dataset")
            total += int(np.prod(item.shape, dtype=np.float64)) * item.dtype.itemsize
            if total > max_bytes:
                raise ArraysError(f"{path.name}: its datasets unpack to more than {max_bytes} bytes (at {name}), "
                                  f"more than the model holds")

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except OSError as e:
        raise ArraysError(f"{path.name}: not a weights file ({e})") from None
    return total



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
