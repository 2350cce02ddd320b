"""Box geometry in numpy for box heads and their benchmarks: IoU, well-formed boxes, NMS, average precision.

Boxes are normalised (x1, y1, x2, y2). Every function here orders corners first, so an inverted
box is measured as the box it spans, never as a negative area.
"""

from __future__ import annotations

import numpy as np

MIN_SIZE = 1e-3  # the least width/height of a box a head reports


def ordered(boxes: np.ndarray) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.stack([np.minimum(b[:, 0], b[:, 2]), np.minimum(b[:, 1], b[:, 3]),
                     np.maximum(b[:, 0], b[:, 2]), np.maximum(b[:, 1], b[:, 3])], axis=1)


def well_formed(boxes: np.ndarray, min_size: float = MIN_SIZE) -> np.ndarray:
    """Ordered, inside [0, 1], at least `min_size` wide and high; NaN becomes the whole frame."""
    b = ordered(np.nan_to_num(np.asarray(boxes, np.float64), nan=0.5))
    b = np.clip(b, 0.0, 1.0)
    for lo, hi in ((0, 2), (1, 3)):
        short = b[:, hi] - b[:, lo] < min_size
        centre = np.clip((b[short, lo] + b[short, hi]) / 2, min_size / 2, 1 - min_size / 2)
        b[short, lo], b[short, hi] = centre - min_size / 2, centre + min_size / 2
    return b


def area(boxes: np.ndarray) -> np.ndarray:
    b = ordered(boxes)
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def iou_numpy(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of two (n, 4) arrays (or one box against n)."""
    a, b = ordered(a), ordered(b)
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    return inter / (area(a) + area(b) - inter + 1e-9)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n, m) IoU of every box in `a` with every box in `b`."""
    a, b = ordered(a), ordered(b)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    return inter / (area(a)[:, None] + area(b)[None, :] - inter + 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, limit: int = 100) -> list[int]:
    """Greedy non-maximum suppression: indices kept, best first."""
    order = list(np.argsort(-np.asarray(scores), kind="stable"))
    keep: list[int] = []
    boxes = ordered(boxes)
    while order and len(keep) < limit:
        best = order.pop(0)
        keep.append(int(best))
        if order:
            overlaps = iou_matrix(boxes[[best]], boxes[order])[0]
            order = [i for i, o in zip(order, overlaps) if o <= iou_threshold]
    return keep


def average_precision(detections: list[list[tuple[str, float, tuple]]], truths: list[list[tuple[str, tuple]]],
                      iou_threshold: float = 0.5) -> dict[str, float]:
    """VOC-style AP per class (all-point interpolation) over frames.

    detections[i]: (label, score, box) found in frame i; truths[i]: (label, box) annotated there.
    Each true box matches at most one detection (the best-scored one above the IoU threshold).
    """
    classes = sorted({label for frame in truths for label, _ in frame})
    out = {}
    for cls in classes:
        found = [(score, i, box) for i, frame in enumerate(detections) for label, score, box in frame if label == cls]
        found.sort(key=lambda d: -d[0])
        gt = {i: np.array([box for label, box in frame if label == cls]).reshape(-1, 4) for i, frame in enumerate(truths)}
        used = {i: np.zeros(len(g), bool) for i, g in gt.items()}
        total = sum(len(g) for g in gt.values())
        tp = np.zeros(len(found))
        for k, (_, i, box) in enumerate(found):
            if not len(gt[i]):
                continue
            overlaps = iou_matrix(np.array([box]), gt[i])[0]
            j = int(np.argmax(overlaps))
            if overlaps[j] >= iou_threshold and not used[i][j]:
                used[i][j] = True
                tp[k] = 1
        if not total:
            continue
        cum_tp = np.cumsum(tp)
        recall = cum_tp / total
        precision = cum_tp / np.arange(1, len(found) + 1)
        r = np.concatenate([[0.0], recall, [1.0]])
        p = np.concatenate([[0.0], precision, [0.0]])
        p = np.maximum.accumulate(p[::-1])[::-1]
        steps = np.flatnonzero(r[1:] != r[:-1])
        out[cls] = float(np.sum((r[steps + 1] - r[steps]) * p[steps + 1]))
    return out


def mean_average_precision(detections, truths, iou_threshold: float = 0.5) -> float:
    per_class = average_precision(detections, truths, iou_threshold)
    return float(np.mean(list(per_class.values()))) if per_class else 0.0


def matched_f1(a: list[tuple[str, tuple]], b: list[tuple[str, tuple]], iou_threshold: float = 0.5) -> float:
    """How alike two sets of labelled boxes are: F1 of greedy same-label matches at IoU >= threshold (1 when both empty)."""
    if not a and not b:
        return 1.0
    if not a or not b:
        return 0.0
    overlaps = iou_matrix(np.array([box for _, box in a]), np.array([box for _, box in b]))
    for i, (la, _) in enumerate(a):
        for j, (lb, _) in enumerate(b):
            if la != lb:
                overlaps[i, j] = 0.0
    matches = 0
    while overlaps.size and overlaps.max() >= iou_threshold:
        i, j = np.unravel_index(np.argmax(overlaps), overlaps.shape)
        matches += 1
        overlaps[i, :] = 0.0
        overlaps[:, j] = 0.0
    return 2 * matches / (len(a) + len(b))
