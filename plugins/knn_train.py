"""Export of the kNN head (imported only by the TensorFlow worker): the stored normalised embeddings as one
dense layer after the backbone; the model outputs a similarity per stored example and the vote stays in numpy."""

from __future__ import annotations

import keras
import numpy as np

from edged.learn.context import ExportSpec, TrainContext


def export_model(context: TrainContext) -> ExportSpec:
    examples = context.examples
    vectors = examples.embeddings / np.maximum(np.linalg.norm(examples.embeddings, axis=1, keepdims=True), 1e-12)
    base = context.keras_backbone()
    inputs = keras.Input(base.input_shape[1:], name="image")
    x = keras.layers.UnitNormalization(name="l2_normalise")(base(inputs))
    sims = keras.layers.Dense(len(vectors), use_bias=False, name="similarities")
    model = keras.Model(inputs, sims(x))
    sims.set_weights([vectors.T.astype(np.float32)])
    opts = context.options
    return ExportSpec(model, sorted(set(examples.labels.tolist())), {"examples": len(examples)}, examples.ids,
                      {"row_labels": examples.labels.tolist(), "k": opts.k, "threshold": opts.threshold})
