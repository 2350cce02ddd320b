"""Capture jobs: store `count` frames under a label, `interval` seconds apart; one at a time."""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable, Optional

import numpy as np

from ..errors import CommandError
from ..state.store import NewExample, Store


class CaptureJob:
    """Frames are due every `interval_s` from the start (not from the last one stored). With `dedupe` < 1 a
    frame whose embedding is at least that similar to the last kept one is skipped: a still camera gives
    near-copies, which teach nothing and make the quality report lie. Ends at `count`, or at `timeout_s`
    with what it has.

    With a `writer` (`learned` is called for each example once it is on disk), the JPEG and the SQLite row are
    written on a thread of the job's own: the frame loop only chooses frames and never waits on the disk. `stored`
    counts what is on disk; the reply is made only after `close()` has waited for the last write."""

    def __init__(self, store: Store, backbone_id: str, label: str, count: int, interval_s: float,
                 objects: Optional[list[tuple[str, tuple]]] = None, responder=None, corr_id=None, dedupe: float = 1.0,
                 timeout_s: Optional[float] = None, max_per_label: int = 0, max_total: int = 0,
                 writer: bool = False, learned: Optional[Callable[[np.ndarray, str, object], None]] = None,
                 region: str = "", source: str = ""):
        self.store = store
        self.source = source  # the source examples are taken from ("" the one source)
        self.region = region  # "" the whole frame, else a region's crop
        self.place = "/".join(part for part in (source, region) if part)  # the view's name (edged.scene.views)
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
        self.skipped_loudness = 0  # sound windows of the wrong loudness for the label (edged.serve.frameloop)
        self.skipped_cut = 0  # sound windows holding only a part of a sound (edged.sources.audio.holds_whole_sound)
        self.cancelled = False
        self.started = time.monotonic()
        self._next_due = self.started
        self._last: Optional[np.ndarray] = None
        self.accepted = 0  # frames chosen (stored, or waiting for the writer)
        self.failed: Optional[str] = None  # why the writer stopped
        self.learned = learned
        self._writes: Optional["queue.Queue"] = None
        if writer:
            self._writes = queue.Queue()
            self._writer = threading.Thread(target=self._write_loop, name="capture-writer", daemon=True)
            self._writer.start()

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

    @property
    def all_chosen(self) -> bool:
        return self.accepted >= self.count or self.failed is not None

    def offer(self, image: np.ndarray, embedding: np.ndarray, audio: Optional[np.ndarray] = None) -> bool:
        """Take this frame if one is due and it is not a near-copy of the last kept; True once it is on disk (with a
        writer: once it is handed to it)."""
        now = time.monotonic()
        if self.all_chosen or now < self._next_due:
            return False
        if self._duplicate(embedding):
            self.skipped += 1
            return False
        self.accepted += 1
        self._last = None if embedding is None else np.reshape(embedding, -1).astype(np.float32)
        self._next_due = max(self._next_due + self.interval_s, now - self.interval_s)
        if self._writes is not None:
            self._writes.put((image, embedding, audio))
        else:
            self._write(image, embedding, audio)
        return True

    def _write(self, image: np.ndarray, embedding: np.ndarray, audio: Optional[np.ndarray] = None) -> None:
        self.store.add(NewExample(image, self.label, embedding, objects=self.objects, source=self.source or None,
                                  audio=audio), self.backbone_id)
        self.stored += 1
        if self.learned is not None:
            self.learned(embedding, self.label, self.box)

    def _write_loop(self) -> None:
        while True:
            item = self._writes.get()
            if item is None:
                return
            if self.failed is not None:
                continue
            try:
                self._write(*item)
            except Exception as e:  # e.g. the disk is full: the job ends with what is on disk
                self.failed = f"capture stopped after {self.stored} examples: {type(e).__name__}: {e}"
                continue
            if self.responder is not None and self.stored % 10 == 0 and not self.done:
                self.responder.progress(self.progress())

    def close(self) -> None:
        """Wait for the writer to put every chosen frame on disk (a no-op without a writer)."""
        if self._writes is not None and self._writer.is_alive():
            self._writes.put(None)
            self._writer.join()

    def prune(self) -> int:
        """Apply the example caps (oldest first); how many examples were removed."""
        return self.store.prune(self.label, *self.caps) if any(self.caps) else 0

    def progress(self) -> dict:
        where = {k: v for k, v in (("source", self.source), ("region", self.region)) if v}
        return {"label": self.label, **where, "stored": self.stored, "count": self.count, "skipped_similar": self.skipped,
                **({"skipped_loudness": self.skipped_loudness} if self.skipped_loudness else {}),
                **({"skipped_cut": self.skipped_cut} if self.skipped_cut else {}),
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
