"""Capture jobs: store `count` frames under a label, `interval` seconds apart; one at a time."""

from __future__ import annotations

import threading
import time
from typing import Optional

import numpy as np

from ..errors import CommandError
from ..state.store import NewExample, Store


class CaptureJob:
    """Frames are due every `interval_s` from the start (not from the last one stored). With `dedupe` < 1 a
    frame whose embedding is at least that similar to the last kept one is skipped: a still camera gives
    near-copies, which teach nothing and make the quality report lie. Ends at `count`, or at `timeout_s`
    with what it has."""

    def __init__(self, store: Store, backbone_id: str, label: str, count: int, interval_s: float,
                 objects: Optional[list[tuple[str, tuple]]] = None, responder=None, corr_id=None, dedupe: float = 1.0,
                 timeout_s: Optional[float] = None, max_per_label: int = 0, max_total: int = 0):
        self.store = store
        self.backbone_id = backbone_id
        self.label = label
        self.count = count
        self.interval_s = interval_s
        self.objects = list(objects) if objects else None
        self.box = self.objects[0][1] if self.objects and len(self.objects) == 1 else None
        self.responder = responder
        self.corr_id = corr_id
        self.dedupe = dedupe
        self.timeout_s = timeout_s
        self.caps = (max_per_label, max_total)  # the store's example caps, applied when the capture ends
        self.stored = 0
        self.skipped = 0
        self.cancelled = False
        self.started = time.monotonic()
        self._next_due = self.started
        self._last: Optional[np.ndarray] = None

    @property
    def done(self) -> bool:
        return self.stored >= self.count

    @property
    def timed_out(self) -> bool:
        return self.timeout_s is not None and time.monotonic() - self.started > self.timeout_s

    def _duplicate(self, embedding: np.ndarray) -> bool:
        if self.dedupe >= 1.0 or self._last is None or embedding is None:
            return False
        v = np.reshape(embedding, -1).astype(np.float32)
        similarity = float(v @ self._last / max(np.linalg.norm(v) * np.linalg.norm(self._last), 1e-12))
        return similarity >= self.dedupe

    def offer(self, image: np.ndarray, embedding: np.ndarray) -> bool:
        """Store this frame if one is due and it is not a near-copy of the last kept; True once it is on disk."""
        now = time.monotonic()
        if self.done or now < self._next_due:
            return False
        if self._duplicate(embedding):
            self.skipped += 1
            return False
        self.store.add(NewExample(image, self.label, embedding, objects=self.objects), self.backbone_id)
        self.stored += 1
        self._last = None if embedding is None else np.reshape(embedding, -1).astype(np.float32)
        self._next_due = max(self._next_due + self.interval_s, now - self.interval_s)
        return True

    def prune(self) -> int:
        """Apply the example caps (oldest first); how many examples were removed."""
        return self.store.prune(self.label, *self.caps) if any(self.caps) else 0

    def progress(self) -> dict:
        return {"label": self.label, "stored": self.stored, "count": self.count, "skipped_similar": self.skipped,
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
