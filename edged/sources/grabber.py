"""The grabber thread: reads and preprocesses frames off the frame loop, reconnects with backoff."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Callable, Optional

import numpy as np

from ..config import SourceConfig
from ..errors import SourceError
from .base import Frame, Source

log = logging.getLogger(__name__)


class FrameGrabber:
    """Reads and preprocesses frames in its own thread; keeps only the newest `queue_size` frames.

    States: starting, ok, camera_lost (reconnecting with backoff), ended (file finished).
    """

    def __init__(
        self,
        source: Source,
        cfg: SourceConfig,
        stop: threading.Event,
        preprocess: Callable[[np.ndarray], np.ndarray],
        queue_size: int = 2,
    ):
        self.source = source
        self.cfg = cfg
        self.stop = stop
        self.preprocess = preprocess
        self.frames: queue.Queue[Frame] = queue.Queue(maxsize=queue_size)
        self.state = "starting"
        self.error: Optional[str] = None
        self.captured = 0
        self.dropped = 0
        self.reconnects = 0
        self.decode_s = 0.0
        self.preprocess_s = 0.0
        self._thread = threading.Thread(target=self._run, name="grabber", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)

    def get(self, timeout: float) -> Optional[Frame]:
        try:
            return self.frames.get(timeout=timeout)
        except queue.Empty:
            return None

    def _put(self, frame: Frame, wait: bool) -> None:
        """Live sources: keep the newest frames, counting drops. Unpaced files: wait for room (no wasted decodes)."""
        if wait:
            while not self.stop.is_set():
                try:
                    self.frames.put(frame, timeout=0.1)
                    return
                except queue.Full:
                    continue
            return
        while True:
            try:
                self.frames.put_nowait(frame)
                return
            except queue.Full:
                try:
                    self.frames.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def _open_with_backoff(self) -> bool:
        delay = self.cfg.reconnect_min_s
        while not self.stop.is_set():
            try:
                self.source.open()
                self.state, self.error = "ok", None
                return True
            except SourceError as e:
                self.state, self.error = "camera_lost", str(e)
                log.warning("%s; retrying in %.1fs", e, delay)
            except Exception as e:  # OpenCV can raise cv2.error on odd URLs
                self.state, self.error = "camera_lost", f"{type(e).__name__}: {e}"
                log.warning("cannot open %s: %s; retrying in %.1fs", self.source.description, e, delay)
            if self.stop.wait(delay):
                return False
            delay = min(delay * 2, self.cfg.reconnect_max_s)
            self.reconnects += 1
        return False

    def _run(self) -> None:
        paced = self.cfg.realtime and not self.source.live
        backpressure = not self.source.live and not paced
        try:
            while not self.stop.is_set():
                if self.state != "ok" and not self._open_with_backoff():
                    return
                next_due = time.monotonic()
                while not self.stop.is_set():
                    t0 = time.perf_counter()
                    try:
                        frame = self.source.read()
                    except SourceError as e:
                        log.warning("%s", e)
                        self.state, self.error = "camera_lost", str(e)
                        self.source.close()
                        break
                    if frame is None:
                        self.state = "ended"
                        log.info("%s ended", self.source.description)
                        return
                    t1 = time.perf_counter()
                    frame.pixels = self.preprocess(frame.image)
                    t2 = time.perf_counter()
                    self.decode_s += t1 - t0
                    self.preprocess_s += t2 - t1
                    self.captured += 1
                    self._put(frame, backpressure)
                    if paced:
                        next_due += 1.0 / getattr(self.source, "fps", self.cfg.fps)
                        wait = next_due - time.monotonic()
                        if wait > 0 and self.stop.wait(wait):
                            return
                        if wait < -1.0:
                            next_due = time.monotonic()
        finally:
            self.source.close()
