"""Several sources, one frame loop: a grabber per source, frames taken in turn.

Each source reads, decodes and reconnects on its own thread, so one dead or slow camera never stalls the others.
`get` hands the loop the next frame round-robin from the sources that have one, each at most its `max_fps`: with
every source busy each gets an equal share of the backbone. With one source it is that source's grabber.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

import numpy as np

from ..config import Camera
from ..errors import SourceError
from .base import Frame, Source
from .grabber import FrameGrabber


class Cameras:
    def __init__(self, cameras: list[Camera], open_source: Callable[[object], Source], stop: threading.Event,
                 preprocess: Callable[[Camera], Optional[Callable[[np.ndarray], np.ndarray]]] = lambda camera: None,
                 queue_size: int = 2):
        """`preprocess(camera)`: what the camera's grabber does to each frame (None: the frame loop preprocesses
        the frames it infers)."""
        self._ready = threading.Event()
        self.grabbers: dict[str, FrameGrabber] = {}
        self.max_fps: dict[str, float] = {}
        for camera in cameras:
            self.grabbers[camera.name] = FrameGrabber(open_source(camera.source), camera.source, stop,
                                                      preprocess(camera), queue_size, camera.name, self._ready)
            self.max_fps[camera.name] = camera.max_fps
        self._order = list(self.grabbers.values())
        self._next = 0
        self._due = {name: 0.0 for name in self.grabbers}  # monotonic time a capped source may give a frame again
        self.taken = {name: 0 for name in self.grabbers}  # frames handed to the loop, per source

    @property
    def several(self) -> bool:
        return len(self._order) > 1

    def start(self) -> None:
        for grabber in self._order:
            grabber.start()

    def join(self, timeout: float = 5.0) -> None:
        for grabber in self._order:
            grabber.join(timeout)

    # -- the frame loop's side -----------------------------------------------------------------------
    def get(self, timeout: float) -> Optional[Frame]:
        """The next frame, taking the sources in turn; None when none has one within `timeout`."""
        if not self.several and not any(self.max_fps.values()):
            frame = self._order[0].get(timeout)
            self._count(frame)
            return frame
        deadline = time.monotonic() + timeout
        while True:
            self._ready.clear()  # cleared before looking: a frame queued after the look wakes the wait
            frame, wake = self._take(time.monotonic())
            if frame is not None:
                self._count(frame)
                return frame
            now = time.monotonic()
            if now >= deadline:
                return None
            self._ready.wait(min(deadline, wake) - now)

    def _take(self, now: float) -> tuple[Optional[Frame], float]:
        """A frame from the next source in turn that has one and is due; else the time a capped source is due."""
        wake = float("inf")
        n = len(self._order)
        for i in range(n):
            grabber = self._order[(self._next + i) % n]
            due = self._due[grabber.name]
            if now < due:
                wake = min(wake, due)
                continue
            frame = grabber.take()
            if frame is None:
                continue
            self._next = (self._next + i + 1) % n
            cap = self.max_fps[grabber.name]
            if cap:
                self._due[grabber.name] = max(due + 1.0 / cap, now)
            return frame, wake
        return None, wake

    def _count(self, frame: Optional[Frame]) -> None:
        if frame is not None:
            self.taken[frame.source] += 1

    # -- what telemetry reads (the sums over every source, as for one grabber) -----------------------
    def grabber(self, name: str) -> FrameGrabber:
        try:
            return self.grabbers[name]
        except KeyError:
            raise SourceError(f"no source {name!r}; configured: {', '.join(self.grabbers)}") from None

    @property
    def health(self) -> str:
        """The source's state; with several, `ok` when every source is, else the ones that are not."""
        if not self.several:
            return self._order[0].health
        bad = [f"{g.name} {g.health}" for g in self._order if g.health != "ok"]
        return ", ".join(bad) if bad else "ok"

    @property
    def error(self) -> Optional[str]:
        errors = [(f"{g.name}: {g.error}" if self.several else g.error) for g in self._order if g.error]
        return "; ".join(errors) if errors else None

    def _total(self, attribute: str):
        return sum(getattr(g, attribute) for g in self._order)

    captured = property(lambda self: self._total("captured"))
    dropped = property(lambda self: self._total("dropped"))
    reconnects = property(lambda self: self._total("reconnects"))
    bad_frames = property(lambda self: self._total("bad_frames"))
    decode_s = property(lambda self: self._total("decode_s"))
    preprocess_s = property(lambda self: self._total("preprocess_s"))

    @property
    def description(self) -> str:
        if not self.several:
            return self._order[0].source.description
        return ", ".join(f"{g.name}: {g.source.description}" for g in self._order)
