"""The grabber thread: reads and preprocesses frames off the frame loop, reconnects with backoff."""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Callable, Optional

import cv2
import numpy as np

from ..config import SourceConfig
from ..errors import SourceError
from .base import Frame, Source

log = logging.getLogger(__name__)


def as_bgr(image) -> np.ndarray:
    """A decoded frame as 3-channel uint8 BGR; SourceError for what cannot be one."""
    if not isinstance(image, np.ndarray) or image.size == 0 or image.ndim not in (2, 3) or min(image.shape[:2]) < 2:
        raise SourceError(f"not an image: {getattr(image, 'shape', type(image).__name__)}")
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.number):
            raise SourceError(f"not an image: dtype {image.dtype}")
        image = np.clip(np.nan_to_num(image), 0, 255).astype(np.uint8)
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] != 3:
        raise SourceError(f"not an image: {image.shape[2]} channels")
    return image


def lower_thread_priority(nice: int) -> None:
    """Raise the calling thread's niceness (Linux sets it per thread); elsewhere nothing happens."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError) as e:
        log.info("grabber niceness not set: %s", e)


class FrameGrabber:
    """Reads and preprocesses frames in its own thread; keeps only the newest `queue_size` frames.

    States: starting, ok, camera_lost (reconnecting with backoff), ended (file finished); `health` adds
    stalled (a live source open but silent for `stall_after_s`). Frames that cannot be used (empty, odd
    shapes or types, a preprocessing error) are skipped and counted in `bad_frames`.
    """

    def __init__(
        self,
        source: Source,
        cfg: SourceConfig,
        stop: threading.Event,
        preprocess: Optional[Callable[[np.ndarray], np.ndarray]],
        queue_size: int = 2,
        name: str = "",
        ready: Optional[threading.Event] = None,
    ):
        self.source = source
        self.cfg = cfg
        self.stop = stop
        self.preprocess = preprocess
        self.name = name  # stamped on every frame
        self.ready = ready  # set after every frame queued (several grabbers feeding one loop wait on one event)
        self.frames: queue.Queue[Frame] = queue.Queue(maxsize=queue_size)
        self.state = "starting"
        self.error: Optional[str] = None
        self.captured = 0
        self.dropped = 0
        self.reconnects = 0  # times the source was opened again after it was lost
        self.bad_frames = 0
        self.last_frame_at: Optional[float] = None  # monotonic time of the last usable frame
        self.decode_s = 0.0
        self.preprocess_s = 0.0
        self._thread = threading.Thread(target=self._run, name=f"grabber-{name}" if name else "grabber", daemon=True)

    def start(self) -> None:
        if self.cfg.decode_threads:
            cv2.setNumThreads(self.cfg.decode_threads)  # OpenCV's own loops (resize, colour) stay on this thread
        self._thread.start()

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)

    @property
    def health(self) -> str:
        """The state, or 'stalled' when an open live source has sent nothing usable for `stall_after_s`."""
        state = self.state
        if state == "ok" and self.source.live:
            since = self.last_frame_at
            if since is not None and time.monotonic() - since > self.cfg.stall_after_s:
                return "stalled"
        return state

    def get(self, timeout: float) -> Optional[Frame]:
        try:
            return self.frames.get(timeout=timeout)
        except queue.Empty:
            return None

    def take(self) -> Optional[Frame]:
        """The oldest queued frame without waiting, or None."""
        try:
            return self.frames.get_nowait()
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
        return False

    def _run(self) -> None:
        if self.cfg.nice:
            lower_thread_priority(self.cfg.nice)
        paced = self.cfg.realtime and not self.source.live
        backpressure = not self.source.live and not paced
        try:
            while not self.stop.is_set():
                if self.state != "ok":
                    reopening = self.state == "camera_lost"
                    if not self._open_with_backoff():
                        return
                    self.reconnects += reopening
                self.last_frame_at = time.monotonic()  # a fresh open is not a stall
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
                    try:
                        frame.image = as_bgr(frame.image)
                        if self.preprocess is not None:  # None: the frame loop preprocesses the frames it infers
                            frame.pixels = self.preprocess(frame.image)
                    except Exception as e:  # one garbage frame must not end the grabber (and with it serving)
                        self.bad_frames += 1
                        if self.bad_frames in (1, 10, 100) or self.bad_frames % 1000 == 0:
                            log.warning("%s: unusable frame skipped (%d so far): %s", self.source.description,
                                        self.bad_frames, e)
                        continue
                    t2 = time.perf_counter()
                    self.last_frame_at = time.monotonic()
                    self.decode_s += t1 - t0
                    self.preprocess_s += t2 - t1
                    self.captured += 1
                    frame.source = self.name
                    self._put(frame, backpressure)
                    if self.ready is not None:
                        self.ready.set()
                    if paced:
                        next_due += 1.0 / getattr(self.source, "fps", self.cfg.fps)
                        wait = next_due - time.monotonic()
                        if wait > 0 and self.stop.wait(wait):
                            return
                        if wait < -1.0:
                            next_due = time.monotonic()
        finally:
            self.source.close()
