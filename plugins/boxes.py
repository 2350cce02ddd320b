"""Single-box head: the class and box of the one object in a frame, served as a fused TFLite model.

The model sees the whole frame stretched to its square input (``frame_fit = "stretch"``), so objects
near the edges are kept and no input pixel is padding; boxes are reported in the frame's coordinates.
Its Keras training lives in `edged_plugins.boxes_train`, which only the TensorFlow worker imports.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from edged.heads import Head, HeadOptions, Prediction, TrainRequest, hookimpl
from edged.heads.geometry import iou_numpy, well_formed


class FrameTrainingOptions(HeadOptions):
    """What the heads trained on frames (boxes, objects) share: epochs, fine-tuning, validation."""

    losses: list[Literal["giou_l1", "l1"]] = Field(
        ["giou_l1", "l1"], min_length=1, description="box losses tried; the one with the best validation score is "
                                                     "kept. 'giou_l1': 1 - GIoU + L1 of the corners; 'l1': L1 only")
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(16, ge=1)
    epochs: int = Field(40, ge=1, le=10_000)
    fine_tune_layers: int = Field(6, ge=0, le=1000, description="top backbone layers tried fine-tuned after the "
                                                                "frozen phase; kept only if validation improves")
    fine_tune_epochs: int = Field(20, ge=1)
    fine_tune_learning_rate: float = Field(2e-4, gt=0)
    augment: bool = True
    folds: int = Field(4, ge=2, le=10, description="k-fold validation below `split_above` frames")
    split_above: int = Field(60, ge=10, description="from this many frames on, one held-out fifth validates")
    seed: int = 0
    # Layer whose feature map the head reads; "auto" = the deepest layer at 1/16 of the input (conv_pw_11 in
    # MobileNet v1: an 8x8 grid at 128 px), which keeps enough position to place a box.
    feature_layer: str = "auto"


class BoxOptions(FrameTrainingOptions):
    hidden: int = Field(128, ge=1, le=4096)
    min_gain: float = Field(0.02, ge=0, le=1, description="IoU the head must gain over the mean box to be activated")


class FusedBoxHead(Head):
    """What the box heads share: trained on whole frames in the worker, served from a fused model."""

    kind = "boxes"
    frame_fit = "letterbox"

    @classmethod
    def trains_in_worker(cls, request: TrainRequest) -> bool:
        return True

    @property
    def ready(self) -> bool:
        return False  # served only from its fused model


class BoxHead(FusedBoxHead):
    """Class + one box (x1, y1, x2, y2) regressed from the backbone's spatial features."""

    name = "boxes"
    Options = BoxOptions
    frame_fit = "stretch"  # raccoon, 5-fold: 0.723 mean IoU against 0.711 letterboxed
    trainer = "edged_plugins.boxes_train"
    parity_tolerance = {"float32": 0.98, "float16": 0.95, "int8": 0.8}
    parity_measure = "mean IoU"

    @classmethod
    def decode(cls, outputs: list[np.ndarray], meta: dict) -> Prediction:
        labels = meta["labels"]
        out = np.asarray(outputs[0], np.float64).reshape(-1)
        n = len(labels)
        probs = out[:n]
        box = well_formed(out[n:n + 4])[0]  # the model builds ordered corners; this also guards older models
        best = int(np.argmax(probs))
        score = float(probs[best])
        return Prediction(labels[best], score, {l: float(v) for l, v in zip(labels, probs)},
                          [{"label": labels[best], "score": score, "box": [float(v) for v in box]}])

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
