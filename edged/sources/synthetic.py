"""Synthetic scenes (triangles and rectangles among noise circles and lines) and the source that plays them."""

from __future__ import annotations

from dataclasses import dataclass, field
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
    label: str  # of the first shape
    box: tuple[float, float, float, float]  # the first shape's x1, y1, x2, y2 normalised to [0, 1]
    objects: list = field(default_factory=list)  # (label, box) of every shape


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(40, 256, size=3))


def _overlap(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return iw * ih / max(min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])), 1e-9)


def _draw_shape(img, rng, shape, width, height, min_frac, max_frac, taken):
    """Place a shape overlapping no earlier one by more than a quarter of the smaller (a few tries)."""
    for _ in range(20):
        w = int(rng.uniform(min_frac, max_frac) * width)
        h = int(rng.uniform(min_frac, max_frac) * height)
        x1 = int(rng.integers(0, width - w + 1))
        y1 = int(rng.integers(0, height - h + 1))
        x2, y2 = x1 + w - 1, y1 + h - 1
        box = (x1 / width, y1 / height, (x2 + 1) / width, (y2 + 1) / height)
        if all(_overlap(box, other) <= 0.25 for other in taken):
            break
    colour = _colour(rng)
    if shape == "rectangle":
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, -1)
    else:
        apex = int(rng.integers(x1, x2 + 1))
        pts = np.array([[apex, y1], [x1, y2], [x2, y2]], np.int32)
        cv2.fillPoly(img, [pts], colour)
    return box


def make_scene(
    rng: np.random.Generator,
    width: int = 128,
    height: int = 128,
    shape: str | None = None,
    clutter: int = 10,
    min_frac: float = 0.25,
    max_frac: float = 0.6,
    objects: int = 1,
) -> Scene:
    """Draw `clutter` circles and `clutter` lines, then `objects` shapes on top (smaller when several)."""
    if shape is not None and shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    first = shape or SHAPES[int(rng.integers(0, 2))]  # drawn before the clutter: scenes as they always were
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
    if objects > 1:
        min_frac, max_frac = min_frac * 0.6, max_frac * 0.7
    placed = []
    for i in range(max(1, objects)):
        kind = first if i == 0 else shape or SHAPES[int(rng.integers(0, 2))]
        placed.append((kind, _draw_shape(img, rng, kind, width, height, min_frac, max_frac, [b for _, b in placed])))
    return Scene(img, placed[0][0], placed[0][1], placed)


def scene_at(seed: int, index: int, width: int, height: int, shape: str | None = None, clutter: int = 10,
             objects: int | tuple[int, int] = 1) -> Scene:
    """The scene a synthetic source shows at frame `index`: reproducible from (seed, index).

    `objects` is a count or an inclusive (least, most) range drawn per scene.
    """
    rng = np.random.default_rng([seed, index])
    if isinstance(objects, tuple):
        objects = int(rng.integers(objects[0], objects[1] + 1))
    return make_scene(rng, width, height, shape=shape, clutter=clutter, objects=objects)


class SyntheticSource(Source):
    """`synthetic`, or `synthetic:shape=triangle,clutter=4,frames=100,objects=1-3`."""

    live = False

    def __init__(self, spec: str, cfg: SourceConfig):
        self.cfg = cfg
        self.fps = cfg.fps
        self.description = spec
        opts = dict(kv.split("=", 1) for kv in spec.partition(":")[2].split(",") if "=" in kv)
        unknown = set(opts) - {"shape", "clutter", "frames", "objects"}
        if unknown:
            raise SourceError(f"synthetic source: unknown option(s) {sorted(unknown)}")
        self.shape = opts.get("shape")
        self.clutter = int(opts.get("clutter", 10))
        self.frames = int(opts.get("frames", 0))  # 0 = endless
        least, _, most = opts.get("objects", "1").partition("-")
        try:
            self.objects = (int(least), int(most or least))
        except ValueError:
            raise SourceError(f"synthetic source: objects={opts['objects']!r}: give a count or a range like 1-3") from None
        if not 1 <= self.objects[0] <= self.objects[1] <= 10:
            raise SourceError(f"synthetic source: objects={opts['objects']!r}: between 1 and 10")
        self._pos = 0

    def open(self) -> None:
        self._pos = 0

    def read(self) -> Optional[Frame]:
        if self.frames and self._pos >= self.frames:
            if not self.cfg.loop:
                return None
            self._pos = 0
        scene = scene_at(self.cfg.seed, self._pos, self.cfg.width, self.cfg.height, self.shape, self.clutter,
                         self.objects if self.objects != (1, 1) else 1)
        frame = Frame(scene.image, self._pos)
        self._pos += 1
        return frame
