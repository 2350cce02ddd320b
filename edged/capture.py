"""A capture job: store `count` frames under a label, `interval` seconds apart."""

from __future__ import annotations

import time
from typing import Optional

import numpy as np

from .store import NewExample, Store


class CaptureJob:
    def __init__(self, store: Store, backbone_id: str, label: str, count: int, interval_s: float,
                 box: Optional[tuple] = None, incoming=None, corr_id=None):
        self.store = store
        self.backbone_id = backbone_id
        self.label = label
        self.count = count
        self.interval_s = interval_s
        self.box = tuple(box) if box is not None else None
        self.incoming = incoming
        self.corr_id = corr_id
        self.stored = 0
        self.started = time.monotonic()
        self._next_due = 0.0

    @property
    def done(self) -> bool:
        return self.stored >= self.count

    def offer(self, image: np.ndarray, embedding: np.ndarray) -> bool:
        """Store this frame if one is due; True once it is durably on disk."""
        now = time.monotonic()
        if self.done or now < self._next_due:
            return False
        self.store.add(NewExample(image, self.label, embedding, self.box), self.backbone_id)
        self.stored += 1
        self._next_due = now + self.interval_s
        return True

    def progress(self) -> dict:
        return {"label": self.label, "stored": self.stored, "count": self.count,
                "seconds": round(time.monotonic() - self.started, 2)}
