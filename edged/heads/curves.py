"""Training curves as a small PNG beside a head version, drawn with OpenCV."""

from __future__ import annotations

import cv2
import numpy as np


def plot_curves(history: dict, path, title: str = "training") -> None:
    """A small PNG of loss/accuracy per epoch, drawn with OpenCV (no plotting library needed)."""
    w, h, pad = 640, 360, 40
    img = np.full((h, w, 3), 255, np.uint8)
    series = [(k, v) for k, v in history.items() if v and isinstance(v[0], (int, float))]
    colours = [(200, 60, 20), (20, 120, 220), (40, 160, 40), (160, 40, 160), (0, 0, 0)]
    top = max(max(v) for _, v in series) if series else 1.0
    top = max(top, 1.0)
    n = max((len(v) for _, v in series), default=1)
    cv2.rectangle(img, (pad, pad), (w - pad, h - pad), (0, 0, 0), 1)
    for i, (name, values) in enumerate(series):
        pts = [(int(pad + (w - 2 * pad) * j / max(n - 1, 1)), int(h - pad - (h - 2 * pad) * v / top)) for j, v in enumerate(values)]
        cv2.polylines(img, [np.array(pts, np.int32)], False, colours[i % len(colours)], 2)
        cv2.putText(img, name, (pad + 5 + 150 * (i % 4), 20 + 14 * (i // 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colours[i % len(colours)], 1)
    cv2.putText(img, f"{title}: {n} epochs, y max {top:.2f}", (pad, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    cv2.imwrite(str(path), img)
