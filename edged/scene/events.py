"""Events from states: one starts when a state becomes a label of interest, updates (best score, best frame) at
most every `update_s` while it lasts, and ends when the state leaves the label. Besides the best frame an event
keeps up to `kept_frames` frames of its label spread over its length (the interval doubles whenever they are too
many): what a "wrong" mark teaches from."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Optional

from ..config import BACKGROUND, EventsConfig
from .states import NONE, State

NOT_OF_INTEREST = (NONE, "unknown", BACKGROUND)
KEEP_EVERY_S = 0.5  # the first kept frames of an event are this far apart


def new_event_id(ts: float) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime(ts)) + "-" + os.urandom(3).hex()


@dataclass
class Event:
    id: str
    head: str
    region: str  # the view's place (topic levels): "" for the whole frame of the one source
    label: str
    start: float  # wall clock
    score: float  # the score that started it
    top_score: float
    end: Optional[float] = None
    frame: int = 0  # the frame position that started it
    best_frame: object = field(default=None, repr=False)  # the frame of the top score (written as the snapshot)
    best_changed: bool = False  # a better frame than the last one sent
    saved_frame: object = field(default=None, repr=False)  # the best frame as last written (not written again)
    last_update: float = 0.0  # monotonic
    kept: list = field(default_factory=list, repr=False)  # frames of the label spread over the event
    keep_every: float = KEEP_EVERY_S  # seconds between kept frames (doubled when there are too many)
    kept_at: float = float("-inf")  # monotonic time of the last kept frame
    where: Optional[dict] = None  # the view's `source` and `region` for messages; default {"region": region}

    def keep(self, frame, now: float, limit: int) -> None:
        """Keep `frame` when the interval since the last kept one has passed; beyond `limit`, every other goes."""
        if limit <= 0 or frame is None or now - self.kept_at < self.keep_every:
            return
        self.kept.append(frame)
        self.kept_at = now
        if len(self.kept) > limit:
            self.kept = self.kept[::2]
            self.keep_every *= 2

    def message(self, kind: str) -> dict:
        out = {"type": kind, "id": self.id, "head": self.head, "label": self.label, "start": round(self.start, 3),
               "end": None if self.end is None else round(self.end, 3), "score": round(self.score, 4),
               "top_score": round(self.top_score, 4), "frame": self.frame,
               "snapshot": f"events/{self.id}/snapshot.jpg"}
        out.update(self.where if self.where is not None else ({"region": self.region} if self.region else {}))
        return out


class EventTracker:
    """The events of one head on one view."""

    def __init__(self, cfg: EventsConfig, head: str, region: str, where: Optional[dict] = None):
        self.cfg, self.head, self.region, self.where = cfg, head, region, where
        self.current: Optional[Event] = None

    def of_interest(self, label: str) -> bool:
        if self.cfg.labels is not None:
            return label in self.cfg.labels
        return label not in NOT_OF_INTEREST

    def on_state(self, state: State, frame, now: float, score: Optional[float] = None) -> list[tuple[str, Event]]:
        """The state changed: end the running event, start one for the new label if it is of interest. `score`: the
        answer of the frame that decided (the state's own score is a running one)."""
        out = []
        if self.current is not None:
            self.current.end = state.since
            out.append(("end", self.current))
            self.current = None
        if self.cfg.enabled and self.of_interest(state.label):
            top = state.score if score is None else max(score, state.score)
            event = Event(new_event_id(state.since), self.head, self.region, state.label, state.since, state.score,
                          top, frame=state.frame, best_frame=frame, last_update=now, where=self.where)
            event.keep(frame, now, self.cfg.kept_frames)
            self.current = event
            out.append(("start", event))
        return out

    def on_prediction(self, label: str, score: float, frame, now: float) -> Optional[tuple[str, Event]]:
        """A per-frame answer while an event runs: keep the best frame; an update when one is due and news."""
        event = self.current
        if event is None:
            return None
        if label == event.label:
            event.keep(frame, now, self.cfg.kept_frames)
            if score > event.top_score:
                event.top_score, event.best_frame, event.best_changed = score, frame, True
        if event.best_changed and now - event.last_update >= self.cfg.update_s:
            event.last_update, event.best_changed = now, False
            return "update", event
        return None
