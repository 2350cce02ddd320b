"""Views of a frame: the whole frame, or the configured regions, each predicted and stated on its own.

A view's `name` is its place in the daemon, the topic levels after the head: "" (the one source's frame),
"<region>", "<source>" or "<source>/<region>" when the daemon serves several sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ..config import Camera

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class View:
    name: str  # the place: "" for the whole frame of the one source
    box: Optional[Box] = None  # x1, y1, x2, y2 in [0, 1] of the frame; None = all of it
    heads: Optional[tuple[str, ...]] = None  # None = the active heads
    source: str = ""  # the source's name ("" for the one `[source]`)
    region: str = ""  # the region's name ("" for the whole frame)

    @property
    def fields(self) -> dict:
        """The view's `source` and `region`, for a message (none for the one source's whole frame)."""
        return {k: v for k, v in (("source", self.source), ("region", self.region)) if v}

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


def place(source: str, region: str = "") -> str:
    """The topic levels naming a view: `source/region`, either part left out when empty."""
    return "/".join(part for part in (source, region) if part)


def views_of(camera: Camera) -> list[View]:
    """A source's regions when it has any (a region [0, 0, 1, 1] keeps the whole frame too), else its frame."""
    if not camera.regions:
        return [View(camera.name, heads=camera.heads, source=camera.name)]
    return [View(place(camera.name, r.name), tuple(r.box),
                 tuple(r.heads) if r.heads is not None else camera.heads, camera.name, r.name)
            for r in camera.regions]
