"""The frame loop: frame -> motion gate -> backbone -> heads -> outputs and scene (states, events), feeding captures
and the watchdog on the way. The gate decides which views (the frame, or each region) the backbone runs on; the
watchdog is fed by every frame that arrives, inferred or not.

It owns the loop (`run`): frames from the grabber at most `max_fps`, the daemon's housekeeping between them, and
the running capture tended even when no frame comes (a capture on a lost, stalled or ended source ends at once,
with an error that keeps what it stored).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from ..config import BACKGROUND
from ..runtime.engine import Engine
from ..scene.views import View
from ..sources.preprocess import FrameView, to_pixels
from .capture import CaptureDesk, CaptureJob
from .headset import HeadSet
from .outputs import Outputs
from .scene import Scene
from .telemetry import StageTimes

log = logging.getLogger(__name__)

LOST = ("camera_lost", "stalled", "ended")  # source states in which a capture can get no more frames


class FrameLoop:
    def __init__(self, engine: Engine, heads: HeadSet, captures: CaptureDesk, times: StageTimes, outputs: Outputs,
                 scene: Scene, changed: Callable[[], None], watchdog: Callable[[], None],
                 review: Optional[Callable] = None, source_state: Callable[[str], str] = lambda source: "ok"):
        self.engine = engine
        self.heads = heads
        self.captures = captures
        self.times = times
        self.outputs = outputs
        self.scene = scene
        self.changed = changed
        self.watchdog = watchdog
        self.review = review
        self.source_state = source_state  # source_state(name) -> the named source's state
        self.last_frame = None
        self.last_frames: dict[str, object] = {}  # the newest frame of each source
        self.frames_seen = 0

    def newest(self, source: Optional[str] = None):
        """The newest frame of a source, or of any source; None before one came."""
        return self.last_frame if source is None else self.last_frames.get(source)

    def run(self, next_frame: Callable[[float], object], stop: threading.Event, max_fps: float = 0.0,
            housekeeping: Callable[[float], None] = lambda now: None) -> None:
        """Serve frames until `stop` is set: `next_frame(timeout)` gives one or None; `housekeeping(now)` runs
        between frames (stats, status)."""
        period = 1.0 / max_fps if max_fps else 0.0
        next_due = 0.0
        while not stop.is_set():
            frame = next_frame(0.25)
            now = time.monotonic()
            try:
                housekeeping(now)
                if frame is None or (period and now < next_due):
                    self.tend_capture()
                    continue
                if period:
                    next_due = max(next_due + period, now)
                self.process(frame)
            except Exception:  # one bad frame or moment never ends serving
                log.exception("frame %s failed", getattr(frame, "pos", "-"))

    def tend_capture(self) -> None:
        """End the running capture when it is cancelled, failed, complete on disk or past its deadline, frames or
        not."""
        job = self.captures.current
        if job is None:
            return
        lost = self.source_state(job.source)
        if job.cancelled:
            self._finish(job, error=f"capture of {job.label!r} cancelled after {job.stored} of {job.count} "
                                    f"examples (those are kept)")
        elif lost in LOST and not job.all_chosen:
            where = f"source {job.source!r}" if job.source else "the source"
            self._finish(job, error=f"capture of {job.label!r} stopped after {job.stored} of {job.count} examples "
                                    f"(those are kept): {where} is {lost}; see the status's source error")
        elif job.failed is not None:
            self._finish(job, error=job.failed)
        elif job.done or job.timed_out:
            self._finish(job)

    def process(self, frame) -> None:
        t0 = time.perf_counter()
        now = time.monotonic()
        job = self.captures.current
        self.frames_seen += 1
        self.last_frame = self.last_frames[frame.source] = frame
        views = self.scene.due(frame, now, job.place if job is not None else None)
        self.times.gate += time.perf_counter() - t0
        for view in views:
            self._infer(view, frame, job, now)
        if job is not None:
            self.tend_capture()
        self.times.frames += 1
        if views:
            self.times.latencies_ms.append((time.time() - frame.ts) * 1000)
        self.watchdog()

    def _infer(self, view: View, frame, job: Optional[CaptureJob], now: float) -> None:
        """Backbone and heads on one view; its predictions to the outputs and the scene."""
        t0 = time.perf_counter()
        image = view.crop(frame.image)
        pixels = frame.pixels if view.whole and frame.pixels is not None else to_pixels(image, self.engine.input_size)
        capturing = job is not None and job.place == view.name
        embedding = self.engine.embed_frame(frame, pixels) if capturing or self.heads.needs_embedding else None
        t1 = time.perf_counter()
        if capturing:
            self._capture_step(job, image, embedding, frame)
        predictions = self.heads.predict(embedding, FrameView(image, self.engine.input_size, pixels), view.heads)
        t2 = time.perf_counter()
        latency_ms = (t2 - t0) * 1000
        for name, pred in predictions:
            self.outputs.prediction(name, pred, frame, self.frames_seen, latency_ms, view)
            self.scene.observe(name, view, pred, frame, now)
        if self.review is not None and job is None and view.whole:
            self.review(frame, embedding, predictions)
        t3 = time.perf_counter()
        times = self.times
        times.invoke += t1 - t0
        times.head += t2 - t1
        times.publish += t3 - t2
        times.inferences += 1
        times.by_source[frame.source] += 1

    @staticmethod
    def _capture_step(job: CaptureJob, image, embedding, frame) -> None:
        """Offer the frame (or the region's crop, or the sound window) to the capture; its writer stores it off this
        thread."""
        if job.cancelled or job.failed is not None:
            return
        if frame.sound is not None:
            job.offer_window(image, embedding, frame.sound)
        else:
            job.offer(image, embedding)

    def _finish(self, job: CaptureJob, error: Optional[str] = None) -> None:
        if error is None:
            job.flush()  # a sound still being heard when the capture ends
        job.close()  # every chosen frame on disk before the reply counts them
        reached = job.done
        if error is None and job.failed is not None:
            error = job.failed
        self.captures.finish(job)
        pruned = 0
        try:
            if job.set_aside_odd_sounds():
                self.heads.refit_incremental()
            pruned = job.prune()
            if pruned:
                self.heads.refit_incremental()
        except Exception as e:
            log.warning("tidying the store after a capture failed: %s", e)
        self.changed()
        if error:
            job.responder.fail(error)
            return
        result = job.progress()
        if pruned:
            result["pruned_oldest"] = pruned
        result["examples"] = job.store.counts().get(job.label, 0)
        warnings = job.warnings(result["examples"])
        if not reached:
            if job.sound and job.label != BACKGROUND:
                why = (f"{job.stored} sound(s) heard whole ({job.skipped_cut} windows held only a part of one; make "
                       f"the sound, with a moment of quiet around it, while the capture runs; [source.audio] loud_db "
                       f"sets how loud a sound is)")
            elif job.sound:
                why = f"{job.skipped_loudness} windows held a sound, not the quiet room"
            else:
                why = "too few frames came"
            result["note"] = f"stopped after {job.timeout_s:.0f} s with {job.stored} of {job.count}: {why}"
        if warnings:
            result["warnings"] = warnings
        log.info("capture of %r done: %d stored", job.label, job.stored)
        job.responder.done(result)
