"""How pixel values 0..255 become model input values, per backbone family."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scaling:
    """Pixel value p (0..255) becomes p * scale + offset before the model."""

    scale: float = 1 / 127.5
    offset: float = -1.0


SCALING_BY_FAMILY = {
    "mobilenet_v1": Scaling(1 / 127.5, -1.0),
    "mobilenet_v2": Scaling(1 / 127.5, -1.0),
    # Keras MobileNetV3 rescales inside the model.
    "mobilenet_v3_small": Scaling(1.0, 0.0),
}
