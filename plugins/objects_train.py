"""Keras training of the objects head (imported only by the TensorFlow worker).

Targets per cell: a Gaussian heat map around each object's centre cell (CenterNet's penalty-
reduced focal loss on objectness), and at the centre cell the object's box (1 - GIoU + L1 on the
decoded corners) and class (cross-entropy). Chosen by mean average precision at IoU 0.5 on
validation (k folds on small sets).
"""

from __future__ import annotations

import keras
import numpy as np

from edged.errors import HeadError
from edged.heads.base import Progress
from edged.heads.geometry import mean_average_precision
from edged.heads.splits import validation_splits
from edged.learn.context import BoxFrames, ExportSpec, TrainContext
from edged.learn.loop import shuffled_batches
from edged.learn.select import Plan, choose_and_train
from edged.sources.augment import augment_objects
from edged_plugins.boxes_train import MIN_HALF, box_example_ids, box_term, load_version, save_version
from edged_plugins.objects import ObjectsOptions, decode_grid


def grid_model(feature_model: keras.Model, n_classes: int, channels: int) -> keras.Model:
    inputs = keras.Input(feature_model.input_shape[1:], name="image")
    x = feature_model(inputs)
    for i in range(2):  # normalised: wider backbones' raw maps otherwise saturate the heads from the first step
        x = keras.layers.Conv2D(channels, 3, padding="same", name=f"grid_conv{i}")(x)
        x = keras.layers.BatchNormalization(name=f"grid_norm{i}")(x)
        x = keras.layers.ReLU(name=f"grid_relu{i}")(x)
    obj = keras.layers.Conv2D(1, 1, activation="sigmoid", name="grid_objectness",
                              bias_initializer=keras.initializers.Constant(-2.2))(x)  # p ~ 0.1 at start
    offset = keras.layers.Conv2D(2, 1, activation="sigmoid", kernel_initializer="zeros", name="grid_offset")(x)
    half = keras.layers.Conv2D(2, 1, activation="sigmoid", kernel_initializer="zeros", name="grid_size")(x)
    half = keras.layers.Rescaling(0.5 - MIN_HALF, offset=MIN_HALF, name="grid_half")(half)
    parts = [obj, offset, half]
    if n_classes > 1:
        parts.append(keras.layers.Conv2D(n_classes, 1, activation="softmax", name="grid_class")(x))
    return keras.Model(inputs, keras.layers.Concatenate(name="grid_out")(parts), name="objects_grid")


def grid_targets(objects: list[tuple[list[str], np.ndarray]], classes: list[str], g: int) -> np.ndarray:
    """Per frame (G, G, 1 + 4 + C + 1): heat map, true corners, one-hot class, centre mask."""
    n_cls = len(classes) if len(classes) > 1 else 0
    out = np.zeros((len(objects), g, g, 6 + n_cls), np.float32)
    ys, xs = np.mgrid[0:g, 0:g]
    for f, (names, boxes) in enumerate(objects):
        order = np.argsort(-(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])) if len(boxes) else []
        for k in order[::-1]:  # larger objects last: they keep a centre cell two objects share
            x1, y1, x2, y2 = boxes[k]
            cx, cy = (x1 + x2) / 2 * g, (y1 + y2) / 2 * g
            col, row = min(int(cx), g - 1), min(int(cy), g - 1)
            sigma = max(0.5, min(x2 - x1, y2 - y1) * g / 6)
            heat = np.exp(-((xs - col) ** 2 + (ys - row) ** 2) / (2 * sigma ** 2))
            out[f, :, :, 0] = np.maximum(out[f, :, :, 0], heat)
            out[f, row, col, 0] = 1.0
            out[f, row, col, 1:5] = boxes[k]
            if n_cls:
                out[f, row, col, 5:5 + n_cls] = 0
                out[f, row, col, 5 + classes.index(names[k])] = 1.0
            out[f, row, col, -1] = 1.0
    return out


def grid_loss(n_classes: int, g: int, kind: str):
    ops = keras.ops
    n_cls = n_classes if n_classes > 1 else 0
    cols = np.tile(np.arange(g, dtype=np.float32), (g, 1))
    rows = cols.T.copy()

    def loss(y_true, y_pred):
        heat, mask = y_true[..., 0], y_true[..., -1]
        p = ops.clip(y_pred[..., 0], 1e-6, 1 - 1e-6)
        positives = ops.maximum(ops.sum(mask, axis=(1, 2)), 1.0)
        focal = -(mask * ops.square(1 - p) * ops.log(p)
                  + (1 - mask) * ops.power(1 - heat, 4.0) * ops.square(p) * ops.log(1 - p))
        total = ops.sum(focal, axis=(1, 2)) / positives
        cx = (y_pred[..., 1] + cols) / g
        cy = (y_pred[..., 2] + rows) / g
        pred_box = ops.stack([cx - y_pred[..., 3], cy - y_pred[..., 4], cx + y_pred[..., 3], cy + y_pred[..., 4]], axis=-1)
        box = box_term(kind, y_true[..., 1:5], pred_box)
        total = total + ops.sum(box * mask, axis=(1, 2)) / positives
        if n_cls:
            ce = -ops.sum(y_true[..., 5:5 + n_cls] * ops.log(ops.clip(y_pred[..., 5:5 + n_cls], 1e-6, 1.0)), axis=-1)
            total = total + ops.sum(ce * mask, axis=(1, 2)) / positives
        return total

    return loss


def detections(model: keras.Model, x: np.ndarray, classes: list[str], threshold: float, opts: ObjectsOptions):
    grids = model.predict(x, verbose=0, batch_size=32)
    return [[(l, s, tuple(b)) for l, s, b in decode_grid(gr, classes, threshold, opts.nms_iou, opts.max_objects)]
            for gr in grids]


def train_objects_head(feature_factory, frames: BoxFrames, scale: float, offset: float, opts: ObjectsOptions,
                       progress: Progress = None) -> tuple[keras.Model, list[str], dict]:
    keras.utils.set_random_seed(opts.seed)
    images = frames.pixels
    classes = sorted({name for names, _ in frames.objects for name in names})
    g = feature_factory().output_shape[1]
    splits = validation_splits(len(images), opts.folds, opts.split_above, opts.seed)
    x_all = images.astype(np.float32) * scale + offset
    truths = [[(name, tuple(box)) for name, box in zip(names, boxes)] for names, boxes in frames.objects]

    def batches(rows, rng):
        def make(idx):
            idx = rows[idx]
            if opts.augment:
                batch, moved = augment_objects(images[idx], [frames.objects[i][1] for i in idx], rng)
                objs = [([frames.objects[i][0][k] for k in keep], boxes) for i, (boxes, keep) in zip(idx, moved)]
            else:
                batch, objs = images[idx], [frames.objects[i] for i in idx]
            return batch.astype(np.float32) * scale + offset, grid_targets(objs, classes, g)
        return shuffled_batches(len(rows), opts.batch_size, rng, make)

    def score(model, rows):
        found = detections(model, x_all[rows], classes, 0.05, opts)
        return mean_average_precision(found, [truths[i] for i in rows])

    def build(loss):
        features = feature_factory()
        return grid_model(features, len(classes), opts.channels), features

    plan = Plan(list(opts.losses), opts.epochs, opts.learning_rate, opts.fine_tune_layers, opts.fine_tune_epochs,
                opts.fine_tune_learning_rate, opts.seed)
    model, choice = choose_and_train(build, lambda kind: grid_loss(len(classes), g, kind), batches, score, splits,
                                     plan, progress)
    metrics = {
        "val_map50": round(choice.score, 4), "validation": f"{len(splits)}-fold" if len(splits) > 1 else "held-out fifth",
        "loss": choice.loss, "fine_tuned": choice.fine_tuned, "epochs": choice.epochs,
        "fine_tune_epochs": choice.fine_tune_epochs, "candidates": choice.candidates, "grid": g,
        "train_examples": len(images), "objects": int(sum(len(n) for n, _ in frames.objects)), "classes": classes,
    }
    return model, classes, {"history": choice.history, **metrics}


def decode_options(opts: ObjectsOptions, g: int) -> dict:
    return {"grid": g, "score_threshold": opts.score_threshold, "nms_iou": opts.nms_iou, "max_objects": opts.max_objects}


def train(context: TrainContext, progress: Progress = None) -> dict:
    opts = context.requested_options()
    frames = context.box_frames()
    if len(frames) < 5:
        raise HeadError(f"need at least 5 frames with boxes to train, have {len(frames)}")
    bb = context.backbone
    model, classes, metrics = train_objects_head(lambda: context.feature_map(opts.feature_layer), frames, bb.scale,
                                                 bb.offset, opts, progress)
    history = metrics.pop("history")
    spec = ExportSpec(model, classes, metrics, decode=decode_options(opts, metrics["grid"]))
    save_version(context, spec, frames.pixels[:100], opts, history, "objects (validation mAP@0.5)", progress)
    return metrics


def rebuild(context: TrainContext, meta: dict) -> keras.Model:
    opts = ObjectsOptions(**meta["options"])
    return grid_model(context.feature_map(opts.feature_layer), len(meta["classes"]), opts.channels)


def export_model(context: TrainContext) -> ExportSpec:
    model, meta = load_version(context, lambda meta: rebuild(context, meta))
    opts = ObjectsOptions(**meta["options"])
    return ExportSpec(model, meta["classes"], meta.get("metrics", {}), box_example_ids(context, single=False),
                      decode=decode_options(opts, meta["metrics"]["grid"]))
