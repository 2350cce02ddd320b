"""Objects head: any number of labelled boxes per frame, from a grid on the backbone's feature map.

Anchor-free, in the spirit of YOLO v1 / CenterNet: each cell of the G x G feature map says how
likely an object's centre lies in it (objectness), where in the cell the centre is, the object's
size and its class. Boxes are decoded and de-duplicated with NMS here, in numpy. The model sees the
whole frame letterboxed; boxes are reported in the frame's coordinates. Keras training lives in
`edged_plugins.objects_train` (TensorFlow worker only).

Model output, per cell: ``[objectness, dx, dy, half_w, half_h, p(class 1) … p(class C)]`` (after
their activations; no class channels when there is one class).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from edged.heads import Prediction, hookimpl
from edged.heads.geometry import matched_f1, nms, well_formed
from edged_plugins.boxes import FrameTrainingOptions, FusedBoxHead


class ObjectsOptions(FrameTrainingOptions):
    losses: list[Literal["giou_l1", "l1"]] = Field(["giou_l1"], min_length=1, description="box losses tried "
                                                                                           "(see the boxes head)")
    epochs: int = Field(60, ge=1, le=10_000)
    learning_rate: float = Field(2e-3, gt=0)
    channels: int = Field(96, ge=8, le=1024, description="width of the two 3x3 convolutions over the feature map")
    score_threshold: float = Field(0.3, gt=0, lt=1, description="least objectness x class probability reported")
    nms_iou: float = Field(0.45, gt=0, le=1, description="boxes of one label overlapping more than this are merged")
    max_objects: int = Field(20, ge=1, le=200)


def decode_grid(grid: np.ndarray, labels: list[str], threshold: float, nms_iou: float,
                limit: int) -> list[tuple[str, float, list[float]]]:
    """(G, G, 5 [+ C]) model output -> [(label, score, well-formed box in model coordinates)], best first."""
    g = grid.shape[0]
    obj = grid[..., 0]
    if len(labels) > 1:
        cls = np.argmax(grid[..., 5:5 + len(labels)], axis=-1)
        scores = obj * np.take_along_axis(grid[..., 5:5 + len(labels)], cls[..., None], -1)[..., 0]
    else:
        cls, scores = np.zeros(obj.shape, int), obj
    rows, cols = np.nonzero(scores >= threshold)
    if not len(rows):
        return []
    cell = grid[rows, cols]
    cx, cy = (cols + cell[:, 1]) / g, (rows + cell[:, 2]) / g
    boxes = well_formed(np.stack([cx - cell[:, 3], cy - cell[:, 4], cx + cell[:, 3], cy + cell[:, 4]], axis=1))
    found, kinds, values = [], cls[rows, cols], scores[rows, cols]
    for kind in np.unique(kinds):
        idx = np.flatnonzero(kinds == kind)
        for k in nms(boxes[idx], values[idx], nms_iou, limit):
            i = idx[k]
            found.append((labels[int(kind)], float(values[i]), [float(v) for v in boxes[i]]))
    found.sort(key=lambda f: -f[1])
    return found[:limit]


class ObjectsHead(FusedBoxHead):
    """Labelled boxes, as many as the frame holds."""

    name = "objects"
    Options = ObjectsOptions
    trainer = "edged_plugins.objects_train"
    parity_tolerance = {"float32": 0.97, "float16": 0.95, "int8": 0.85}
    parity_measure = "mean F1 of boxes matched at IoU 0.5"

    @classmethod
    def decode(cls, outputs: list[np.ndarray], meta: dict) -> Prediction:
        labels, opts = meta["labels"], meta.get("decode", {})
        g = int(opts.get("grid") or round(np.sqrt(np.asarray(outputs[0]).size / (5 + (len(labels) if len(labels) > 1 else 0)))))
        grid = np.asarray(outputs[0], np.float64).reshape(g, g, -1)
        found = decode_grid(grid, labels, opts.get("score_threshold", 0.3), opts.get("nms_iou", 0.45),
                            opts.get("max_objects", 20))
        scores = {label: 0.0 for label in labels}
        for label, score, _ in found:
            scores[label] = max(scores[label], score)
        boxes = [{"label": label, "score": score, "box": box} for label, score, box in found]
        if not found:
            return Prediction("none", 0.0, scores, [])
        return Prediction(found[0][0], found[0][1], scores, boxes)

    @classmethod
    def agreement(cls, a: list[Prediction], b: list[Prediction]) -> float:
        if not a:
            return 1.0
        pairs = [matched_f1([(o["label"], o["box"]) for o in pa.boxes], [(o["label"], o["box"]) for o in pb.boxes])
                 for pa, pb in zip(a, b)]
        return float(np.mean(pairs))


@hookimpl
def register_heads(register):
    register(ObjectsHead)
