"""[states], [events], [gate] and regions: how answers become states and events, and when to infer."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator, model_validator

from .base import Strict, check_unit_box, topic_level


SOUND_ENTER = 2  # states.enter when every source is sound
BACKGROUND = "background"  # the label of a room's own sound: taught from quiet windows, never an event


class StatesConfig(Strict):
    smoothing: float = Field(0.5, gt=0, le=1, description="weight of the newest answer in each label's running "
                                                          "score (1: no smoothing)")
    enter: int = Field(3, ge=1, le=1000, description="a label becomes the state after its running score has led at "
                                                     "or above min_score for this many inferences in a row (unset "
                                                     "with only sound sources: 2, since a short sound is whole in "
                                                     "two or three windows)")
    enter_s: float = Field(0.0, ge=0, description="... and for at least this long (0: the count alone decides)")
    min_score: float = Field(0.5, ge=0, le=1, description="score a win needs to count towards entering")
    exit_score: float = Field(0.35, ge=0, le=1, description="the state goes to 'none' when the leading running "
                                                            "score stays under this for exit_s")
    exit_s: float = Field(3.0, ge=0)

    @model_validator(mode="after")
    def _hysteresis(self):
        if self.exit_score > self.min_score:
            raise ValueError("states.exit_score must be at most states.min_score (hysteresis)")
        return self


class EventsConfig(Strict):
    enabled: bool = Field(True, description="events (start/update/end) with a best-frame snapshot on disk")
    labels: Optional[list[str]] = Field(None, description="state labels that make events; default every label but "
                                                          "'none', 'unknown' and 'background'")
    update_s: float = Field(5.0, gt=0, description="an ongoing event sends an update at most this often")
    retrain_after_wrong: int = Field(3, ge=0, le=1000, description="after this many 'wrong' marks, the active heads "
                                     "that learn only by `train` (the classifier) are trained again by themselves, as "
                                     "a job on edged/<device>/job; 0: only when asked")
    kept_frames: int = Field(6, ge=0, le=32, description="frames of each event kept on disk beside its snapshot, "
                             "spread over its length: a 'wrong' mark teaches from them all (0: the snapshot alone)")
    max_mb: float = Field(200.0, gt=0, description="events' snapshots and clips on disk: the oldest are removed "
                                                   "beyond this many megabytes")
    max_age_days: float = Field(14.0, gt=0, description="... and once older than this")
    clip_s: float = Field(0.0, ge=0, le=60, description="keep a video clip of each event with this many seconds "
                                                        "before and after it (0: snapshots only)")
    clip_max_s: float = Field(60.0, gt=0, le=3600, description="longest clip; a longer event's clip is cut there")
    clip_width: int = Field(480, ge=64, le=4096, description="clip frames are scaled down to this width")


class GateConfig(Strict):
    mode: Literal["motion", "always"] = Field(
        "motion", description="motion: run the backbone only while something moves (and every max_idle_s); always: "
                              "every frame")
    frame_height: int = Field(100, ge=24, le=1080, description="height of the grey copy motion is found on")
    threshold: int = Field(25, ge=1, le=255, description="grey-level change of a pixel that counts as moving")
    min_area: float = Field(0.002, gt=0, le=1, description="a moving blob must cover this fraction of the frame "
                                                           "(or region)")
    alpha: float = Field(0.05, gt=0, le=1, description="how fast the background follows the scene (per frame)")
    lighting_fraction: float = Field(0.6, gt=0, le=1, description="more of the frame than this changing at once is a "
                                                                   "light change: the background is reset")
    hold_s: float = Field(1.0, ge=0, description="keep inferring this long after motion stops (the scene settles)")
    max_idle_s: float = Field(30.0, gt=0, description="infer at least this often even without motion (slow changes)")
    masks: list[tuple[float, float, float, float]] = Field(
        default_factory=list, description="areas to ignore, [x1, y1, x2, y2] in [0, 1] of the frame (a clock, a tree)")

    @field_validator("masks")
    @classmethod
    def _boxes(cls, v):
        for i, box in enumerate(v):
            check_unit_box(box, f"masks[{i}]")
        return v


class RegionConfig(Strict):
    name: str = Field(description="the region's name: a topic level (state/<head>/<name>) and a capture's region")
    box: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2 in [0, 1] of the frame")
    heads: Optional[list[str]] = Field(None, description="heads that predict on this region; default the active heads")

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        return topic_level(v, "region name")

    @field_validator("box")
    @classmethod
    def _box(cls, v):
        check_unit_box(v, "box")
        return v
