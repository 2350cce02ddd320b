"""Box regressor head: class + one box per frame, served as a fused TFLite model (backbone feature map + head).

Its Keras training lives in `edged_plugins.boxes_train`, which only the TensorFlow worker imports.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from edged.heads import Head, HeadOptions, Prediction, TrainRequest, hookimpl


class BoxOptions(HeadOptions):
    loss: str = Field("giou", pattern="^(mse|giou)$",
                      description="'mse': the seed's MSE on (indicator, box); 'giou': MSE + (1 - GIoU) on the box")
    hidden: int = Field(128, ge=1, le=4096)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(16, ge=1)
    epochs: int = Field(30, ge=1, le=10_000)
    fine_tune_layers: int = Field(0, ge=0, le=1000)
    fine_tune_epochs: int = Field(10, ge=1)
    fine_tune_learning_rate: float = Field(2e-4, gt=0)
    augment: bool = True
    val_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0
    # Layer whose feature map the box head reads; "auto" = the backbone's cut. conv_pw_11_relu (an 8x8
    # grid at 128 px) measured better on raccoon photos (test IoU 0.727 vs 0.676), conv_pw_13_relu on
    # two-class synthetic scenes (0.846; one pw_11 run there failed to train).
    feature_layer: str = "auto"


def iou_numpy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    area = lambda x: np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)
    return inter / (area(a) + area(b) - inter + 1e-9)


class BoxHead(Head):
    """Class indicator + box (x1, y1, x2, y2) regressed from the backbone's spatial features."""

    name = "boxes"
    kind = "boxes"
    Options = BoxOptions
    trainer = "edged_plugins.boxes_train"
    parity_tolerance = {"float32": 0.98, "float16": 0.95, "int8": 0.8}
    parity_measure = "mean IoU"

    @classmethod
    def trains_in_worker(cls, request: TrainRequest) -> bool:
        return True

    @property
    def ready(self) -> bool:
        return False  # served only from its fused model

    @classmethod
    def decode(cls, outputs: list[np.ndarray], meta: dict) -> Prediction:
        labels = meta["labels"]
        out = outputs[0].reshape(-1)
        n = len(labels)
        probs, box = out[:n], np.clip(out[n:n + 4], 0.0, 1.0)
        best = int(np.argmax(probs)) if n > 1 else 0
        score = float(probs[best]) if n > 1 else 1.0
        x1, y1, x2, y2 = (float(v) for v in box)
        return Prediction(labels[best], score, {l: float(v) for l, v in zip(labels, probs)},
                          [{"label": labels[best], "score": score, "box": [min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)]}])

    @classmethod
    def agreement(cls, a: list[Prediction], b: list[Prediction]) -> float:
        if not a:
            return 1.0
        boxes_a = np.array([p.boxes[0]["box"] for p in a])
        boxes_b = np.array([p.boxes[0]["box"] for p in b])
        return float(iou_numpy(boxes_a, boxes_b).mean())


@hookimpl
def register_heads(register):
    register(BoxHead)
