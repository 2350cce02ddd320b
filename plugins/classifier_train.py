"""Keras side of the classifier head (imported only by the TensorFlow worker): fine-tuning and export.

The frozen head (numpy, `edged_plugins.classifier`) is the starting point: backbone -> power
transform + centring -> dense, as one Keras model. Mode "fine_tune" unfreezes the top of the
backbone (every weighted layer by default), "from_scratch" re-initialises it; both train on
augmented frames and are kept only when they beat the frozen head on held-out examples.
"""

from __future__ import annotations

import keras
import numpy as np

from edged.errors import HeadError
from edged.heads.base import Progress
from edged.heads.curves import plot_curves
from edged.heads.splits import balanced_split
from edged.learn.context import ExportSpec, TrainContext
from edged.learn.finetune import set_trainable_top
from edged.learn.loop import Best, run_epochs, shuffled_batches
from edged.sources.augment import augment_batch
from edged.state.store import Examples
from edged_plugins.classifier import ClassifierHead


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


def _frozen_head(context: TrainContext, examples: Examples, rows: np.ndarray) -> ClassifierHead:
    head = ClassifierHead(context.options)
    subset = Examples(examples.ids[rows], examples.labels[rows], examples.embeddings[rows],
                      [examples.boxes[i] for i in rows])
    head.fit(subset)  # numpy; no augmentation in the worker (the backbone is about to change anyway)
    return head


def train(context: TrainContext, progress: Progress = None) -> dict:
    """Fine-tune (or train from scratch) from the frozen head; keep it only if it beats the frozen head."""
    opts = context.requested_options()
    mode = context.request.mode if context.request.mode != "frozen" else "fine_tune"
    examples = context.examples
    classes = sorted(set(examples.labels.tolist()))
    train_rows, val_rows = balanced_split(examples.labels, opts.val_fraction, 2, opts.seed)
    frozen = _frozen_head(context, examples, train_rows)
    val_y = np.array([classes.index(l) for l in examples.labels[val_rows]])
    frozen_val = float(np.mean([frozen.predict(e).label == classes[t] for e, t in zip(examples.embeddings[val_rows], val_y)]))
    if progress:
        progress({"phase": mode, "step": f"frozen head: {frozen_val:.3f} on {len(val_rows)} held-out examples"})
    backbone = context.keras_backbone()
    if mode == "from_scratch":
        backbone = keras.models.clone_model(backbone)  # same architecture, fresh weights
    model = keras_classifier(backbone, frozen)
    layers = opts.fine_tune_layers or 10_000
    opened = set_trainable_top(backbone, layers)
    model.compile(optimizer=keras.optimizers.Adam(opts.fine_tune_learning_rate * (5 if mode == "from_scratch" else 1)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    images = context.pixels(examples.ids)
    y = np.array([classes.index(l) for l in examples.labels.tolist()])
    rng = np.random.default_rng(opts.seed + 1)
    val_x = context.scaled(images[val_rows])

    def make(idx):
        rows = train_rows[idx]
        batch, _ = augment_batch(images[rows], None, rng)
        return context.scaled(batch), y[rows]

    def evaluate() -> dict:
        return {"val_accuracy": float(np.mean(np.argmax(model.predict(val_x, verbose=0, batch_size=32), 1) == val_y))}

    epochs = context.request.epochs or opts.fine_tune_epochs
    best = Best("val_accuracy", "max")
    history = run_epochs(model, epochs, shuffled_batches(len(train_rows), opts.fine_tune_batch_size, rng, make),
                         evaluate, best, mode, progress)
    tuned_val = float(best.value)
    # the version keeps the frozen head fitted on every example; the fused model only when it helped
    final = ClassifierHead(context.options)
    head_metrics = final.fit(examples)
    metrics = {**head_metrics, "mode": mode, "fine_tuned_layers": len(opened), "frozen_val_accuracy": round(frozen_val, 4),
               "fine_tune_val_accuracy": round(tuned_val, 4), "val_examples": int(len(val_rows))}
    if tuned_val > frozen_val:
        metrics["fine_tune"] = f"kept: {tuned_val:.3f} > frozen {frozen_val:.3f} on held-out examples"
        metrics["val_accuracy"] = round(tuned_val, 4)
        model.save(context.folder / "fused.keras")
        spec = ExportSpec(model, classes, {"val_accuracy": metrics["val_accuracy"]})
        context.write_model(context.folder, spec, "float32", images[val_rows], progress=progress)
    else:
        metrics["fine_tune"] = f"skipped: {tuned_val:.3f} did not beat frozen {frozen_val:.3f} on held-out examples"
    final.metrics = metrics
    final.save(context.folder)
    plot_curves(history, context.folder / "training.png", f"classifier {mode}")
    return metrics


def export_model(context: TrainContext) -> ExportSpec:
    folder = context.current_version()
    if folder is None:
        raise HeadError("head 'classifier' has no trained version: train it first")
    head = ClassifierHead(context.options)
    if not head.load(folder):
        raise HeadError(f"head 'classifier' version {folder.name} has nothing to export")
    if (folder / "fused.keras").is_file():
        model = keras.models.load_model(folder / "fused.keras", compile=False, safe_mode=False)
    else:
        model = keras_classifier(context.keras_backbone(), head)
    examples = context.examples
    if len(set(examples.labels.tolist())) > 1:
        _, val = balanced_split(examples.labels, 0.2, 1, 0)
        check_ids = examples.ids[val]
    else:
        check_ids = examples.ids
    return ExportSpec(model, head.classes, head.metrics, check_ids)
