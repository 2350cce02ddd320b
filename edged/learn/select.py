"""Choosing how to train a head on frames by validation only: which loss, how many epochs, fine-tune or not.

Every candidate (loss x frozen / fine-tuned top) is trained on each split's training part and scored
on its validation part; the candidate with the best mean score wins. With one split (large sets)
the winner's weights from that split are kept; with k folds (small sets) it is trained again on all
frames for the number of epochs the folds found best. The test data of a benchmark never enters here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import keras
import numpy as np

from ..heads.base import Progress
from .finetune import set_trainable_top
from .loop import Batches, Best, run_epochs


@dataclass
class Plan:
    losses: list[str]
    epochs: int
    learning_rate: float
    fine_tune_layers: int = 0
    fine_tune_epochs: int = 0
    fine_tune_learning_rate: float = 1e-4
    seed: int = 0


@dataclass
class Choice:
    loss: str
    fine_tuned: bool
    score: float
    epochs: int
    fine_tune_epochs: int
    candidates: dict = field(default_factory=dict)  # "loss/frozen" -> mean validation score
    history: dict = field(default_factory=dict)


Build = Callable[[str], tuple[keras.Model, keras.Model]]  # loss -> (model, its feature model), not compiled


def _compile(model: keras.Model, loss_fn, rate: float) -> None:
    model.compile(optimizer=keras.optimizers.Adam(rate), loss=loss_fn)


def choose_and_train(build: Build, loss_fn: Callable[[str], Callable], batches: Callable[[np.ndarray, np.random.Generator], Batches],
                     score: Callable[[keras.Model, np.ndarray], float], splits: list[tuple[np.ndarray, np.ndarray]],
                     plan: Plan, progress: Progress = None) -> tuple[keras.Model, Choice]:
    """Train every candidate on every split, keep the best by mean validation score; returns the model to serve."""
    scores: dict[tuple[str, bool], list[float]] = {}
    epochs: dict[tuple[str, bool], list[int]] = {}
    kept: dict[tuple[str, bool], list] = {}
    history: dict[str, list[float]] = {}
    for fold, (train, val) in enumerate(splits):
        tag = f" fold {fold + 1}/{len(splits)}" if len(splits) > 1 else ""
        for loss in plan.losses:
            model, features = build(loss)
            features.trainable = False
            _compile(model, loss_fn(loss), plan.learning_rate)
            rng = np.random.default_rng(plan.seed + fold)
            evaluate = lambda: {"val": score(model, val)}
            best = Best("val")
            run = run_epochs(model, plan.epochs, batches(train, rng), evaluate, best, f"{loss} frozen{tag}", progress)
            scores.setdefault((loss, False), []).append(best.value)
            epochs.setdefault((loss, False), []).append(int(np.argmax(run["val"])) + 1)
            history.setdefault(f"{loss} frozen", []).extend(run["val"])
            if len(splits) == 1:
                kept[(loss, False)] = best.weights
            if plan.fine_tune_layers:
                set_trainable_top(features, plan.fine_tune_layers)
                _compile(model, loss_fn(loss), plan.fine_tune_learning_rate)
                tuned = Best("val")
                run = run_epochs(model, plan.fine_tune_epochs, batches(train, rng), evaluate, tuned,
                                 f"{loss} fine-tune{tag}", progress)
                scores.setdefault((loss, True), []).append(tuned.value)
                epochs.setdefault((loss, True), []).append(int(np.argmax(run["val"])) + 1)
                history.setdefault(f"{loss} fine-tune", []).extend(run["val"])
                if len(splits) == 1:
                    kept[(loss, True)] = tuned.weights
    means = {key: float(np.mean(v)) for key, v in scores.items()}
    # fine-tuning has to earn its place: it is chosen only when it beats its frozen start by a margin
    best_key = max(means, key=lambda k: (means[k] - (0.005 if k[1] else 0.0), not k[1]))
    loss, tuned = best_key
    choice = Choice(loss, tuned, means[best_key], int(round(np.mean(epochs[(loss, False)]))),
                    int(round(np.mean(epochs[(loss, True)]))) if tuned else 0,
                    {f"{l}/{'fine-tuned' if t else 'frozen'}": round(v, 4) for (l, t), v in means.items()}, history)
    model, features = build(loss)
    if len(splits) == 1:
        if tuned:
            set_trainable_top(features, plan.fine_tune_layers)
        model.set_weights(kept[best_key])
        return model, choice
    everything = np.sort(np.concatenate(splits[0]))
    rng = np.random.default_rng(plan.seed + 99)
    features.trainable = False
    _compile(model, loss_fn(loss), plan.learning_rate)
    run_epochs(model, choice.epochs, batches(everything, rng), lambda: {}, Best("loss", "min"), f"{loss} frozen, all frames", progress)
    if tuned:
        set_trainable_top(features, plan.fine_tune_layers)
        _compile(model, loss_fn(loss), plan.fine_tune_learning_rate)
        run_epochs(model, choice.fine_tune_epochs, batches(everything, rng), lambda: {}, Best("loss", "min"),
                   f"{loss} fine-tune, all frames", progress)
    return model, choice

