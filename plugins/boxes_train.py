"""Keras training of the box head (imported only by the TensorFlow worker): class + box from the feature map."""

from __future__ import annotations

import json

import keras
import numpy as np

from edged.errors import HeadError
from edged.heads.base import Progress
from edged.heads.curves import plot_curves
from edged.learn.context import ExportSpec, TrainContext
from edged.learn.finetune import set_trainable_top
from edged.learn.loop import Best, run_epochs, shuffled_batches
from edged.sources.augment import augment_batch
from edged_plugins.boxes import BoxOptions, iou_numpy


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
    best = Best("val_iou", "max")

    def make(idx):
        batch, bxs = augment_batch(images[idx], boxes[idx], rng) if opts.augment else (images[idx], boxes[idx])
        return batch.astype(np.float32) * scale + offset, box_targets([labels[i] for i in idx], classes, bxs)

    def evaluate() -> dict:
        pred = model.predict(val_x, verbose=0, batch_size=32)
        return {"val_iou": float(iou_numpy(pred[:, n:], val_boxes).mean())}

    batches = shuffled_batches(len(images), opts.batch_size, rng, make)
    feature_model.trainable = False
    model.compile(optimizer=keras.optimizers.Adam(opts.learning_rate), loss=box_loss(n, opts.loss))
    history = run_epochs(model, opts.epochs, batches, evaluate, best, "head", progress)
    opened = []
    if opts.fine_tune_layers:
        opened = set_trainable_top(feature_model, opts.fine_tune_layers)
        model.compile(optimizer=keras.optimizers.Adam(opts.fine_tune_learning_rate), loss=box_loss(n, opts.loss))
        more = run_epochs(model, opts.fine_tune_epochs, batches, evaluate, best, "fine_tune", progress)
        history = {k: history.get(k, []) + more.get(k, []) for k in set(history) | set(more)}
    pred = model.predict(val_x, verbose=0, batch_size=32)
    metrics = {"val_iou": round(float(iou_numpy(pred[:, n:], val_boxes).mean()), 4), "fine_tuned_layers": opened,
               "train_examples": len(images), "val_examples": len(val_images), "loss": opts.loss}
    if n > 1:
        metrics["val_class_accuracy"] = round(float(np.mean([classes[i] for i in np.argmax(pred[:, :n], 1)] == np.array(val_labels))), 4)
    return model, classes, {"history": history, **metrics}


def train(context: TrainContext, progress: Progress = None) -> dict:
    opts = context.requested_options()
    images, boxes, labels = context.frames_with_boxes()
    if len(images) < 5:
        raise HeadError(f"need at least 5 frames with boxes to train, have {len(images)}")
    order = np.random.default_rng(opts.seed).permutation(len(images))
    n_val = max(1, int(round(len(images) * opts.val_fraction)))
    val, train_rows = order[:n_val], order[n_val:]
    layer = None if opts.feature_layer == "auto" else opts.feature_layer
    bb = context.backbone
    model, classes, metrics = train_boxes(
        context.feature_map(layer), images[train_rows], [labels[i] for i in train_rows], boxes[train_rows],
        images[val], [labels[i] for i in val], boxes[val], bb.scale, bb.offset, opts, progress)
    history = metrics.pop("history")
    model.save(context.folder / "fused.keras")
    context.write_model(context.folder, ExportSpec(model, classes, metrics), "float32", images[val], progress=progress)
    (context.folder / "head.json").write_text(json.dumps({"head": "boxes", "classes": classes, "metrics": metrics,
                                                          "options": opts.model_dump()}, indent=2))
    plot_curves(history, context.folder / "training.png", "box regressor")
    return metrics


def export_model(context: TrainContext) -> ExportSpec:
    folder = context.current_version()
    if folder is None or not (folder / "fused.keras").is_file():
        raise HeadError("head 'boxes' has no trained version: train it first")
    meta = json.loads((folder / "head.json").read_text())
    model = keras.models.load_model(folder / "fused.keras", compile=False, safe_mode=False)
    with_box = np.array([i for i, b in zip(context.examples.ids, context.examples.boxes) if b is not None])
    return ExportSpec(model, meta["classes"], meta.get("metrics", {}), with_box if len(with_box) else None)
