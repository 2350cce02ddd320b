"""The head interface: numpy embeddings in, predictions out. No camera, no MQTT."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

import numpy as np

from .store import Examples


class HeadError(Exception):
    """A head that cannot learn, load or predict with what it was given."""


@dataclass
class Prediction:
    label: str
    score: float
    scores: dict[str, float] = field(default_factory=dict)
    boxes: list[dict] = field(default_factory=list)
    model_sha: Optional[str] = None  # set when an exported model (not backbone + head) answered


@dataclass
class NoOptions:
    pass


class Head:
    """Base class for heads. Subclasses set `name`, `kind`, `Options` and implement `fit`/`predict`."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "classes"  # or "boxes"
    Options: ClassVar[type] = NoOptions
    incremental: ClassVar[bool] = False  # True when `add` learns an example at once
    needs_tensorflow: ClassVar[bool] = False  # fit runs in a TensorFlow child process
    takes_pixels: bool = False  # True: predict_pixels(RGB uint8) instead of predict(embedding)

    def __init__(self, options=None):
        self.options = options if options is not None else self.Options()

    @property
    def ready(self) -> bool:
        """True once the head can predict."""
        raise NotImplementedError

    @property
    def classes(self) -> list[str]:
        return []

    def fit(self, examples: Examples, progress=None) -> dict:
        """Learn from every stored example; return metrics."""
        raise NotImplementedError

    def add(self, embedding: np.ndarray, label: str, box=None) -> None:
        raise HeadError(f"head {self.name!r} does not learn example by example; train it")

    def forget(self, label: str) -> None:
        """Drop a label; heads that cannot unlearn become not ready until retrained."""

    def predict(self, embedding: np.ndarray) -> Prediction:
        raise NotImplementedError

    def predict_pixels(self, pixels: np.ndarray) -> Prediction:
        raise HeadError(f"head {self.name!r} predicts from embeddings")

    def save(self, folder: Path) -> None:
        """Persist learned state to `folder` (may be a no-op when the store is enough)."""

    def load(self, folder: Path) -> bool:
        """Restore state saved by `save`; False when there is none."""
        return False

    def close(self) -> None:
        pass


def build_options(head_cls: type[Head], values: Optional[dict], where: str):
    """Instantiate `head_cls.Options` from a dict; errors name the config key."""
    values = dict(values or {})
    try:
        return head_cls.Options(**values)
    except TypeError as e:
        raise HeadError(f"{where}: {e}") from None


def head_options(cfg, head_cls: type[Head]):
    """A head's options from the config: `[heads.knn]` for the kNN head, `[heads.options.<name>]` for the rest."""
    if head_cls.name == "knn":
        return build_options(head_cls, cfg.heads.knn.model_dump(), "heads.knn")
    return build_options(head_cls, cfg.heads.options.get(head_cls.name, {}), f"heads.options.{head_cls.name}")
