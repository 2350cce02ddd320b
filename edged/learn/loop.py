"""The one epoch loop every Keras training in edged goes through.

A plain `train_on_batch` loop: for a few hundred rows Keras' `fit()` spends most of its time
building a data pipeline per epoch, so this is several times faster for the same result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

import numpy as np

from ..heads.base import Progress

Batches = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


@dataclass
class Best:
    """The best weights seen so far by a monitored figure; shared across phases when training has two."""

    monitor: str
    mode: str = "max"  # "max": higher is better (ties go to the later epoch); "min": lower, by at least 1e-4
    value: float = field(default=float("nan"))
    weights: Optional[list] = None

    def offer(self, value: float, model) -> bool:
        if np.isnan(self.value):
            better = True
        elif self.mode == "max":
            better = value >= self.value
        else:
            better = value < self.value - 1e-4
        if better:
            self.value, self.weights = value, model.get_weights()
        return better


class Last(Best):
    """Keeps the weights of the last epoch (when the number of epochs was itself chosen elsewhere)."""

    def offer(self, value: float, model) -> bool:
        self.value = value
        return True


def run_epochs(model, epochs: int, batches: Batches, evaluate: Callable[[], dict], best: Best, phase: str,
               progress: Progress = None, patience: Optional[int] = None) -> dict[str, list[float]]:
    """Train `epochs` epochs (or until `patience` epochs without improvement), then restore the best weights.

    `batches()` yields (x, y) for one epoch; `evaluate()` returns validation figures, which must
    include `best.monitor`. Returns the per-epoch history.
    """
    history: dict[str, list[float]] = {}
    waited = 0
    for epoch in range(epochs):
        total, count, correct, has_accuracy = 0.0, 0, 0.0, False
        for x, y in batches():
            out = model.train_on_batch(x, y, return_dict=True)
            total += float(out["loss"]) * len(x)
            if "accuracy" in out:
                has_accuracy = True
                correct += float(out["accuracy"]) * len(x)
            count += len(x)
        logs = {"loss": total / max(count, 1)}
        if has_accuracy:
            logs["accuracy"] = correct / max(count, 1)
        logs.update(evaluate())
        for key, value in logs.items():
            history.setdefault(key, []).append(float(value))
        if progress:
            progress({"phase": phase, "epoch": epoch + 1, "epochs": epochs, **{k: round(float(v), 4) for k, v in logs.items()}})
        if best.offer(float(logs[best.monitor]), model):
            waited = 0
        else:
            waited += 1
            if patience is not None and waited >= patience:
                break
    if best.weights is not None:
        model.set_weights(best.weights)
    return history


def shuffled_batches(n: int, batch_size: int, rng: np.random.Generator, make: Callable[[np.ndarray], tuple]) -> Batches:
    """Batches over a fresh permutation of n rows each epoch; `make(indices)` builds (x, y)."""

    def batches():
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            yield make(order[start:start + batch_size])

    return batches
