"""Keras training of the single-box head (imported only by the TensorFlow worker).

The box is built well-formed by the model itself: a centre (sigmoid) and a half-size (sigmoid,
at least MIN_HALF) give corners x1 = centre - half < x2 = centre + half for any input, trained or
not; `decode` clips them to the frame. Loss, epochs and fine-tuning are chosen on
validation (k folds on small sets), and a head that does not beat the training set's mean box on
validation is committed but not activated.
"""

from __future__ import annotations

import json
from typing import Callable

import keras
import numpy as np

from edged.errors import HeadError
from edged.heads.base import Progress
from edged.heads.curves import plot_curves
from edged.heads.geometry import iou_numpy
from edged.heads.splits import validation_splits
from edged.learn.context import BoxFrames, ExportSpec, TrainContext
from edged.learn.finetune import fused_weights, load_fused, save_fused
from edged.learn.loop import shuffled_batches
from edged.learn.select import Plan, choose_and_train
from edged.sources.augment import augment_batch
from edged_plugins.boxes import BoxOptions

MIN_HALF = 0.01  # half the least box side the model can output


def giou(a, b):
    """Generalised IoU of (…, 4) well-formed x1 y1 x2 y2 boxes (Keras ops, differentiable)."""
    ops = keras.ops
    ax1, ay1, ax2, ay2 = [a[..., i] for i in range(4)]
    bx1, by1, bx2, by2 = [b[..., i] for i in range(4)]
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    iw = ops.maximum(ops.minimum(ax2, bx2) - ops.maximum(ax1, bx1), 0.0)
    ih = ops.maximum(ops.minimum(ay2, by2) - ops.maximum(ay1, by1), 0.0)
    inter = iw * ih
    union = area_a + area_b - inter + 1e-7
    hull = (ops.maximum(ax2, bx2) - ops.minimum(ax1, bx1)) * (ops.maximum(ay2, by2) - ops.minimum(ay1, by1)) + 1e-7
    return inter / union - (hull - union) / hull


def box_term(kind: str, box_true, box_pred):
    """Per-row box loss: L1 of the corners (x4, so it weighs like IoU), plus 1 - GIoU for 'giou_l1'."""
    l1 = 4.0 * keras.ops.mean(keras.ops.abs(box_true - box_pred), axis=-1)
    return l1 + (1.0 - giou(box_true, box_pred)) if kind == "giou_l1" else l1


def box_loss(n_classes: int, kind: str):
    """Output = class part (probabilities, or one indicator for one class) + 4 corners."""
    ops = keras.ops

    def loss(y_true, y_pred):
        cls_true, cls_pred = y_true[:, :n_classes], ops.clip(y_pred[:, :n_classes], 1e-6, 1 - 1e-6)
        if n_classes == 1:
            cls = -ops.mean(cls_true * ops.log(cls_pred) + (1 - cls_true) * ops.log(1 - cls_pred), axis=-1)
        else:
            cls = -ops.sum(cls_true * ops.log(cls_pred), axis=-1)
        return cls + box_term(kind, y_true[:, n_classes:], y_pred[:, n_classes:])

    return loss


def corners(raw_centre, raw_size):
    """(cx, cy) and (w, h) logits -> ordered corners, built from stock layers (portable to TFLite).

    Not clipped here: a clip has no gradient outside [0, 1], and a box grown past the frame would
    stay stuck there. `decode` clips to the frame.
    """
    centre = keras.layers.Activation("sigmoid", name="box_centre")(raw_centre)
    half = keras.layers.Activation("sigmoid")(raw_size)
    half = keras.layers.Rescaling(0.5 - MIN_HALF, offset=MIN_HALF, name="box_half")(half)
    lo = keras.layers.Subtract(name="box_lo")([centre, half])
    hi = keras.layers.Add(name="box_hi")([centre, half])
    return keras.layers.Concatenate(name="box_corners")([lo, hi])


def box_model(feature_model: keras.Model, n_classes: int, hidden: int) -> keras.Model:
    """Spatial feature map -> 1x1 conv -> flatten -> dense -> [class probabilities | x1 y1 x2 y2]."""
    inputs = keras.Input(feature_model.input_shape[1:], name="image")
    x = keras.layers.Conv2D(64, 1, name="box_reduce")(feature_model(inputs))
    # normalised before the dense layers: raw ReLU6 maps flattened saturate the box sigmoids at the start
    x = keras.layers.BatchNormalization(name="box_norm")(x)
    x = keras.layers.ReLU(name="box_reduce_relu")(x)
    x = keras.layers.Flatten(name="box_flatten")(x)
    x = keras.layers.Dense(hidden, activation="relu", name="box_hidden")(x)
    x = keras.layers.Dropout(0.1, name="box_dropout")(x)
    cls = keras.layers.Dense(n_classes, activation="softmax" if n_classes > 1 else "sigmoid", name="box_class")(x)
    # zero kernels: every box starts as the centred quarter-frame and moves from there
    box = corners(keras.layers.Dense(2, kernel_initializer="zeros", name="box_centre_logits")(x),
                  keras.layers.Dense(2, kernel_initializer="zeros", name="box_size_logits")(x))
    return keras.Model(inputs, keras.layers.Concatenate(name="box_out")([cls, box]), name="box_regressor")


def targets(labels: list[str], classes: list[str], boxes: np.ndarray) -> np.ndarray:
    if len(classes) == 1:
        cls = np.ones((len(labels), 1), np.float32)
    else:
        cls = np.zeros((len(labels), len(classes)), np.float32)
        cls[np.arange(len(labels)), [classes.index(l) for l in labels]] = 1.0
    return np.concatenate([cls, np.asarray(boxes, np.float32)], axis=1)


def mean_box_iou(boxes: np.ndarray, splits) -> float:
    """The baseline: each split's training mean box, scored on its validation boxes."""
    return float(np.mean([iou_numpy(np.tile(boxes[tr].mean(0), (len(va), 1)), boxes[va]).mean() for tr, va in splits]))


def train_box_head(feature_factory, frames: BoxFrames, scale: float, offset: float, opts: BoxOptions,
                   progress: Progress = None) -> tuple[keras.Model, list[str], dict]:
    """Choose loss / epochs / fine-tuning on validation, train, and say whether the head beats the mean box."""
    keras.utils.set_random_seed(opts.seed)
    images = frames.pixels
    boxes = np.stack([b[0] for _, b in frames.objects]).astype(np.float32)
    labels = [names[0] for names, _ in frames.objects]
    classes = sorted(set(labels))
    n = len(classes)
    splits = validation_splits(len(images), opts.folds, opts.split_above, opts.seed)
    x_all = images.astype(np.float32) * scale + offset

    def batches(rows, rng):
        def make(idx):
            idx = rows[idx]
            batch, bxs = augment_batch(images[idx], boxes[idx], rng) if opts.augment else (images[idx], boxes[idx])
            return batch.astype(np.float32) * scale + offset, targets([labels[i] for i in idx], classes, bxs)
        return shuffled_batches(len(rows), opts.batch_size, rng, make)

    def score(model, rows):
        pred = model.predict(x_all[rows], verbose=0, batch_size=32)
        return float(iou_numpy(np.clip(pred[:, n:n + 4], 0, 1), boxes[rows]).mean())

    def build(loss):
        features = feature_factory()
        return box_model(features, n, opts.hidden), features

    plan = Plan(opts.losses, opts.epochs, opts.learning_rate, opts.fine_tune_layers, opts.fine_tune_epochs,
                opts.fine_tune_learning_rate, opts.seed)
    model, choice = choose_and_train(build, lambda kind: box_loss(n, kind), batches, score, splits, plan, progress)
    baseline = mean_box_iou(boxes, splits)
    beats = choice.score >= baseline + opts.min_gain
    metrics = {
        "val_iou": round(choice.score, 4), "mean_box_iou": round(baseline, 4), "beats_mean_box": bool(beats),
        "validation": f"{len(splits)}-fold" if len(splits) > 1 else "held-out fifth",
        "loss": choice.loss, "fine_tuned": choice.fine_tuned, "epochs": choice.epochs,
        "fine_tune_epochs": choice.fine_tune_epochs, "candidates": choice.candidates, "train_examples": len(images),
        "classes": classes,
    }
    if not beats:
        metrics["note"] = (f"validation IoU {choice.score:.3f} does not beat the mean box ({baseline:.3f}) by "
                           f"{opts.min_gain}: this version is kept but not activated; add frames with varied "
                           f"positions, or check the boxes")
    return model, classes, {"history": choice.history, **metrics}


def train(context: TrainContext, progress: Progress = None) -> dict:
    opts = context.requested_options()
    frames = context.box_frames().single()
    if len(frames) < 5:
        raise HeadError(f"need at least 5 frames holding one box each to train, have {len(frames)} "
                        f"(frames with several boxes train the 'objects' head)")
    bb = context.backbone
    model, classes, metrics = train_box_head(lambda: context.feature_map(opts.feature_layer), frames, bb.scale,
                                             bb.offset, opts, progress)
    history = metrics.pop("history")
    save_version(context, ExportSpec(model, classes, metrics), frames.pixels[:100], opts, history,
                 "box regressor (validation IoU)", progress)
    metrics["activate"] = metrics["beats_mean_box"]
    return metrics


def save_version(context: TrainContext, spec: ExportSpec, check_pixels: np.ndarray, opts, history: dict, title: str,
                 progress: Progress = None) -> None:
    """A trained box head version: the Keras model, its float32 TFLite twin, head.json and the training curves."""
    save_fused(spec.model, context.folder)
    context.write_model(context.folder, spec, "float32", check_pixels, progress=progress)
    (context.folder / "head.json").write_text(json.dumps({"head": context.head.name, "classes": spec.labels,
                                                          "metrics": spec.metrics, "options": opts.model_dump()}, indent=2))
    plot_curves(history, context.folder / "training.png", title)


def load_version(context: TrainContext, build: Callable[[dict], keras.Model]) -> tuple[keras.Model, dict]:
    """The current trained version: `build(head.json)` makes its architecture here, then its weights are loaded."""
    folder = context.current_version()
    if folder is None or fused_weights(folder) is None:
        raise HeadError(f"head {context.head.name!r} has no trained version: train it first")
    meta = json.loads((folder / "head.json").read_text())
    # its float32 twin's metadata says how frames were fitted when it was trained (the default has changed)
    context.fit = json.loads((folder / "metadata.json").read_text())["preprocessing"]["fit"]
    return load_fused(build(meta), folder), meta


def box_example_ids(context: TrainContext, single: bool) -> np.ndarray:
    """Stored examples with boxes (exactly one with `single`), for the export's parity check; no frame is read."""
    ex = context.examples
    return np.array([i for i, objs in zip(ex.ids, ex.objects) if (len(objs) == 1 if single else objs)], np.int64)


def rebuild(context: TrainContext, meta: dict) -> keras.Model:
    opts = BoxOptions(**meta["options"])
    return box_model(context.feature_map(opts.feature_layer), len(meta["classes"]), opts.hidden)


def export_model(context: TrainContext) -> ExportSpec:
    model, meta = load_version(context, lambda meta: rebuild(context, meta))
    ids = box_example_ids(context, single=True)
    return ExportSpec(model, meta["classes"], meta.get("metrics", {}), ids if len(ids) else None)
