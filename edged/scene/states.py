"""Debounced states: a head's per-frame answers (label, score) become a state that changes only on evidence.

Each label keeps a running score: the newest answer's score (0 for the labels it did not give) weighted by
`smoothing`, the older ones by the rest. A label becomes the state once its running score has led at or above
`min_score` for `enter` inferences in a row (and for `enter_s`); the state stays until another label has done
the same, or the leading running score has stayed under `exit_score` for `exit_s`, which makes the state `none`.
An answer hovering between two labels keeps both running scores near half its score, so neither takes over,
and between `exit_score` and `min_score` nothing changes (hysteresis). An `unknown` answer counts as no answer:
the running scores fall, and the state becomes `none` only if they stay low for `exit_s` (a few frames of a
taught object the head is unsure of do not end its state, or its event).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from ..config import StatesConfig

NONE = "none"
NO_ANSWER = ("unknown",)  # what heads say when nothing taught fits


@dataclass
class State:
    label: str = NONE
    since: float = 0.0  # wall-clock time it began
    score: float = 0.0  # the score of the answer that decided it
    frame: int = 0  # the frame position that decided it
    extra: dict = field(default_factory=dict)  # e.g. the event it started


class StateTracker:
    def __init__(self, cfg: StatesConfig):
        self.cfg = cfg
        self.state = State()
        self.known = False  # a state has been decided since start
        self._candidate: Optional[str] = None
        self._count = 0
        self._candidate_since = 0.0
        self._low_since: Optional[float] = None
        self._running: dict[str, float] = {}  # label -> running score

    @property
    def settling(self) -> bool:
        """Evidence for a change is building: the motion gate keeps inferring until it is decided."""
        pending = self._candidate is not None and (self._candidate != self.state.label or not self.known)
        return pending or self._low_since is not None

    def observe(self, label: str, score: float, now: float, ts: float, frame: int = 0) -> Optional[State]:
        """One inference (`now`: monotonic seconds, `ts`: wall clock); the new state when it changed."""
        cfg = self.cfg
        label, score = self._smooth(label, score)
        if score >= cfg.min_score:
            if label != self._candidate:
                self._candidate, self._count, self._candidate_since = label, 0, now
            self._count += 1
        else:
            self._candidate, self._count = None, 0
        if (self._candidate is not None and (self._candidate != self.state.label or not self.known)
                and self._count >= cfg.enter and now - self._candidate_since >= cfg.enter_s):
            return self._change(self._candidate, score, ts, frame)
        if self.state.label != NONE and score < cfg.exit_score:
            if self._low_since is None:
                self._low_since = now
            if now - self._low_since >= cfg.exit_s:
                return self._change(NONE, score, ts, frame)
        else:
            self._low_since = None
        return None

    def _smooth(self, label: str, score: float) -> tuple[str, float]:
        """The leading label by running score, and that score ("none", 0 when nothing leads)."""
        keep = 1.0 - self.cfg.smoothing
        running = self._running
        for key in running:
            running[key] *= keep
        if label not in NO_ANSWER:
            running[label] = running.get(label, 0.0) + self.cfg.smoothing * score
        for key in [k for k, v in running.items() if v < 1e-3]:
            del running[key]
        if not running:
            return NONE, 0.0
        best = max(running, key=running.get)
        return best, running[best]

    def _change(self, label: str, score: float, ts: float, frame: int) -> State:
        self.state = State(label, ts, score, frame)
        self.known = True
        self._low_since = None
        return self.state
