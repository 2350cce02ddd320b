"""Classifier head: embedding -> dense(relu) -> dense(softmax), served in numpy.

Its Keras training (phase 1 on embeddings, phase 2 fine-tuning the top of the backbone) lives in
`edged_plugins.classifier_train`, which only the TensorFlow worker imports.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import Field

from edged.errors import HeadError
from edged.heads import Head, HeadOptions, Prediction, TrainRequest, hookimpl
from edged.heads.curves import plot_curves


class ClassifierOptions(HeadOptions):
    hidden: int = Field(128, ge=1, le=4096)
    dropout: float = Field(0.2, ge=0, lt=1)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    epochs: int = Field(60, ge=1, le=10_000)
    patience: int = Field(10, ge=1)
    val_fraction: float = Field(0.2, gt=0, lt=1)
    min_per_class: int = Field(2, ge=2)
    seed: int = 0
    augment_copies: int = Field(4, ge=0, le=64, description="augmented copies of each training frame, embedded by the backbone")
    refit_all: bool = Field(True, description="after early stopping picks the epochs, retrain on train + validation rows")
    # phase 2: fine-tune the top of the backbone on stored frames
    fine_tune_layers: int = Field(0, ge=0, le=1000)
    fine_tune_epochs: int = Field(20, ge=1)
    fine_tune_learning_rate: float = Field(2e-4, gt=0)  # bench fewshot: all 27 conv layers, 30 epochs -> 0.955 at 20 shots
    fine_tune_batch_size: int = Field(16, ge=1)


class ClassifierHead(Head):
    """Dense softmax classifier on embeddings; optional fine-tuning of the backbone's top layers."""

    name = "classifier"
    kind = "classes"
    Options = ClassifierOptions
    trainer = "edged_plugins.classifier_train"

    def __init__(self, options: ClassifierOptions | None = None):
        super().__init__(options)
        self.weights: list[np.ndarray] = []
        self._classes: list[str] = []
        self.metrics: dict = {}
        self.history: dict = {}

    @classmethod
    def trains_in_worker(cls, request: TrainRequest) -> bool:
        return True

    @property
    def ready(self) -> bool:
        return bool(self.weights)

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    def set_state(self, weights: list[np.ndarray], classes: list[str], metrics: dict, history: dict | None = None) -> None:
        self.weights = [np.asarray(w, np.float32) for w in weights]
        self._classes, self.metrics, self.history = list(classes), dict(metrics), dict(history or {})

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        w1, b1, w2, b2 = self.weights
        hidden = np.maximum(np.atleast_2d(embeddings).astype(np.float32) @ w1 + b1, 0.0)
        logits = hidden @ w2 + b2
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, embedding: np.ndarray) -> Prediction:
        if not self.ready:
            raise HeadError("classifier is not trained: send a train command")
        p = self.probabilities(np.reshape(embedding, (1, -1)))[0]
        best = int(np.argmax(p))
        return Prediction(self._classes[best], float(p[best]), {c: float(v) for c, v in zip(self._classes, p)})

    def forget(self, label: str) -> None:
        if label in self._classes:
            self.weights = []  # cannot unlearn one class: retrain

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "head.npz", *self.weights)
        (folder / "head.json").write_text(json.dumps({"head": self.name, "classes": self._classes, "metrics": self.metrics,
                                                      "options": self.options.model_dump()}, indent=2, default=str))
        if self.history:
            plot_curves(self.history, folder / "training.png", "classifier head")

    def load(self, folder: Path | None) -> bool:
        if folder is None or not (folder / "head.npz").is_file():
            return False
        try:
            with np.load(folder / "head.npz") as data:
                weights = [data[f"arr_{i}"] for i in range(len(data.files))]
            meta = json.loads((folder / "head.json").read_text())
        except Exception as e:
            raise HeadError(f"classifier state in {folder} is unreadable: {e}") from e
        if len(weights) != 4 or weights[2].shape[1] != len(meta["classes"]):
            raise HeadError(f"classifier state in {folder} does not match its classes")
        self.set_state(weights, meta["classes"], meta.get("metrics", {}))
        return True


@hookimpl
def register_heads(register):
    register(ClassifierHead)
