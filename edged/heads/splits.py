"""Class-balanced splits of stored examples, for heads that validate what they learn. numpy only."""

from __future__ import annotations

import numpy as np

from ..errors import TrainingError


def balanced_split(labels: np.ndarray, val_fraction: float = 0.2, min_per_class: int = 2, seed: int = 0):
    """Indices (train, val) with every class in both parts, about `val_fraction` of each class in val."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    short = {str(c): int(n) for c, n in zip(classes, counts) if n < min_per_class}
    if short:
        raise TrainingError(f"need at least {min_per_class} examples per class for a train/validation split; short: {short}")
    if len(classes) < 2:
        raise TrainingError(f"need at least 2 classes to train a classifier, have {[str(c) for c in classes]}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in classes:
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(max(1, int(round(len(idx) * val_fraction))), len(idx) - 1)
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.array(sorted(train)), np.array(sorted(val))


def validation_splits(n: int, folds: int, split_above: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, val) index pairs: k folds for small sets (every frame validates once), one held-out fifth from
    `split_above` frames on."""
    if n < 4:
        raise TrainingError(f"need at least 4 frames to train and validate, have {n}")
    order = np.random.default_rng(seed).permutation(n)
    if n >= split_above:
        n_val = max(1, n // 5)
        return [(np.sort(order[n_val:]), np.sort(order[:n_val]))]
    parts = np.array_split(order, min(folds, n))
    return [(np.sort(np.concatenate([p for j, p in enumerate(parts) if j != i])), np.sort(part))
            for i, part in enumerate(parts)]
