"""The motion gate: which views of a frame the backbone runs on.

A view runs while something moves in it, for `hold_s` after, while its state is still settling, at least every
`max_idle_s`, and always during a capture of it. Every decision is counted by reason, so the stats say how many
frames were skipped and why.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from ..config import GateConfig
from .motion import MotionDetector
from .views import View


@dataclass
class Heard:
    """A sound window as the gate sees it: loud is motion everywhere, and there are no light changes."""

    loud: bool
    first: bool = False
    lighting: bool = False

    def moving_in(self, box, min_area: float) -> bool:
        return self.loud


class Gate:
    def __init__(self, cfg: GateConfig, views: list[View]):
        self.cfg = cfg
        self.views = views
        smallest = min(((v.box[2] - v.box[0]) * (v.box[3] - v.box[1]) if v.box else 1.0) for v in views)
        self.detector = MotionDetector(cfg, smallest) if cfg.mode == "motion" else None
        self.last_motion = {v.name: float("-inf") for v in views}
        self.last_run = {v.name: float("-inf") for v in views}
        self.reasons: Counter = Counter()  # "<reason>" per view run, "skipped_still" per view skipped
        self._first_sound = True

    def due(self, image: np.ndarray, now: float, capturing: Optional[str] = None,
            settling: Callable[[str], bool] = lambda view: False, sound: Optional[bool] = None) -> list[View]:
        """The views to infer on this frame. `capturing`: the view a capture is taking examples from. `sound`: for a
        sound window, whether it is loud (edged.sources.audio), which stands for motion: a spectrogram always moves."""
        if sound is not None and self.detector is not None:
            motion = Heard(sound, first=self._first_sound)
            self._first_sound = False
        else:
            motion = self.detector.detect(image) if self.detector is not None else None
        out = []
        for view in self.views:
            reason = self._reason(view, motion, now, capturing, settling)
            if reason is None:
                self.reasons["skipped_still"] += 1
                continue
            self.reasons[reason] += 1
            self.last_run[view.name] = now
            out.append(view)
        return out

    def _reason(self, view: View, motion, now: float, capturing: Optional[str], settling) -> Optional[str]:
        if motion is None:
            return "always"
        if capturing == view.name:
            return "capture"
        if motion.first or motion.lighting:
            self.last_motion[view.name] = now
            return "lighting" if motion.lighting else "first"
        if motion.moving_in(view.box, self.cfg.min_area):
            self.last_motion[view.name] = now
            return "motion"
        if now - self.last_motion[view.name] <= self.cfg.hold_s:
            return "hold"
        if settling(view.name):
            return "settling"
        if now - self.last_run[view.name] >= self.cfg.max_idle_s:
            return "idle"
        return None

    def stats(self) -> dict:
        return dict(self.reasons)
