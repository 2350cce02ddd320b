"""Keras model -> TFLite bytes: float32, float16, or full-integer int8 with uint8 input.

One more kind exists only to find where int8 loses agreement (`edged bench runtime --diagnose`):
"int8_weights" quantizes the weights alone and keeps activations float; it is not offered for export.
"""

from __future__ import annotations

import contextlib
import io
from typing import Optional

import numpy as np
import tensorflow as tf

from ..errors import TrainingError

QUANTIZATIONS = ("float32", "float16", "int8")
DIAGNOSTIC_QUANTIZATIONS = ("int8_weights",)


def to_tflite(model, quantize: str = "float32", representative: Optional[np.ndarray] = None) -> bytes:
    """`representative`: scaled model inputs (n, S, S, 3) float32, required for int8."""
    if quantize not in QUANTIZATIONS + DIAGNOSTIC_QUANTIZATIONS:
        raise TrainingError(f"export.quantize: {quantize!r} is not one of {QUANTIZATIONS}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize == "int8_weights":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        if representative is None or not len(representative):
            raise TrainingError("int8 export needs representative frames: the store is empty")

        def frames():
            for x in representative:
                yield [x[None].astype(np.float32)]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = frames
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints every captured tensor
        return converter.convert()
