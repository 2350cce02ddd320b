"""Keras side of the classifier head (imported only by the TensorFlow worker): fine-tuning and export.

The frozen head (numpy, `edged_plugins.classifier`) is the starting point: backbone -> power
transform + centring -> dense, as one Keras model. Mode "fine_tune" unfreezes the top of the
backbone (every weighted layer by default), "from_scratch" re-initialises it; both train on
augmented frames and are kept only when k-fold cross-validation says they beat the frozen head.
"""

from __future__ import annotations

import keras
import numpy as np

from edged.errors import HeadError
from edged.heads.base import FitContext, Progress
from edged.heads.curves import plot_curves
from edged.heads.fewshot import capture_folds
from edged.heads.splits import balanced_split
from edged.learn.context import ExportSpec, TrainContext
from edged.learn.finetune import fused_weights, load_fused, save_fused, set_trainable_top
from edged.learn.loop import Last, run_epochs, shuffled_batches
from edged.sources.augment import augment_batch
from edged.state.store import Examples
from edged_plugins.classifier import ClassifierHead, open_set_calibration, open_set_metadata


@keras.saving.register_keras_serializable(package="edged")
class PowerNormalise(keras.layers.Layer):
    """sign(x)|x|^power, L2 normalise, subtract the training mean, L2 normalise: the head's feature transform."""

    def __init__(self, power: float = 0.5, mean=None, **kwargs):
        super().__init__(**kwargs)
        self.power = float(power)
        self.mean_init = None if mean is None else np.asarray(mean, np.float32).tolist()

    def build(self, input_shape):
        init = keras.initializers.Constant(self.mean_init) if self.mean_init is not None else "zeros"
        self.mean = self.add_weight(shape=(int(input_shape[-1]),), initializer=init, trainable=False, name="mean")

    def call(self, x):
        ops = keras.ops
        if self.power != 1.0:
            x = ops.sign(x) * ops.power(ops.abs(x) + 1e-12, self.power)
        x = x / ops.maximum(ops.norm(x, axis=-1, keepdims=True), 1e-12)
        x = x - self.mean
        return x / ops.maximum(ops.norm(x, axis=-1, keepdims=True), 1e-12)

    def get_config(self):
        return {**super().get_config(), "power": self.power, "mean": self.mean_init}


def keras_classifier(backbone: keras.Model, head: ClassifierHead) -> keras.Model:
    """Backbone + the trained numpy head as one Keras model: scaled image in, class probabilities out."""
    parts = head.linear_parts()
    inputs = keras.Input(backbone.input_shape[1:], name="image")
    z = PowerNormalise(parts["power"], parts["mean"], name="power_normalise")(backbone(inputs))
    dense = keras.layers.Dense(len(head.classes), activation="softmax", name="head_probs")
    model = keras.Model(inputs, dense(z), name="classifier")
    dense.set_weights([parts["weights"].astype(np.float32), parts["bias"].astype(np.float32)])
    return model


def with_open_set(model: keras.Model, head: ClassifierHead, context: TrainContext, tuned: bool) -> ExportSpec:
    """The served form of a classifier model: class probabilities, then the features' cosine to each class mean,
    and the open-set rule in the metadata, so that the model answers `unknown` and novelty as the numpy head does.
    A fine-tuned backbone moves the features: its class means and threshold are measured again on the stored
    examples through the model's own features."""
    z = model.get_layer("power_normalise").output
    if tuned:
        examples = context.examples
        classes = head.classes
        y = np.array([classes.index(l) for l in examples.labels.tolist()])
        features = keras.Model(model.inputs, z)
        zz = np.asarray(features.predict(context.scaled(context.pixels(examples.ids)), verbose=0, batch_size=32))
        means, reference, threshold = open_set_calibration(zz, y, len(classes), context.options.unknown_quantile)
        rule = open_set_metadata(reference, threshold)
    else:
        means, rule = head.means, head.open_set_rule()
    similarity = keras.layers.Dense(len(head.classes), use_bias=False, name="class_similarity")
    served = keras.Model(model.inputs, keras.layers.Concatenate(name="probs_and_similarity")([model.output,
                                                                                              similarity(z)]))
    similarity.set_weights([np.asarray(means, np.float32).T])
    return ExportSpec(served, head.classes, dict(head.metrics), decode={"open_set": rule})


def _frozen_head(context: TrainContext, examples: Examples, rows: np.ndarray, fit: FitContext) -> ClassifierHead:
    """The numpy head the daemon would fit on these rows (augmented copies embedded by the serving backbone)."""
    head = ClassifierHead(context.options)
    head.fit(examples.subset(rows), fit)
    return head


class _Tuning:
    """One fine-tuning run: the frozen head on `rows` as the start, augmented frames, a fixed number of epochs."""

    def __init__(self, context: TrainContext, fit: FitContext, mode: str, images: np.ndarray, y: np.ndarray, opts):
        self.context, self.fit, self.mode, self.images, self.y, self.opts = context, fit, mode, images, y, opts
        self.opened: list = []

    def run(self, rows: np.ndarray, epochs: int, val_rows: np.ndarray, phase: str, progress: Progress = None):
        """Returns (model, per-epoch history); with `val_rows`, history["val_accuracy"] is scored every epoch."""
        context, opts = self.context, self.opts
        frozen = _frozen_head(context, context.examples, rows, self.fit)
        backbone = context.keras_backbone()
        if self.mode == "from_scratch":
            backbone = keras.models.clone_model(backbone)  # same architecture, fresh weights
        model = keras_classifier(backbone, frozen)
        self.opened = set_trainable_top(backbone, opts.fine_tune_layers or 10_000)
        rate = opts.fine_tune_learning_rate * (5 if self.mode == "from_scratch" else 1)
        model.compile(optimizer=keras.optimizers.Adam(rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        rng = np.random.default_rng(opts.seed + 1)
        val_x = context.scaled(self.images[val_rows]) if len(val_rows) else None

        def make(idx):
            batch, _ = augment_batch(self.images[rows[idx]], None, rng)
            return context.scaled(batch), self.y[rows[idx]]

        def evaluate() -> dict:
            if val_x is None:
                return {}
            pred = np.argmax(model.predict(val_x, verbose=0, batch_size=32), 1)
            return {"val_accuracy": float(np.mean(pred == self.y[val_rows]))}

        # the last epoch's weights: the epoch count is chosen across folds, not on one fold's noise
        history = run_epochs(model, epochs, shuffled_batches(len(rows), opts.fine_tune_batch_size, rng, make),
                             evaluate, Last("loss"), phase, progress)
        return model, frozen, history


def train(context: TrainContext, progress: Progress = None) -> dict:
    """Fine-tune (or train from scratch) from the frozen head, decided by k-fold cross-validation.

    Each fold fine-tunes on the other folds and is scored every epoch beside the frozen head fitted on the
    same rows. When the folds' mean accuracy at the best epoch beats the frozen head's, the backbone is
    fine-tuned on every example for that many epochs and served as a fused model; otherwise the frozen
    head is kept, and the reply says why.
    """
    opts = context.requested_options()
    mode = context.request.mode if context.request.mode in ("fine_tune", "from_scratch") else "fine_tune"
    examples = context.examples
    classes = sorted(set(examples.labels.tolist()))
    if len(classes) < 2:
        raise HeadError(f"need at least 2 classes to train a classifier, have {classes}")
    y = np.array([classes.index(l) for l in examples.labels.tolist()])
    smallest = int(np.bincount(y).min())
    if smallest < 2:
        raise HeadError(f"need at least 2 examples of every class to cross-validate fine-tuning; "
                        f"{classes[int(np.argmin(np.bincount(y)))]!r} has {smallest}")
    # by capture, as the frozen head is validated: fine-tuning memorises near-copies best of all
    folds = capture_folds(y, examples.captures, min(opts.fine_tune_folds, smallest), opts.seed).folds
    epochs = context.request.epochs or opts.fine_tune_epochs
    images = context.pixels(examples.ids)
    with context.fit_context() as fit:
        return _cross_validated(context, fit, mode, opts, folds, epochs, images, y, classes, progress)


def _cross_validated(context: TrainContext, fit: FitContext, mode: str, opts, folds: list[np.ndarray], epochs: int,
                     images: np.ndarray, y: np.ndarray, classes: list[str], progress: Progress) -> dict:
    examples = context.examples
    tuning = _Tuning(context, fit, mode, images, y, opts)
    every = np.arange(len(y))
    curves, frozen_right, history = [], 0, {}
    for k, val in enumerate(folds):
        rows = np.setdiff1d(every, val)
        _, frozen, run = tuning.run(rows, epochs, val, f"{mode} fold {k + 1}/{len(folds)}", progress)
        right = sum(frozen.predict(e).label == classes[t] for e, t in zip(examples.embeddings[val], y[val]))
        frozen_right += int(right)
        curves.append(np.array(run["val_accuracy"]) * len(val))
        history[f"fold {k + 1} val_accuracy"] = run["val_accuracy"]
        history[f"fold {k + 1} loss"] = run["loss"]
    curve = np.sum(curves, axis=0) / len(y)  # pooled out-of-fold accuracy after each epoch
    best_epochs = int(len(curve) - np.argmax(curve[::-1]))  # ties: the later epoch
    tuned_cv, frozen_cv = float(curve[best_epochs - 1]), frozen_right / len(y)
    if progress:
        progress({"phase": mode, "step": f"{len(folds)}-fold: fine-tuned {tuned_cv:.3f} after {best_epochs} epochs, "
                                         f"frozen {frozen_cv:.3f}"})
    final = ClassifierHead(context.options)
    head_metrics = final.fit(examples, fit)  # the frozen head on every example stays in the version either way
    metrics = {**head_metrics, "mode": mode, "fine_tuned_layers": len(tuning.opened), "fine_tune_folds": len(folds),
               "frozen_cv_accuracy": round(frozen_cv, 4), "fine_tune_cv_accuracy": round(tuned_cv, 4),
               "fine_tune_epochs": best_epochs}
    if tuned_cv > frozen_cv + opts.fine_tune_margin:
        model, _, run = tuning.run(every, best_epochs, np.array([], int), f"{mode}, all examples", progress)
        history["all examples loss"] = run["loss"]
        metrics["fine_tune"] = (f"kept: fine-tuned {tuned_cv:.3f} > frozen {frozen_cv:.3f}, both {len(folds)}-fold on "
                                f"the same folds; trained on all {len(y)} examples for {best_epochs} epochs")
        # one comparable figure for both: the same folds; the frozen head's own figure (more folds) is kept beside it
        metrics["frozen_own_cv_accuracy"] = head_metrics.get("cv_accuracy")
        metrics["cv_accuracy"] = round(tuned_cv, 4)
        metrics["cv_folds"] = len(folds)
        save_fused(model, context.folder)
        spec = with_open_set(model, final, context, tuned=True)
        spec.metrics = {"cv_accuracy": metrics["cv_accuracy"]}
        check = np.concatenate([f[:3] for f in folds])
        context.write_model(context.folder, spec, "float32", images[check], progress=progress)
    else:
        metrics["fine_tune"] = (f"skipped: fine-tuned {tuned_cv:.3f} does not beat frozen {frozen_cv:.3f} by "
                                f"{opts.fine_tune_margin}, both {len(folds)}-fold on the same folds")
        # after an "auto" fit the frozen head (fitted with augmented copies in the serving process) already serves
        metrics["activate"] = context.request.mode != "auto"
    final.metrics = metrics
    final.save(context.folder)
    plot_curves(history, context.folder / "training.png", f"classifier {mode} ({len(folds)}-fold)")
    return metrics


def export_model(context: TrainContext) -> ExportSpec:
    folder = context.current_version()
    if folder is None:
        raise HeadError("head 'classifier' has no trained version: train it first")
    head = ClassifierHead(context.options)
    if not head.load(folder):
        raise HeadError(f"head 'classifier' version {folder.name} has nothing to export")
    model = keras_classifier(context.keras_backbone(), head)
    tuned = fused_weights(folder) is not None
    if tuned:  # fine-tuned: the same architecture, its trained weights
        load_fused(model, folder)
    spec = with_open_set(model, head, context, tuned)
    examples = context.examples
    if len(set(examples.labels.tolist())) > 1:
        _, val = balanced_split(examples.labels, 0.2, 1, 0)
        spec.check_ids = examples.ids[val]
    else:
        spec.check_ids = examples.ids
    return spec
