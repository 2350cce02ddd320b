"""Box regressor head: class + one box per frame, trained on frames with boxes, served as a fused TFLite model."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from edged.fused import FusedModel
from edged.heads import Head, HeadError, Prediction
from edged.hookspecs import hookimpl
from edged.learn_options import BoxOptions
from edged.store import Examples


class BoxHead(Head):
    """Class indicator + box (x1, y1, x2, y2) regressed from the backbone's spatial features."""

    name = "boxes"
    kind = "boxes"
    Options = BoxOptions
    needs_tensorflow = True
    takes_pixels = True

    def __init__(self, options: BoxOptions | None = None):
        super().__init__(options)
        self.model: FusedModel | None = None

    @property
    def ready(self) -> bool:
        return self.model is not None

    @property
    def classes(self) -> list[str]:
        return list(self.model.labels) if self.model else []

    def predict_pixels(self, pixels: np.ndarray) -> Prediction:
        if self.model is None:
            raise HeadError("box head is not trained: capture frames with boxes, then train")
        return self.model.predict(pixels)

    def fit(self, examples: Examples, progress=None, context=None, epochs: int | None = None,
            fine_tune_layers: int | None = None, **_) -> dict:
        if context is None:
            raise HeadError("the box head trains on stored frames: run it through `edged train` or the train command")
        from edged import keras_backbone, learn
        from edged.trainer import export_fused

        opts = replace(self.options)
        if epochs:
            opts.epochs = epochs
        if fine_tune_layers is not None:
            opts.fine_tune_layers = fine_tune_layers
        images, boxes, labels = context.frames_with_boxes(examples)
        if len(images) < 5:
            raise HeadError(f"need at least 5 frames with boxes to train, have {len(images)}")
        rng = np.random.default_rng(opts.seed)
        order = rng.permutation(len(images))
        n_val = max(1, int(round(len(images) * self.options.val_fraction)))
        val, train = order[:n_val], order[n_val:]
        bb = context.backbone
        layer = None if self.options.feature_layer == "auto" else self.options.feature_layer
        features_cfg = context.cfg.backbone.model_copy(update={"cut_layer": layer}) if layer else context.cfg.backbone
        model, classes, metrics = learn.train_boxes(
            keras_backbone.feature_map(features_cfg), images[train], [labels[i] for i in train], boxes[train],
            images[val], [labels[i] for i in val], boxes[val], bb.scale, bb.offset, opts, progress)
        history = metrics.pop("history")
        model.save(context.folder / "fused.keras")
        export_fused(model, self.name, "boxes", classes, bb, context.folder, "float32", images[val], metrics, progress=progress)
        (context.folder / "head.json").write_text(json.dumps({"head": self.name, "classes": classes, "metrics": metrics,
                                                              "options": asdict(self.options)}, indent=2))
        learn.plot_curves(history, context.folder / "training.png", "box regressor")
        self.load(context.folder)
        return metrics

    def load(self, folder: Path | None) -> bool:
        if folder is None or not (folder / "model.tflite").is_file():
            return False
        self.model = FusedModel(folder)
        return True

    def close(self) -> None:
        if self.model is not None:
            self.model.close()


@hookimpl
def register_heads(register):
    register(BoxHead)
