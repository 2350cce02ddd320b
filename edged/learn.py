"""Keras training: heads on stored embeddings, two-phase fine-tuning, box regression. Imports TensorFlow."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from .augment import augment_batch  # noqa: E402
from .learn_options import BoxOptions, ClassifierOptions  # noqa: E402,F401

log = logging.getLogger(__name__)

Progress = Optional[Callable[[dict], None]]


class LearnError(Exception):
    """Training cannot start or went wrong; the message says what to do."""


def balanced_split(labels: np.ndarray, val_fraction: float = 0.2, min_per_class: int = 2, seed: int = 0):
    """Indices (train, val) with every class in both parts, about `val_fraction` of each class in val."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    short = {str(c): int(n) for c, n in zip(classes, counts) if n < min_per_class}
    if short:
        raise LearnError(f"need at least {min_per_class} examples per class for a train/validation split; short: {short}")
    if len(classes) < 2:
        raise LearnError(f"need at least 2 classes to train a classifier, have {[str(c) for c in classes]}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for c in classes:
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = min(max(1, int(round(len(idx) * val_fraction))), len(idx) - 1)
        val.extend(idx[:n_val])
        train.extend(idx[n_val:])
    return np.array(sorted(train)), np.array(sorted(val))


def classifier_head(dim: int, n_classes: int, opts: ClassifierOptions) -> keras.Model:
    inputs = keras.Input((dim,), name="embedding")
    x = keras.layers.Dense(opts.hidden, activation="relu", name="head_hidden")(inputs)
    x = keras.layers.Dropout(opts.dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="head_probs")(x)
    return keras.Model(inputs, outputs, name="classifier_head")


@dataclass
class TrainResult:
    model: keras.Model
    classes: list[str]
    history: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    val_index: np.ndarray = field(default_factory=lambda: np.zeros(0, int))


def train_classifier_head(embeddings: np.ndarray, labels: np.ndarray, opts: ClassifierOptions, progress: Progress = None,
                          augmented: Optional[Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]] = None) -> TrainResult:
    """Phase 1: dense head on frozen-backbone embeddings (equivalent to a frozen base, much cheaper).

    `augmented(train_indices)` may return extra (embeddings, row indices into `labels`) made from
    augmented copies of the training frames; validation stays on original frames.
    """
    keras.utils.set_random_seed(opts.seed)
    classes = sorted(set(labels.tolist()))
    y = np.array([classes.index(l) for l in labels.tolist()])
    train, val = balanced_split(labels, opts.val_fraction, opts.min_per_class, opts.seed)
    x_train, y_train = embeddings[train], y[train]
    if augmented is not None:
        extra, rows = augmented(train)
        x_train, y_train = np.concatenate([x_train, extra]), np.concatenate([y_train, y[rows]])
    model = classifier_head(embeddings.shape[1], len(classes), opts)
    model.compile(optimizer=keras.optimizers.Adam(opts.learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = _fit_small(model, x_train, y_train, embeddings[val], y[val], opts, progress)
    val_acc = float(np.mean(np.argmax(np.asarray(model(embeddings[val], training=False)), 1) == y[val]))
    if opts.refit_all:
        # The split chose the epoch count; the final head also learns from the validation rows.
        best_epoch = int(np.argmin(history["val_loss"])) + 1
        model = classifier_head(embeddings.shape[1], len(classes), opts)
        model.compile(optimizer=keras.optimizers.Adam(opts.learning_rate), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        everything = replace(opts, epochs=best_epoch, patience=best_epoch + 1)
        _fit_small(model, np.concatenate([x_train, embeddings[val]]), np.concatenate([y_train, y[val]]),
                   embeddings[val], y[val], everything, None)
    metrics = {"val_accuracy": round(val_acc, 4), "epochs_run": len(history["loss"]),
               "train_examples": int(len(train)), "augmented_examples": int(len(x_train) - len(train)),
               "val_examples": int(len(val))}
    return TrainResult(model, classes, history, metrics, val)


def _fit_small(model, x, y, vx, vy, opts, progress: Progress) -> dict:
    """Mini-batch Adam with early stopping on validation loss, best weights restored.

    A plain train_on_batch loop: for a few hundred rows, Keras' fit() spends most of its time
    building a data pipeline per epoch, so this is several times faster for the same result.
    """
    rng = np.random.default_rng(opts.seed)
    history: dict[str, list[float]] = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    best_loss, best_weights, waited = np.inf, model.get_weights(), 0
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    for epoch in range(opts.epochs):
        order = rng.permutation(len(x))
        losses, correct = [], 0
        for start in range(0, len(order), opts.batch_size):
            idx = order[start:start + opts.batch_size]
            out = model.train_on_batch(x[idx], y[idx], return_dict=True)
            losses.append(float(out["loss"]) * len(idx))
            correct += float(out["accuracy"]) * len(idx)
        probs = np.asarray(model(vx, training=False))
        val_loss = float(loss_fn(vy, probs))
        logs = {"loss": sum(losses) / len(x), "accuracy": correct / len(x), "val_loss": val_loss,
                "val_accuracy": float(np.mean(np.argmax(probs, 1) == vy))}
        for k, v in logs.items():
            history[k].append(v)
        if progress:
            progress({"phase": "head", "epoch": epoch + 1, "epochs": opts.epochs, **{k: round(v, 4) for k, v in logs.items()}})
        if val_loss < best_loss - 1e-4:
            best_loss, best_weights, waited = val_loss, model.get_weights(), 0
        else:
            waited += 1
            if waited >= opts.patience:
                break
    model.set_weights(best_weights)
    return history


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


def fine_tune(fused: keras.Model, backbone: keras.Model, images: np.ndarray, y: np.ndarray, val_images: np.ndarray,
              val_y: np.ndarray, opts: ClassifierOptions, scale: float, offset: float, progress: Progress = None) -> dict:
    """Phase 2: unfreeze the top of the backbone, re-compile (trainable changed), lower LR, augmented frames."""
    opened = set_trainable_top(backbone, opts.fine_tune_layers)
    fused.compile(optimizer=keras.optimizers.Adam(opts.fine_tune_learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(opts.seed + 1)
    val_x = val_images.astype(np.float32) * scale + offset
    best, best_weights, history = -1.0, None, []
    for epoch in range(opts.fine_tune_epochs):
        order = rng.permutation(len(images))
        losses = []
        for start in range(0, len(order), opts.fine_tune_batch_size):
            idx = order[start:start + opts.fine_tune_batch_size]
            batch, _ = augment_batch(images[idx], None, rng)
            out = fused.train_on_batch(batch.astype(np.float32) * scale + offset, y[idx], return_dict=True)
            losses.append(float(out["loss"]))
        val_acc = float(np.mean(np.argmax(fused.predict(val_x, verbose=0, batch_size=32), 1) == val_y))
        history.append({"loss": float(np.mean(losses)), "val_accuracy": val_acc})
        if progress:
            progress({"phase": "fine_tune", "epoch": epoch + 1, "epochs": opts.fine_tune_epochs,
                      "loss": round(history[-1]["loss"], 4), "val_accuracy": round(val_acc, 4)})
        if val_acc >= best:
            best, best_weights = val_acc, fused.get_weights()
    if best_weights is not None:
        fused.set_weights(best_weights)
    return {"fine_tuned_layers": sorted(opened), "fine_tune_val_accuracy": round(best, 4), "fine_tune_history": history}


def plot_curves(history: dict, path, title: str = "training") -> None:
    """A small PNG of loss/accuracy per epoch, drawn with OpenCV (no plotting library needed)."""
    import cv2

    w, h, pad = 640, 360, 40
    img = np.full((h, w, 3), 255, np.uint8)
    series = [(k, v) for k, v in history.items() if v and isinstance(v[0], (int, float))]
    colours = [(200, 60, 20), (20, 120, 220), (40, 160, 40), (160, 40, 160), (0, 0, 0)]
    top = max(max(v) for _, v in series) if series else 1.0
    top = max(top, 1.0)
    n = max((len(v) for _, v in series), default=1)
    cv2.rectangle(img, (pad, pad), (w - pad, h - pad), (0, 0, 0), 1)
    for i, (name, values) in enumerate(series):
        pts = [(int(pad + (w - 2 * pad) * j / max(n - 1, 1)), int(h - pad - (h - 2 * pad) * v / top)) for j, v in enumerate(values)]
        cv2.polylines(img, [np.array(pts, np.int32)], False, colours[i % len(colours)], 2)
        cv2.putText(img, name, (pad + 5 + 150 * (i % 4), 20 + 14 * (i // 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colours[i % len(colours)], 1)
    cv2.putText(img, f"{title}: {n} epochs, y max {top:.2f}", (pad, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    cv2.imwrite(str(path), img)


# -- box regression ---------------------------------------------------------------------------
def giou(a, b):
    """Generalised IoU of (…, 4) x1 y1 x2 y2 boxes (Keras ops, differentiable)."""
    ops = keras.ops
    ax1, ay1, ax2, ay2 = [a[..., i] for i in range(4)]
    bx1, by1, bx2, by2 = [b[..., i] for i in range(4)]
    ax1, ax2 = ops.minimum(ax1, ax2), ops.maximum(ax1, ax2)
    ay1, ay2 = ops.minimum(ay1, ay2), ops.maximum(ay1, ay2)
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    iw = ops.maximum(ops.minimum(ax2, bx2) - ops.maximum(ax1, bx1), 0.0)
    ih = ops.maximum(ops.minimum(ay2, by2) - ops.maximum(ay1, by1), 0.0)
    inter = iw * ih
    union = area_a + area_b - inter + 1e-7
    hull = (ops.maximum(ax2, bx2) - ops.minimum(ax1, bx1)) * (ops.maximum(ay2, by2) - ops.minimum(ay1, by1)) + 1e-7
    return inter / union - (hull - union) / hull


def box_loss(n_classes: int, kind: str):
    """Output = class part (n_classes probabilities, or 1 indicator when n_classes == 1) + 4 box numbers.

    "mse" is the seed's loss: class part and box both in [0, 1] units (the seed scaled the
    indicator by the canvas size because its box was in pixels; normalising the box instead
    weighs the two alike in the same way). "giou" adds 1 - GIoU, which optimises overlap directly.
    """
    ops = keras.ops

    def loss(y_true, y_pred):
        cls_true, cls_pred = y_true[:, :n_classes], y_pred[:, :n_classes]
        box_true, box_pred = y_true[:, n_classes:], y_pred[:, n_classes:]
        cls = ops.mean(ops.square(cls_true - cls_pred), axis=-1)
        box = ops.mean(ops.square(box_true - box_pred), axis=-1)
        if kind == "giou":
            return cls + box + (1.0 - giou(box_true, box_pred))
        return cls + box

    return loss


def box_model(feature_model: keras.Model, n_classes: int, opts: BoxOptions) -> keras.Model:
    """Spatial feature map -> 1x1 conv -> flatten -> dense -> [class probabilities | box]."""
    inputs = keras.Input(feature_model.input_shape[1:], name="image")
    fmap = feature_model(inputs)
    x = keras.layers.Conv2D(64, 1, activation="relu", name="box_reduce")(fmap)
    x = keras.layers.Flatten(name="box_flatten")(x)
    x = keras.layers.Dense(opts.hidden, activation="relu", name="box_hidden")(x)
    x = keras.layers.Dropout(0.1, name="box_dropout")(x)
    cls_act = "softmax" if n_classes > 1 else "sigmoid"
    cls = keras.layers.Dense(n_classes, activation=cls_act, name="box_class")(x)
    box = keras.layers.Dense(4, activation="sigmoid", name="box_coords")(x)
    return keras.Model(inputs, keras.layers.Concatenate(name="box_out")([cls, box]), name="box_regressor")


def box_targets(labels: list[str], classes: list[str], boxes: np.ndarray) -> np.ndarray:
    if len(classes) == 1:
        cls = np.ones((len(labels), 1), np.float32)
    else:
        cls = np.zeros((len(labels), len(classes)), np.float32)
        cls[np.arange(len(labels)), [classes.index(l) for l in labels]] = 1.0
    return np.concatenate([cls, np.asarray(boxes, np.float32)], axis=1)


def iou_numpy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)
    return inter / (area(a) + area(b) - inter + 1e-9)


def train_boxes(feature_model: keras.Model, images: np.ndarray, labels: list[str], boxes: np.ndarray,
                val_images: np.ndarray, val_labels: list[str], val_boxes: np.ndarray, scale: float, offset: float,
                opts: BoxOptions, progress: Progress = None) -> tuple[keras.Model, list[str], dict]:
    """Train frozen-base then (optionally) fine-tuned box regressor on frames; best epoch by val IoU."""
    keras.utils.set_random_seed(opts.seed)
    classes = sorted(set(labels))
    n = len(classes)
    model = box_model(feature_model, n, opts)
    rng = np.random.default_rng(opts.seed)
    val_x = val_images.astype(np.float32) * scale + offset
    history = {"loss": [], "val_iou": []}
    best = {"iou": -1.0, "weights": None}

    def run_phase(phase: str, epochs: int, lr: float):
        model.compile(optimizer=keras.optimizers.Adam(lr), loss=box_loss(n, opts.loss))
        for epoch in range(epochs):
            order = rng.permutation(len(images))
            losses = []
            for start in range(0, len(order), opts.batch_size):
                idx = order[start:start + opts.batch_size]
                batch, bxs = (augment_batch(images[idx], boxes[idx], rng) if opts.augment else (images[idx], boxes[idx]))
                y = box_targets([labels[i] for i in idx], classes, bxs)
                losses.append(float(model.train_on_batch(batch.astype(np.float32) * scale + offset, y)))
            pred = model.predict(val_x, verbose=0, batch_size=32)
            iou = float(iou_numpy(pred[:, n:], val_boxes).mean())
            history["loss"].append(float(np.mean(losses)))
            history["val_iou"].append(iou)
            if progress:
                progress({"phase": phase, "epoch": epoch + 1, "epochs": epochs, "loss": round(history["loss"][-1], 4),
                          "val_iou": round(iou, 4)})
            if iou >= best["iou"]:
                best["iou"], best["weights"] = iou, model.get_weights()

    feature_model.trainable = False
    run_phase("head", opts.epochs, opts.learning_rate)
    opened = []
    if opts.fine_tune_layers:
        model.set_weights(best["weights"])
        opened = set_trainable_top(feature_model, opts.fine_tune_layers)
        run_phase("fine_tune", opts.fine_tune_epochs, opts.fine_tune_learning_rate)
    model.set_weights(best["weights"])
    pred = model.predict(val_x, verbose=0, batch_size=32)
    metrics = {"val_iou": round(float(iou_numpy(pred[:, n:], val_boxes).mean()), 4), "fine_tuned_layers": opened,
               "train_examples": len(images), "val_examples": len(val_images), "loss": opts.loss}
    if n > 1:
        metrics["val_class_accuracy"] = round(float(np.mean([classes[i] for i in np.argmax(pred[:, :n], 1)] == np.array(val_labels))), 4)
    return model, classes, {"history": history, **metrics}
