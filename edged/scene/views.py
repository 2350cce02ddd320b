"""Views of a frame: the whole frame, or the configured regions, each predicted and stated on its own."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..config import RegionConfig

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class View:
    name: str  # "" for the whole frame
    box: Optional[Box] = None  # x1, y1, x2, y2 in [0, 1] of the frame; None = all of it
    heads: Optional[tuple[str, ...]] = None  # None = the active heads

    @property
    def whole(self) -> bool:
        return self.box is None

    def crop(self, image: np.ndarray) -> np.ndarray:
        return image if self.box is None else image[pixel_slices(self.box, *image.shape[:2])]


def pixel_slices(box: Box, h: int, w: int) -> tuple[slice, slice]:
    """The rows and columns of an h x w image that a [0, 1] box covers (at least one pixel each way)."""
    x1, y1, x2, y2 = box
    r1, c1 = min(int(y1 * h), h - 1), min(int(x1 * w), w - 1)
    return slice(r1, max(int(round(y2 * h)), r1 + 1)), slice(c1, max(int(round(x2 * w)), c1 + 1))


WHOLE = View("")


def views_of(regions: list[RegionConfig]) -> list[View]:
    """The regions when there are any (a region [0, 0, 1, 1] keeps the whole frame too), else the whole frame."""
    if not regions:
        return [WHOLE]
    return [View(r.name, tuple(r.box), tuple(r.heads) if r.heads is not None else None) for r in regions]
