"""Light augmentation for frames (and their boxes): crop/scale jitter, horizontal flip, brightness."""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np


def _crop_window(rng: np.random.Generator, size: int, box: Optional[np.ndarray], min_scale: float):
    s = int(size * rng.uniform(min_scale, 1.0))
    lo_x, hi_x, lo_y, hi_y = 0, size - s, 0, size - s
    if box is not None:  # keep the whole box inside the crop when it fits
        bx1, by1, bx2, by2 = box * size
        if bx2 - bx1 <= s and by2 - by1 <= s:
            lo_x, hi_x = max(0, int(np.ceil(bx2 - s))), min(size - s, int(bx1))
            lo_y, hi_y = max(0, int(np.ceil(by2 - s))), min(size - s, int(by1))
    x = int(rng.integers(lo_x, max(lo_x, hi_x) + 1))
    y = int(rng.integers(lo_y, max(lo_y, hi_y) + 1))
    return x, y, s


def augment_batch(images: np.ndarray, boxes: Optional[np.ndarray], rng: np.random.Generator,
                  min_scale: float = 0.75, flip: bool = True, brightness: float = 0.2):
    """images: (n, S, S, 3) uint8; boxes: (n, 4) normalised x1 y1 x2 y2 or None. Returns new arrays."""
    n, size = images.shape[0], images.shape[1]
    out = np.empty_like(images)
    out_boxes = None if boxes is None else np.array(boxes, np.float32, copy=True)
    for i in range(n):
        box = None if boxes is None else out_boxes[i]
        x, y, s = _crop_window(rng, size, box, min_scale)
        img = cv2.resize(images[i, y:y + s, x:x + s], (size, size), interpolation=cv2.INTER_LINEAR)
        if box is not None:
            b = (box * size - [x, y, x, y]) / s
            out_boxes[i] = np.clip(b, 0.0, 1.0)
        if flip and rng.random() < 0.5:
            img = img[:, ::-1]
            if box is not None:
                x1, y1, x2, y2 = out_boxes[i]
                out_boxes[i] = [1 - x2, y1, 1 - x1, y2]
        if brightness:
            img = np.clip(img.astype(np.float32) * rng.uniform(1 - brightness, 1 + brightness), 0, 255).astype(np.uint8)
        out[i] = img
    return out, out_boxes


def embed_augmented(embed, images: np.ndarray, copies: int, rng: np.random.Generator) -> np.ndarray:
    """Embeddings of `copies` augmented versions of each image, copy-major: (copies * n, d)."""
    out = []
    for _ in range(copies):
        batch, _ = augment_batch(images, None, rng)
        out.extend(embed(px) for px in batch)
    return np.stack(out)
