"""A cheap change detector on a small grey copy of each frame: blur, running-average background, threshold,
dilate, blobs over a minimum area. A sudden change over most of the frame is taken as a light change and resets
the background instead of counting as motion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from ..config import GateConfig
from .views import Box, pixel_slices


@dataclass
class Motion:
    mask: np.ndarray  # uint8, 255 where a blob over the minimum area moved (small frame's size)
    fraction: float  # of the frame changing, before blobs were filtered
    lighting: bool = False
    first: bool = False  # no background yet

    def moving_in(self, box: Optional[Box], min_area: float) -> bool:
        """Whether moving blobs cover at least `min_area` of this box (None: the whole frame)."""
        mask = self.mask if box is None else self.mask[pixel_slices(box, *self.mask.shape)]
        return mask.size > 0 and cv2.countNonZero(mask) >= min_area * mask.size


class MotionDetector:
    def __init__(self, cfg: GateConfig, smallest_view: float = 1.0):
        self.cfg = cfg
        self.smallest_view = smallest_view  # area of the smallest region, as a fraction of the frame
        self._background: Optional[np.ndarray] = None
        self._ignore: Optional[np.ndarray] = None  # 0 on masked areas, 1 elsewhere
        self._kernel = np.ones((3, 3), np.uint8)
        self._still: Optional[np.ndarray] = None  # the all-zero mask of a frame without motion (shared, read-only)

    def _small(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        height = min(self.cfg.frame_height, h)
        width = max(1, round(w * height / h))
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        small = cv2.resize(grey, (width, height), interpolation=cv2.INTER_LINEAR)  # the blur does the smoothing
        return cv2.GaussianBlur(small, (5, 5), 0)

    def _ignore_mask(self, shape: tuple[int, int]) -> np.ndarray:
        if self._ignore is None or self._ignore.shape != shape:
            keep = np.ones(shape, np.uint8)
            h, w = shape
            for x1, y1, x2, y2 in self.cfg.masks:
                keep[int(y1 * h):int(np.ceil(y2 * h)), int(x1 * w):int(np.ceil(x2 * w))] = 0
            self._ignore = keep
        return self._ignore

    def detect(self, image: np.ndarray) -> Motion:
        small = self._small(image)
        if self._background is None or self._background.shape != small.shape:
            self._background = small.astype(np.float32)
            return Motion(np.zeros_like(small), 0.0, first=True)
        diff = cv2.absdiff(small, cv2.convertScaleAbs(self._background))
        diff *= self._ignore_mask(small.shape)
        _, moving = cv2.threshold(diff, self.cfg.threshold, 255, cv2.THRESH_BINARY)
        moving = cv2.dilate(moving, self._kernel, iterations=2)
        fraction = cv2.countNonZero(moving) / moving.size
        if fraction > self.cfg.lighting_fraction:
            self._background = small.astype(np.float32)
            return Motion(np.zeros_like(small), fraction, lighting=True)
        cv2.accumulateWeighted(small, self._background, self.cfg.alpha)
        if self._still is None or self._still.shape != small.shape:
            self._still = np.zeros_like(small)
        if not fraction:
            return Motion(self._still, 0.0)
        smallest = self.cfg.min_area * moving.size * self.smallest_view
        contours, _ = cv2.findContours(moving, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        big = [c for c in contours if cv2.contourArea(c) >= smallest]
        if not big:
            return Motion(self._still, fraction)
        blobs = np.zeros_like(small)
        cv2.drawContours(blobs, big, -1, 255, thickness=cv2.FILLED)
        return Motion(blobs, fraction)
