"""Synthetic scenes (one triangle or rectangle among noise circles and lines) and the source that plays them."""

from __future__ import annotations

from dataclasses import dataclass

from typing import Optional

import cv2
import numpy as np

from ..config import SourceConfig
from ..errors import SourceError
from .base import Frame, Source

SHAPES = ("triangle", "rectangle")


@dataclass
class Scene:
    image: np.ndarray  # BGR uint8, (height, width, 3)
    label: str
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 normalised to [0, 1]


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(40, 256, size=3))


def make_scene(
    rng: np.random.Generator,
    width: int = 128,
    height: int = 128,
    shape: str | None = None,
    clutter: int = 10,
    min_frac: float = 0.25,
    max_frac: float = 0.6,
) -> Scene:
    """Draw `clutter` circles and `clutter` lines, then the shape on top."""
    if shape is None:
        shape = SHAPES[int(rng.integers(0, 2))]
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    img = np.zeros((height, width, 3), np.uint8)
    short = min(width, height)
    lw = max(1, short // 64)
    for _ in range(clutter):
        centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        radius = int(rng.integers(short // 40 + 1, short // 8 + 2))
        cv2.circle(img, centre, radius, _colour(rng), lw)
    for _ in range(clutter):
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        cv2.line(img, p1, p2, _colour(rng), lw)
    w = int(rng.uniform(min_frac, max_frac) * width)
    h = int(rng.uniform(min_frac, max_frac) * height)
    x1 = int(rng.integers(0, width - w + 1))
    y1 = int(rng.integers(0, height - h + 1))
    x2, y2 = x1 + w - 1, y1 + h - 1
    colour = _colour(rng)
    if shape == "rectangle":
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, -1)
    else:
        apex = int(rng.integers(x1, x2 + 1))
        pts = np.array([[apex, y1], [x1, y2], [x2, y2]], np.int32)
        cv2.fillPoly(img, [pts], colour)
    box = (x1 / width, y1 / height, (x2 + 1) / width, (y2 + 1) / height)
    return Scene(img, shape, box)


def scene_at(seed: int, index: int, width: int, height: int, shape: str | None = None, clutter: int = 10) -> Scene:
    """The scene a synthetic source shows at frame `index`: reproducible from (seed, index)."""
    rng = np.random.default_rng([seed, index])
    return make_scene(rng, width, height, shape=shape, clutter=clutter)


class SyntheticSource(Source):
    """`synthetic`, or `synthetic:shape=triangle,clutter=4,frames=100`."""

    live = False

    def __init__(self, spec: str, cfg: SourceConfig):
        self.cfg = cfg
        self.fps = cfg.fps
        self.description = spec
        opts = dict(kv.split("=", 1) for kv in spec.partition(":")[2].split(",") if "=" in kv)
        unknown = set(opts) - {"shape", "clutter", "frames"}
        if unknown:
            raise SourceError(f"synthetic source: unknown option(s) {sorted(unknown)}")
        self.shape = opts.get("shape")
        self.clutter = int(opts.get("clutter", 10))
        self.frames = int(opts.get("frames", 0))  # 0 = endless
        self._pos = 0

    def open(self) -> None:
        self._pos = 0

    def read(self) -> Optional[Frame]:
        if self.frames and self._pos >= self.frames:
            if not self.cfg.loop:
                return None
            self._pos = 0
        scene = scene_at(self.cfg.seed, self._pos, self.cfg.width, self.cfg.height, self.shape, self.clutter)
        frame = Frame(scene.image, self._pos)
        self._pos += 1
        return frame
