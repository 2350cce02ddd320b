"""Classifier head: embedding -> dense(relu) -> dense(softmax), trained with Keras, served with numpy."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from edged.heads import Head, HeadError, Prediction
from edged.hookspecs import hookimpl
from edged.learn_options import ClassifierOptions
from edged.store import Examples


class ClassifierHead(Head):
    """Dense softmax classifier on embeddings; optional fine-tuning of the backbone's top layers."""

    name = "classifier"
    kind = "classes"
    Options = ClassifierOptions
    needs_tensorflow = True

    def __init__(self, options: ClassifierOptions | None = None):
        super().__init__(options)
        self.weights: list[np.ndarray] = []
        self._classes: list[str] = []
        self.metrics: dict = {}

    @property
    def ready(self) -> bool:
        return bool(self.weights)

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

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

    def fit(self, examples: Examples, progress=None, context=None, epochs: int | None = None,
            fine_tune_layers: int | None = None, **_) -> dict:
        from edged import learn  # TensorFlow: only in the training process

        opts = replace(self.options)
        if epochs:
            opts.epochs = epochs
        if fine_tune_layers is not None:
            opts.fine_tune_layers = fine_tune_layers
        try:
            augmented = None
            if opts.augment_copies and context is not None:
                augmented = lambda rows: context.augmented_embeddings(examples.ids, rows, opts.augment_copies, opts.seed)
            result = learn.train_classifier_head(examples.embeddings, examples.labels, opts, progress, augmented)
        except learn.LearnError as e:
            raise HeadError(str(e)) from None
        self.weights = [np.asarray(w, np.float32) for w in result.model.get_weights()]
        self._classes = result.classes
        self.metrics = dict(result.metrics)
        self.history = result.history
        if opts.fine_tune_layers and context is not None:
            self.metrics.update(context.fine_tune_classifier(self, result, opts, progress))
        return self.metrics

    def keras_head(self):
        """The trained head as a Keras model (for fusion with the backbone and export)."""
        from edged import learn

        model = learn.classifier_head(self.weights[0].shape[0], len(self._classes), self.options)
        model.set_weights(self.weights)
        return model

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / "head.npz", *self.weights)
        (folder / "head.json").write_text(json.dumps({"head": self.name, "classes": self._classes, "metrics": self.metrics,
                                                      "options": asdict(self.options)}, indent=2, default=str))
        if getattr(self, "history", None):
            from edged.learn import plot_curves

            plot_curves(self.history, folder / "training.png", "classifier head")

    def predict_pixels(self, pixels: np.ndarray) -> Prediction:
        return self.fused.predict(pixels)

    def load(self, folder: Path | None) -> bool:
        if folder is None or not (folder / "head.npz").is_file():
            return False
        if (folder / "model.tflite").is_file():  # fine-tuned: backbone and head serve as one model
            from edged.fused import FusedModel

            self.fused = FusedModel(folder)
            self.takes_pixels = True
        try:
            with np.load(folder / "head.npz") as data:
                weights = [data[f"arr_{i}"] for i in range(len(data.files))]
            meta = json.loads((folder / "head.json").read_text())
        except Exception as e:
            raise HeadError(f"classifier state in {folder} is unreadable: {e}") from e
        if len(weights) != 4 or weights[2].shape[1] != len(meta["classes"]):
            raise HeadError(f"classifier state in {folder} does not match its classes")
        self.weights, self._classes, self.metrics = weights, meta["classes"], meta.get("metrics", {})
        return True


@hookimpl
def register_heads(register):
    register(ClassifierHead)
