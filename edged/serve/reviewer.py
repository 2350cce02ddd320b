"""Deciding which served frames go to the review queue: uncertain or novel ones, rate-limited, written off the loop."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable, Optional

from ..config import ReviewConfig
from ..heads.base import Prediction
from ..state.review import ReviewQueue

log = logging.getLogger(__name__)


class Reviewer:
    def __init__(self, cfg: ReviewConfig, items: ReviewQueue, backbone: str, announce: Callable[[dict], None],
                 stop: threading.Event):
        self.cfg = cfg
        self.items = items
        self.backbone = backbone
        self.announce = announce
        self.stop = stop
        self._pending: "queue.Queue[tuple]" = queue.Queue(maxsize=2)
        self._last = 0.0
        self._thread = threading.Thread(target=self._write, name="review", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self) -> None:
        self._thread.join(5)

    def _why(self, pred: Prediction) -> Optional[str]:
        if pred.label == "unknown":
            return "unknown"
        if pred.novelty is not None and pred.novelty >= self.cfg.novelty:
            return "novel"
        if pred.scores and pred.score < self.cfg.min_score:
            return "uncertain"
        return None

    def consider(self, frame, embedding, predictions: list[tuple[str, Prediction]]) -> None:
        """Called on the frame loop: cheap checks, the write happens on the review thread."""
        if not self.cfg.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.cfg.min_interval_s:
            return
        for head, pred in predictions:
            why = self._why(pred)
            if why is None:
                continue
            self._last = now
            info = {"head": head, "label": pred.label, "score": round(pred.score, 4), "novelty": pred.novelty,
                    "reason": why, "pos": frame.pos}
            try:
                self._pending.put_nowait((frame.image, None if embedding is None else embedding.copy(), info))
            except queue.Full:
                pass
            return

    def _write(self) -> None:
        while not self.stop.is_set():
            try:
                image, embedding, info = self._pending.get(timeout=0.25)
            except queue.Empty:
                continue
            try:
                item = self.items.add(image, embedding, self.backbone, info)
                self.announce(item)
            except Exception:
                log.exception("review item not kept")
