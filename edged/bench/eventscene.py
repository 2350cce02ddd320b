"""A scripted scene for the events bench and tests: a background photo with camera noise and a slow light drift,
objects (photos) entering and leaving at known times, and a moving distractor inside an area meant to be masked.

Frames are made as a function of time, so a video of any length can be written and the truth read back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np


@dataclass
class Appearance:
    label: str
    start_s: float
    end_s: float
    box: tuple[float, float, float, float]  # where the object is, [0, 1] of the frame
    variant: int = 0  # which photo of the label


class EventScene:
    def __init__(self, background: np.ndarray, objects: dict[str, list[np.ndarray]], script: list[Appearance],
                 size: tuple[int, int] = (320, 240), fps: float = 15.0, noise: float = 3.0, drift: float = 0.15,
                 drift_period_s: float = 300.0, distractor: Optional[tuple[float, float, float, float]] = None,
                 seed: int = 0):
        self.size, self.fps, self.noise = size, fps, noise
        self.background = cv2.resize(background, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        self.objects, self.script = objects, sorted(script, key=lambda a: a.start_s)
        self.drift, self.drift_period_s = drift, drift_period_s
        self.distractor = distractor  # the masked area a bar swings in
        self.rng = np.random.default_rng(seed)

    def truth(self, t: float) -> str:
        for a in self.script:
            if a.start_s <= t < a.end_s:
                return a.label
        return "none"

    def frame(self, t: float) -> np.ndarray:
        return self._render(t, [a for a in self.script if a.start_s <= t < a.end_s], with_distractor=True)

    def _render(self, t: float, showing: list[Appearance], with_distractor: bool) -> np.ndarray:
        w, h = self.size
        light = 1.0 + self.drift * np.sin(2 * np.pi * t / self.drift_period_s)  # slow: no frame-to-frame jump
        img = self.background * light
        for a in showing:
            self._paste(img, a)
        if with_distractor and self.distractor is not None:
            x1, y1, x2, y2 = self.distractor
            phase = 0.5 + 0.45 * np.sin(2 * np.pi * t / 2.0)
            cx = int((x1 + (x2 - x1) * phase) * w)
            cv2.rectangle(img, (cx - 3, int(y1 * h) + 2), (cx + 3, int(y2 * h) - 2), (40, 200, 240), -1)
        if self.noise:
            img = img + self.rng.normal(0, self.noise, img.shape).astype(np.float32)
        return np.clip(img, 0, 255).astype(np.uint8)

    def _paste(self, img: np.ndarray, a: Appearance) -> None:
        w, h = self.size
        x1, y1, x2, y2 = int(a.box[0] * w), int(a.box[1] * h), int(a.box[2] * w), int(a.box[3] * h)
        photos = self.objects[a.label]
        img[y1:y2, x1:x2] = cv2.resize(photos[a.variant % len(photos)], (x2 - x1, y2 - y1)).astype(np.float32)

    def write(self, path: Path, duration_s: float) -> Path:
        w, h = self.size
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
        if not writer.isOpened():
            raise RuntimeError("OpenCV cannot write mp4v here")
        for i in range(int(duration_s * self.fps)):
            writer.write(self.frame(i / self.fps))
        writer.release()
        return path

    def examples(self, label: str, count: int, seed: int = 1, showing: Optional[list[Appearance]] = None) -> list[np.ndarray]:
        """Frames of `label` as the script (or `showing`) shows it, or of the empty scene (a label shown nowhere), under other noise
        and light: what a user would capture to teach it."""
        rng = np.random.default_rng(seed)
        if showing is None:
            showing = [a for a in self.script if a.label == label]
        return [self._render(float(rng.uniform(0, self.drift_period_s)), [showing[i % len(showing)]] if showing else [],
                             with_distractor=False) for i in range(count)]


def shape_photo(kind: str, size: int = 96, seed: int = 0) -> np.ndarray:
    """A stand-in object when the photo data sets are absent: a textured coloured shape on its own patch."""
    rng = np.random.default_rng(seed)
    patch = np.full((size, size, 3), 90, np.uint8) + rng.integers(0, 30, (size, size, 3), dtype=np.uint8)
    colour = {"star": (30, 220, 250), "disc": (240, 80, 40), "block": (60, 200, 60)}.get(kind, (200, 200, 200))
    c = size // 2
    if kind == "disc":
        cv2.circle(patch, (c, c), size // 3, colour, -1)
    elif kind == "block":
        cv2.rectangle(patch, (size // 5, size // 5), (4 * size // 5, 4 * size // 5), colour, -1)
    else:
        angles = np.linspace(-np.pi / 2, 3.5 * np.pi, 10, endpoint=False)
        radii = np.where(np.arange(10) % 2 == 0, 0.42, 0.18) * size
        pts = np.stack([c + radii * np.cos(angles), c + radii * np.sin(angles)], 1).astype(np.int32)
        cv2.fillPoly(patch, [pts], colour)
    return patch


def textured_background(size: tuple[int, int] = (320, 240), seed: int = 0) -> np.ndarray:
    """A stand-in background photo: smooth random colour fields with some edges."""
    rng = np.random.default_rng(seed)
    w, h = size
    small = rng.integers(40, 200, (6, 8, 3), dtype=np.uint8)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    for _ in range(12):
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        cv2.line(img, (x, y), (int(rng.integers(0, w)), int(rng.integers(0, h))), tuple(int(v) for v in
                 rng.integers(0, 255, 3)), 2)
    return img
