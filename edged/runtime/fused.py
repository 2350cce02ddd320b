"""An exported model folder (`model.tflite` + `metadata.json`: backbone and head in one TFLite file). No TensorFlow.

The model's outputs are decoded by the head that made it (its `decode` classmethod), so this module
knows no head by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import EngineError, HeadError
from ..files import file_sha256
from .engine import Engine, EngineOptions
from .scaling import Scaling

Decoder = Callable[[list, dict], object]  # (outputs, metadata) -> Prediction


def read_metadata(folder: Path) -> dict:
    meta_path = Path(folder) / "metadata.json"
    try:
        return json.loads(meta_path.read_text())
    except (OSError, ValueError) as e:
        raise HeadError(f"{meta_path}: missing or unreadable metadata: {e}") from None


class FusedModel:
    """Checks the file's sha256 and input size against its metadata before serving it."""

    def __init__(self, folder: Path, decoder: Decoder, num_threads: int = 2, interpreter: str = "auto",
                 delegate: str = "none"):
        self.folder = Path(folder)
        self.decoder = decoder
        self.meta = read_metadata(self.folder)
        model_path = self.folder / "model.tflite"
        if not model_path.is_file():
            raise HeadError(f"{model_path}: missing")
        sha = file_sha256(model_path)
        if sha != self.meta.get("sha256"):
            raise HeadError(f"{model_path}: sha256 {sha[:12]} does not match metadata {str(self.meta.get('sha256'))[:12]}: "
                            f"refusing a corrupt or swapped model")
        pre = self.meta["preprocessing"]
        try:
            self.engine = Engine(EngineOptions(str(model_path), num_threads=num_threads, interpreter=interpreter,
                                               delegate=delegate, scaling=Scaling(pre["scale"], pre["offset"])))
        except EngineError as e:
            raise HeadError(str(e)) from None
        if self.engine.input_size != self.meta["input_size"]:
            raise HeadError(f"{model_path}: input {self.engine.input_size}px, metadata says {self.meta['input_size']}px")
        self.sha = sha
        self.labels = self.meta["labels"]
        self.input_size = self.meta["input_size"]
        self.fit = self.meta.get("preprocessing", {}).get("fit", "crop")  # how a frame fits its input

    def outputs(self, pixels: np.ndarray) -> list[np.ndarray]:
        return self.engine.run(pixels)

    def predict(self, pixels: np.ndarray, placement=None):
        """Decode the model's answer for `pixels` (fitted as `self.fit` says); boxes mapped to the frame by `placement`."""
        pred = self.decoder(self.engine.run(pixels), self.meta)
        pred.model_sha = self.sha[:16]
        if placement is not None:
            for item in pred.boxes:
                item["box"] = placement.to_frame(item["box"])
        return pred

    def close(self) -> None:
        self.engine.close()
