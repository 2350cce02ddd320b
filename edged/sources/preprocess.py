"""Frame preprocessing: centre crop, letterbox or stretch, resize, RGB; the box mapping between frame and model input.

Three ways to fit a frame into the model's square input:

* ``crop`` (classifier heads and the backbone's embedding): the centred square of the frame. What
  lies outside it is not seen.
* ``letterbox`` (the grid `objects` head): the whole frame, scaled to fit and padded with grey, so
  objects near the edges are kept.
* ``stretch`` (the single-box head): the whole frame resized to the square input, aspect ratio not
  kept: every input pixel shows the frame (a 4:3 frame letterboxed leaves a quarter of the input
  to padding).

Boxes are normalised ``(x1, y1, x2, y2)`` in ``[0, 1]``. In predictions, captures, imports and the
store they are in the coordinates of the original frame; :class:`Placement` maps them to the model
input and back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

PAD_VALUE = 114


def centre_crop(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    return image[y : y + s, x : x + s]


def crop_box(image_shape: tuple[int, ...]) -> tuple[float, float, float, float]:
    """The centre crop as a normalised (x1, y1, x2, y2) box of the full frame."""
    h, w = image_shape[:2]
    s = min(h, w)
    x, y = (w - s) // 2, (h - s) // 2
    return (x / w, y / h, (x + s) / w, (y + s) / h)


def to_pixels(image_bgr: np.ndarray, size: int) -> np.ndarray:
    """BGR frame of any size -> RGB uint8 (size, size, 3), centre-cropped.

    Large downscales go through pyrDown (a Gaussian 2x step, anti-aliased) and finish with a
    bilinear resize: about 5x cheaper than INTER_AREA at non-integer ratios, with no aliasing.
    """
    sq = _downscaled(centre_crop(image_bgr), size)
    resized = cv2.resize(sq, (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)


def _downscaled(image: np.ndarray, size: int) -> np.ndarray:
    while max(image.shape[:2]) >= 2 * size:
        image = cv2.pyrDown(image)
    return image


def letterbox(image_bgr: np.ndarray, size: int) -> np.ndarray:
    """BGR frame -> RGB uint8 (size, size, 3): the whole frame scaled to fit, centred, padded with grey."""
    h, w = image_bgr.shape[:2]
    small = _downscaled(image_bgr, size)
    scale = size / max(h, w)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = np.full((size, size, 3), PAD_VALUE, np.uint8)
    x, y = (size - nw) // 2, (size - nh) // 2
    out[y:y + nh, x:x + nw] = cv2.cvtColor(cv2.resize(small, (nw, nh), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
    return out


def stretch(image_bgr: np.ndarray, size: int) -> np.ndarray:
    """BGR frame -> RGB uint8 (size, size, 3): the whole frame resized to the square, aspect ratio not kept."""
    resized = cv2.resize(_downscaled(image_bgr, size), (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)


_FITTERS = {"crop": to_pixels, "letterbox": letterbox, "stretch": stretch}
FITS = tuple(_FITTERS)


@dataclass(frozen=True)
class Placement:
    """Where the model input sits in the frame, per axis: frame = origin + extent * model (all normalised)."""

    origin_x: float
    origin_y: float
    extent_x: float
    extent_y: float

    @classmethod
    def of(cls, shape: tuple[int, ...], fit: str, size: int = 0) -> "Placement":
        h, w = shape[:2]
        if fit == "crop":
            x1, y1, x2, y2 = crop_box(shape)
            return cls(x1, y1, x2 - x1, y2 - y1)
        if fit == "letterbox":
            side = max(h, w)
            if size:  # the exact pixel placement letterbox() uses
                scale = size / side
                nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
                px, py = (size - nw) // 2, (size - nh) // 2
                return cls(-px / nw, -py / nh, size / nw, size / nh)
            return cls(-(side - w) / 2 / w, -(side - h) / 2 / h, side / w, side / h)
        if fit == "stretch":
            return cls(0.0, 0.0, 1.0, 1.0)
        raise ValueError(f"unknown fit {fit!r}; expected one of {FITS}")

    def to_frame(self, box) -> list[float]:
        """A model-input box -> the frame's coordinates, clipped to the frame."""
        x1, y1, x2, y2 = box
        out = [self.origin_x + self.extent_x * x1, self.origin_y + self.extent_y * y1,
               self.origin_x + self.extent_x * x2, self.origin_y + self.extent_y * y2]
        return [float(min(max(v, 0.0), 1.0)) for v in out]

    def to_model(self, box) -> np.ndarray:
        """A frame box -> model-input coordinates (clipped: the part of the box the model sees)."""
        x1, y1, x2, y2 = box
        out = np.array([(x1 - self.origin_x) / self.extent_x, (y1 - self.origin_y) / self.extent_y,
                        (x2 - self.origin_x) / self.extent_x, (y2 - self.origin_y) / self.extent_y], np.float32)
        return np.clip(out, 0.0, 1.0)


def fit_frame(image_bgr: np.ndarray, size: int, fit: str) -> tuple[np.ndarray, Placement]:
    placement = Placement.of(image_bgr.shape, fit, size)  # raises for an unknown fit
    return _FITTERS[fit](image_bgr, size), placement


class FrameView:
    """One frame, fitted to a model input on demand (each fit and size computed once).

    `size` is the backbone's input; a head's own model may ask for another size.
    """

    def __init__(self, image_bgr: np.ndarray, size: int, pixels: Optional[np.ndarray] = None):
        self.image = image_bgr
        self.size = size
        self._fits: dict[tuple[str, int], tuple[np.ndarray, Placement]] = {}
        if pixels is not None:
            self._fits[("crop", size)] = (pixels, Placement.of(image_bgr.shape, "crop", size))

    @property
    def pixels(self) -> np.ndarray:
        return self.fitted("crop")[0]

    def fitted(self, fit: str, size: Optional[int] = None) -> tuple[np.ndarray, Placement]:
        key = (fit, size or self.size)
        if key not in self._fits:
            self._fits[key] = fit_frame(self.image, key[1], fit)
        return self._fits[key]
