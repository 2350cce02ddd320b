"""Keras training of the classifier head (imported only by the TensorFlow worker).

Phase 1 trains the dense head on frozen-backbone embeddings (equivalent to a frozen base, much
cheaper); phase 2 optionally unfreezes the top of the backbone and trains backbone + head on
augmented frames, and the version is then served as one fused TFLite model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Optional

import keras
import numpy as np

from edged.errors import HeadError
from edged.heads.base import Progress
from edged.heads.splits import balanced_split
from edged.learn.context import ExportSpec, TrainContext
from edged.learn.finetune import fused_model, set_trainable_top
from edged.learn.loop import Best, run_epochs, shuffled_batches
from edged.sources.augment import augment_batch
from edged_plugins.classifier import ClassifierHead, ClassifierOptions


def classifier_head(dim: int, n_classes: int, opts: ClassifierOptions) -> keras.Model:
    inputs = keras.Input((dim,), name="embedding")
    x = keras.layers.Dense(opts.hidden, activation="relu", name="head_hidden")(inputs)
    x = keras.layers.Dropout(opts.dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="head_probs")(x)
    return keras.Model(inputs, outputs, name="classifier_head")


def _compiled_head(dim: int, n_classes: int, opts: ClassifierOptions) -> keras.Model:
    model = classifier_head(dim, n_classes, opts)
    model.compile(optimizer=keras.optimizers.Adam(opts.learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


@dataclass
class TrainResult:
    model: keras.Model
    classes: list[str]
    history: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    val_index: np.ndarray = field(default_factory=lambda: np.zeros(0, int))


def _fit_head(model, x, y, vx, vy, opts: ClassifierOptions, epochs: int, patience: int, progress: Progress) -> dict:
    rng = np.random.default_rng(opts.seed)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    def evaluate() -> dict:
        probs = np.asarray(model(vx, training=False))
        return {"val_loss": float(loss_fn(vy, probs)), "val_accuracy": float(np.mean(np.argmax(probs, 1) == vy))}

    batches = shuffled_batches(len(x), opts.batch_size, rng, lambda idx: (x[idx], y[idx]))
    return run_epochs(model, epochs, batches, evaluate, Best("val_loss", "min"), "head", progress, patience)


def train_classifier_head(embeddings: np.ndarray, labels: np.ndarray, opts: ClassifierOptions, progress: Progress = None,
                          augmented: Optional[Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]] = None) -> TrainResult:
    """Phase 1. `augmented(train_indices)` may return extra (embeddings, row indices into `labels`) made from
    augmented copies of the training frames; validation stays on original frames."""
    keras.utils.set_random_seed(opts.seed)
    classes = sorted(set(labels.tolist()))
    y = np.array([classes.index(l) for l in labels.tolist()])
    train, val = balanced_split(labels, opts.val_fraction, opts.min_per_class, opts.seed)
    x_train, y_train = embeddings[train], y[train]
    if augmented is not None:
        extra, rows = augmented(train)
        x_train, y_train = np.concatenate([x_train, extra]), np.concatenate([y_train, y[rows]])
    model = _compiled_head(embeddings.shape[1], len(classes), opts)
    history = _fit_head(model, x_train, y_train, embeddings[val], y[val], opts, opts.epochs, opts.patience, progress)
    val_acc = float(np.mean(np.argmax(np.asarray(model(embeddings[val], training=False)), 1) == y[val]))
    if opts.refit_all:
        # The split chose the epoch count; the final head also learns from the validation rows.
        best_epoch = int(np.argmin(history["val_loss"])) + 1
        model = _compiled_head(embeddings.shape[1], len(classes), opts)
        _fit_head(model, np.concatenate([x_train, embeddings[val]]), np.concatenate([y_train, y[val]]),
                  embeddings[val], y[val], opts, best_epoch, best_epoch + 1, None)
    metrics = {"val_accuracy": round(val_acc, 4), "epochs_run": len(history["loss"]),
               "train_examples": int(len(train)), "augmented_examples": int(len(x_train) - len(train)),
               "val_examples": int(len(val))}
    return TrainResult(model, classes, history, metrics, val)


def fine_tune(fused: keras.Model, backbone: keras.Model, images: np.ndarray, y: np.ndarray, val_images: np.ndarray,
              val_y: np.ndarray, opts: ClassifierOptions, scale: float, offset: float, progress: Progress = None) -> dict:
    """Phase 2: unfreeze the top of the backbone, re-compile (trainable changed), lower LR, augmented frames."""
    opened = set_trainable_top(backbone, opts.fine_tune_layers)
    fused.compile(optimizer=keras.optimizers.Adam(opts.fine_tune_learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(opts.seed + 1)
    val_x = val_images.astype(np.float32) * scale + offset

    def make(idx):
        batch, _ = augment_batch(images[idx], None, rng)
        return batch.astype(np.float32) * scale + offset, y[idx]

    def evaluate() -> dict:
        return {"val_accuracy": float(np.mean(np.argmax(fused.predict(val_x, verbose=0, batch_size=32), 1) == val_y))}

    best = Best("val_accuracy", "max")
    history = run_epochs(fused, opts.fine_tune_epochs, shuffled_batches(len(images), opts.fine_tune_batch_size, rng, make),
                         evaluate, best, "fine_tune", progress)
    return {"fine_tuned_layers": sorted(opened), "fine_tune_val_accuracy": round(best.value, 4),
            "fine_tune_history": history}


def train(context: TrainContext, progress: Progress = None) -> dict:
    opts = context.requested_options()
    examples = context.examples
    augmented = None
    if opts.augment_copies:
        augmented = lambda rows: context.augmented_embeddings(examples.ids, rows, opts.augment_copies, opts.seed)
    result = train_classifier_head(examples.embeddings, examples.labels, opts, progress, augmented)
    head = ClassifierHead(opts)
    metrics = dict(result.metrics)
    if opts.fine_tune_layers:
        images = context.pixels(examples.ids)
        y = np.array([result.classes.index(l) for l in examples.labels.tolist()])
        val = result.val_index
        train_rows = np.setdiff1d(np.arange(len(y)), val)
        backbone = context.keras_backbone()
        fused = fused_model(backbone, result.model)
        tuned = fine_tune(fused, backbone, images[train_rows], y[train_rows], images[val], y[val], opts,
                          context.backbone.scale, context.backbone.offset, progress)
        tuned.pop("fine_tune_history")
        metrics.update(tuned)
        fused.save(context.folder / "fused.keras")
        spec = ExportSpec(fused, result.classes, {"val_accuracy": metrics["fine_tune_val_accuracy"]})
        context.write_model(context.folder, spec, "float32", images[val], progress=progress)
    head.set_state(result.model.get_weights(), result.classes, metrics, result.history)
    head.save(context.folder)
    return metrics


def export_model(context: TrainContext) -> ExportSpec:
    folder = context.current_version()
    if folder is None:
        raise HeadError("head 'classifier' has no trained version: train it first")
    meta = json.loads((folder / "head.json").read_text())
    labels = meta["classes"]
    if (folder / "fused.keras").is_file():
        model = keras.models.load_model(folder / "fused.keras", compile=False, safe_mode=False)
    else:
        head = ClassifierHead(context.options)
        head.load(folder)
        keras_head = classifier_head(head.weights[0].shape[0], len(labels), context.options)
        keras_head.set_weights(head.weights)
        model = fused_model(context.keras_backbone(), keras_head)
    examples = context.examples
    if len(set(examples.labels.tolist())) > 1:
        _, val = balanced_split(examples.labels, 0.2, 1, 0)
        check_ids = examples.ids[val]
    else:
        check_ids = examples.ids
    return ExportSpec(model, labels, meta.get("metrics", {}), check_ids)
