"""Capture jobs: store `count` frames under a label, `interval` seconds apart; one at a time."""

from __future__ import annotations

import threading
import time
from typing import Optional

import numpy as np

from ..errors import CommandError
from ..state.store import NewExample, Store


class CaptureJob:
    def __init__(self, store: Store, backbone_id: str, label: str, count: int, interval_s: float,
                 box: Optional[tuple] = None, responder=None, corr_id=None):
        self.store = store
        self.backbone_id = backbone_id
        self.label = label
        self.count = count
        self.interval_s = interval_s
        self.box = tuple(box) if box is not None else None
        self.responder = responder
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


class CaptureDesk:
    """Holds the one running capture job; the frame loop offers it frames."""

    def __init__(self):
        self._lock = threading.Lock()
        self.current: Optional[CaptureJob] = None

    def start(self, job: CaptureJob) -> None:
        with self._lock:
            running = self.current
            if running is not None:
                raise CommandError(f"capture of {running.label!r} is running ({running.stored}/{running.count}); "
                                   f"wait for its reply", job.corr_id)
            self.current = job

    def finish(self, job: CaptureJob) -> None:
        with self._lock:
            if self.current is job:
                self.current = None
