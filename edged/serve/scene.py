"""The scene: the motion gate before the backbone, debounced states and events after the heads.

The frame loop asks `due()` which views (the frame, or its regions) to infer and hands every prediction to
`observe()`; states go out retained and only on change, events as start / update / end. Snapshots and clips are
written on a thread of the scene's own, never on the frame loop. With several sources each has its own motion
gate and clip ring; views, states and events are named by their place (`source/region`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Optional

import cv2
import numpy as np

from ..config import Config
from ..heads.base import Prediction
from ..scene.events import Event, EventTracker
from ..scene.gate import Gate
from ..scene.states import StateTracker
from ..scene.views import View, views_of
from ..sources.audio import SAMPLE_RATE
from ..state.events import EventStore
from .outputs import Outputs

log = logging.getLogger(__name__)


@dataclass
class _Recording:
    event: Event
    source: str
    frames: list = field(default_factory=list)
    sound: list = field(default_factory=list)  # a sound source's new samples, hop by hop: the clip is a WAV
    started: float = 0.0
    stop_at: Optional[float] = None  # the event ended: post-roll until then


class Scene:
    def __init__(self, cfg: Config, outputs: Outputs, store: EventStore,
                 state_changed: Callable[[], None] = lambda: None):
        self.cfg = cfg
        self.outputs, self.store = outputs, store
        self.state_changed = state_changed  # the status carries the states: it goes out again when one changes
        self.views: list[View] = []
        self.gates: dict[str, Gate] = {}
        self.sources: list[str] = []
        for camera in cfg.cameras:
            views = views_of(camera)
            self.views += views
            self.gates[camera.name] = Gate(camera.gate, views)
            self.sources.append(camera.name)
        self._hops = {c.name: int(c.source.audio.hop_s * SAMPLE_RATE) for c in cfg.cameras}  # new samples a sound window brings
        self.trackers: dict[tuple[str, str], StateTracker] = {}
        self.events: dict[tuple[str, str], EventTracker] = {}
        self._where: dict[tuple[str, str], dict] = {}  # (head, place) -> the view's source and region
        self._rings: dict[str, deque] = {name: deque() for name in self.sources}  # (monotonic, small frame): pre-roll
        self._recordings: dict[str, _Recording] = {}
        self._writes: "queue.Queue[Optional[Callable[[], None]]]" = queue.Queue(maxsize=256)
        self._writer = threading.Thread(target=self._write_loop, name="events-writer", daemon=True)
        self._writer.start()
        self.dropped_writes = 0

    # -- before the backbone -----------------------------------------------------------------------
    def due(self, frame, now: float, capturing: Optional[str] = None) -> list[View]:
        """The views the backbone runs on for this frame."""
        if self.cfg.events.clip_s:
            self._record(frame, now)
        sound = frame.sound.loud if frame.sound is not None else None
        return self.gates[frame.source].due(frame.image, now, capturing, self._settling, sound)

    def gate_stats(self) -> dict:
        """The motion gates' decisions by reason, every source's together."""
        total: Counter = Counter()
        for gate in self.gates.values():
            total.update(gate.reasons)
        return dict(total)

    def view(self, source: str, region: str = "") -> Optional[View]:
        """The view a capture of (source, region) takes examples from; None when there is none."""
        return next((v for v in self.views if v.source == source and v.region == region), None)

    def _settling(self, view: str) -> bool:
        return any(t.settling for (_, v), t in list(self.trackers.items()) if v == view)

    # -- after the heads -----------------------------------------------------------------------------
    def observe(self, head: str, view: View, pred: Prediction, frame, now: float) -> None:
        key = (head, view.name)
        tracker = self.trackers.get(key)
        if tracker is None:
            tracker = self.trackers[key] = StateTracker(self.cfg.states)
            self.events[key] = EventTracker(self.cfg.events, head, view.name, view.fields)
            self._where[key] = view.fields
        events = self.events[key]
        state = tracker.observe(pred.label, pred.score, now, time.time(), frame.pos)
        if state is None:
            update = events.on_prediction(pred.label, pred.score, frame.image, now)
            if update is not None:
                self._event(*update, now)
            return
        for kind, event in events.on_state(state, frame.image, now, pred.score):
            self._event(kind, event, now)
        state.extra = {"event": events.current.id if events.current else None}
        self.outputs.state(head, view.name, self._state_message(key, tracker))
        self.state_changed()

    def _state_message(self, key: tuple[str, str], tracker: StateTracker) -> dict:
        s = tracker.state
        return {"head": key[0], "label": s.label, "since": round(s.since, 3), "score": round(s.score, 4),
                "frame": s.frame, "event": s.extra.get("event"), **self._where.get(key, {})}

    def _event(self, kind: str, event: Event, now: float) -> None:
        message = event.message(kind)
        self.outputs.event(event.head, event.region, message)
        frame = event.best_frame if event.best_frame is not event.saved_frame else None  # encoded once
        event.saved_frame = event.best_frame
        kept = event.kept if kind == "end" else None
        self._write(lambda: self._save(message, frame, kept))
        if not self.cfg.events.clip_s:
            return
        if kind == "start":
            source = (event.where or {}).get("source", "")
            ring = self._rings[source]
            self._recordings[event.id] = _Recording(event, source, [f for _, f, _ in ring],
                                                    [s for _, _, s in ring if s is not None], now)
        elif kind == "end" and event.id in self._recordings:
            self._recordings[event.id].stop_at = now + self.cfg.events.clip_s

    def _save(self, message: dict, frame, kept: Optional[list] = None) -> None:
        jpeg = self.store.save(message, frame)
        if kept:
            self.store.save_frames(message["id"], kept)
        if jpeg is not None:
            self.outputs.event_snapshot(jpeg)
        if message["type"] == "end":
            removed = self.store.prune()
            if removed:
                log.info("removed %d old events (events.max_mb / max_age_days)", removed)

    # -- clips ---------------------------------------------------------------------------------------
    def _record(self, frame, now: float) -> None:
        cfg = self.cfg.events
        h, w = frame.image.shape[:2]
        width = min(cfg.clip_width, w)
        small = cv2.resize(frame.image, (width, max(2, round(h * width / w) // 2 * 2)), interpolation=cv2.INTER_AREA)
        sound = frame.sound.samples[-self._hops[frame.source]:] if frame.sound is not None else None
        ring = self._rings[frame.source]
        ring.append((now, small, sound))
        while ring and now - ring[0][0] > cfg.clip_s:
            ring.popleft()
        for event_id, rec in list(self._recordings.items()):
            if rec.source != frame.source:
                continue
            rec.frames.append(small)
            if sound is not None:
                rec.sound.append(sound)
            if (rec.stop_at is not None and now >= rec.stop_at) or now - rec.started >= cfg.clip_max_s:
                self._finish_clip(event_id, now)

    def _finish_clip(self, event_id: str, now: float) -> None:
        """Hand a recording to the writer, at the frame rate it was recorded at (pre-roll included)."""
        rec = self._recordings.pop(event_id)
        if rec.sound:  # a sound's clip is the sound itself
            self._write(lambda: self.store.save_sound(event_id, np.concatenate(rec.sound)))
            return
        fps = len(rec.frames) / max(now - rec.started + self.cfg.events.clip_s, 1e-3)
        self._write(lambda: self.store.save_clip(event_id, rec.frames, fps))

    # -- the writer ----------------------------------------------------------------------------------
    def _write(self, work: Callable[[], None]) -> None:
        try:
            self._writes.put_nowait(work)
        except queue.Full:  # the disk is far behind: an event's file is lost, never the frame loop's time
            self.dropped_writes += 1

    def _write_loop(self) -> None:
        while True:
            work = self._writes.get()
            if work is None:
                return
            try:
                work()
            except Exception:
                log.exception("writing an event failed")

    # -- reading -------------------------------------------------------------------------------------
    def states(self) -> dict:
        """Every head's (and region's) current state, keyed `head` or `head/region`."""
        return {(h if not v else f"{h}/{v}"): self._state_message((h, v), t)
                for (h, v), t in sorted(self.trackers.items()) if t.known}

    def describe(self) -> dict:
        return {"states": self.states(), "gate": {"mode": self.cfg.gate.mode, **self.gate_stats()},
                "views": [v.name or "(frame)" for v in self.views]}

    def end_events(self) -> None:
        """The daemon stops: end the running events (with `reason: stopped`) while MQTT is still up."""
        ts = time.time()
        for tracker in self.events.values():
            event = tracker.current
            if event is not None:
                event.end = ts
                tracker.current = None
                message = event.message("end")
                message["reason"] = "stopped"
                self.outputs.event(event.head, event.region, message)
                self._write(lambda m=message: self.store.save(m, None))

    def close(self) -> None:
        """Write what is still recorded and let the writer finish."""
        now = time.monotonic()
        for event_id in list(self._recordings):
            self._finish_clip(event_id, now)
        self._writes.put(None)
        self._writer.join(10)
